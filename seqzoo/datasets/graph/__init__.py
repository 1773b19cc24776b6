"""Graph data (GSM / GSM++): the seqzoo graph format and its reader, synthetic
algorithmic tasks, real graphs from installed packages, tokenizers and the DataModule."""

from seqzoo.datasets.graph.datamodule import GraphDataModule
from seqzoo.datasets.graph.prepare import prepare_freesolv, prepare_karate, prepare_lesmis
from seqzoo.datasets.graph.reader import read_graphs, save_graphs
from seqzoo.datasets.graph.synthetic import synth_graph
from seqzoo.datasets.graph.tokenizers import TOKENIZERS, Tokens, tokenize

__all__ = [
    "TOKENIZERS",
    "GraphDataModule",
    "Tokens",
    "prepare_freesolv",
    "prepare_karate",
    "prepare_lesmis",
    "read_graphs",
    "save_graphs",
    "synth_graph",
    "tokenize",
]

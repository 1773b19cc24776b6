"""Synthetic diagnostics of memory and selectivity: MQAR (Zoology), selective copying
(Mamba), a SelectivBench-style grammar with rule-breaking gaps, and passkey retrieval
(Stuffed Mamba's state capacity). Generated in memory from a seed; ``seqzoo data synth
diagnostics`` exports them as .npz splits."""

from seqzoo.datasets.diagnostics.datamodule import (
    DiagnosticsDataModule,
    MQARDataModule,
    PasskeyDataModule,
    SelectivBenchDataModule,
    SelectiveCopyDataModule,
    TokenSequences,
)
from seqzoo.datasets.diagnostics.reader import read_diagnostics
from seqzoo.datasets.diagnostics.synthetic import (
    IGNORE,
    PROBES,
    MultiQueryAssociativeRecall,
    PasskeyRetrieval,
    SelectivBenchGrammar,
    SelectiveCopying,
    generate_splits,
    make_probe,
    synth_diagnostics,
)

__all__ = [
    "IGNORE",
    "PROBES",
    "DiagnosticsDataModule",
    "MQARDataModule",
    "MultiQueryAssociativeRecall",
    "PasskeyDataModule",
    "PasskeyRetrieval",
    "SelectivBenchDataModule",
    "SelectivBenchGrammar",
    "SelectiveCopyDataModule",
    "SelectiveCopying",
    "TokenSequences",
    "generate_splits",
    "make_probe",
    "read_diagnostics",
    "synth_diagnostics",
]

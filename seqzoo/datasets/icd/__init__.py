"""ICD coding of discharge summaries: the CAML-format reader, the MIMIC-III preprocessor,
the synthetic generator (real ICD-10-CM codes, templated notes) and the DataModule."""

from seqzoo.datasets.icd.datamodule import IcdDataModule, NoteDataset, collate_notes
from seqzoo.datasets.icd.prepare import clean_text, prepare_mimic3, reformat_code, top_codes
from seqzoo.datasets.icd.reader import Notes, Vocabulary, encode_split, read_caml, read_notes
from seqzoo.datasets.icd.synthetic import synth_icd

__all__ = [
    "IcdDataModule",
    "NoteDataset",
    "Notes",
    "Vocabulary",
    "clean_text",
    "collate_notes",
    "encode_split",
    "prepare_mimic3",
    "read_caml",
    "read_notes",
    "reformat_code",
    "synth_icd",
    "top_codes",
]

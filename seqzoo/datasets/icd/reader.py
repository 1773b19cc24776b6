"""Reader of MIMIC-III discharge summaries in the CAML layout (Mullenbach et al. 2018).

On disk (what CAML's ``dataproc`` notebooks and :mod:`seqzoo.datasets.icd.prepare` write)::

    root/train_50.csv  dev_50.csv  test_50.csv      (or *_full.csv, version "full")
    root/TOP_50_CODES.csv                            optional: the label set, one code per line

Each split CSV has at least the columns ``HADM_ID, TEXT, LABELS``: ``TEXT`` is the
preprocessed note (lower-case words separated by spaces), ``LABELS`` the note's ICD codes
joined by ``;`` (an empty cell is a note without codes). Other columns (``SUBJECT_ID``,
``length``) are ignored.

Label set: the label file when present (``TOP_<version>_CODES.csv``, or ``label_file``), else
the sorted union of the codes over the three splits (CAML's choice for ``full``). Its order
fixes the model's output order.

Handling of bad input (each a :class:`~seqzoo.errors.DataError` naming file, line, column):
missing file or column, an empty ``TEXT``, a missing ``HADM_ID``, a code outside the label
set. Notes longer than the configured cap are truncated to their first ``max_len`` tokens
and the count is logged per split (never silently). Words outside the vocabulary map to
``UNK`` (id 1); ``PAD`` is id 0.

Vocabulary (:class:`Vocabulary`): built from the **training split only**; a word enters when
it occurs in at least ``min_df`` training notes; words are ordered by document frequency
(ties alphabetically) and at most ``size - 2`` are kept, so the embedding size is fixed by
configuration before any data is read.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqzoo.datasets.base import read_csv_checked, require_path
from seqzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train", "val": "dev", "test": "test"}
REQUIRED_COLUMNS = ("HADM_ID", "TEXT", "LABELS")
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


@dataclass
class Notes:
    """One split: admission ids, notes as word lists, and each note's codes."""

    hadm_ids: list[str]
    words: list[list[str]]
    codes: list[list[str]]

    def __len__(self) -> int:
        return len(self.hadm_ids)


def split_path(root: str | os.PathLike, split: str, version: str = "50") -> Path:
    """``root/{train,dev,test}_<version>.csv`` for split ``train``/``val``/``test``."""
    if split not in SPLIT_FILES:
        raise ConfigError(f"split must be one of {', '.join(SPLIT_FILES)}, got {split!r}")
    return Path(root) / f"{SPLIT_FILES[split]}_{version}.csv"


def read_notes(path: str | os.PathLike) -> Notes:
    """One CAML split file -> :class:`Notes`; errors name the file, the line and the column."""
    frame = read_csv_checked(path, required=REQUIRED_COLUMNS, what="ICD notes file", dtype=str,
                             keep_default_na=False)
    ids, words, codes = [], [], []
    for i, (hadm, text, labels) in enumerate(zip(frame["HADM_ID"], frame["TEXT"], frame["LABELS"])):
        line = i + 2
        if not hadm.strip():
            raise DataError(f"{path}, line {line}, column 'HADM_ID': missing admission id")
        tokens = text.split()
        if not tokens:
            raise DataError(f"{path}, line {line}, column 'TEXT': empty note (HADM_ID {hadm})")
        ids.append(hadm.strip())
        words.append(tokens)
        codes.append(parse_labels(labels))
    return Notes(ids, words, codes)


def parse_labels(cell: str) -> list[str]:
    """``'401.9;428.0'`` -> ``['401.9', '428.0']`` (empty cell -> no codes; duplicates kept once)."""
    seen: dict[str, None] = {}
    for code in str(cell).split(";"):
        code = code.strip()
        if code:
            seen[code] = None
    return list(seen)


def read_label_file(path: str | os.PathLike) -> list[str]:
    """A label set file: one code per line (CAML's ``TOP_50_CODES.csv`` has no header)."""
    path = require_path(path, "ICD label set file")
    codes = [line.strip().split(",")[0] for line in Path(path).read_text().splitlines() if line.strip()]
    if not codes:
        raise DataError(f"{path}: the label set is empty")
    dup = [c for c, n in Counter(codes).items() if n > 1]
    if dup:
        raise DataError(f"{path}: code(s) listed twice: {', '.join(dup[:5])}")
    return codes


def read_caml(root: str | os.PathLike, version: str = "50",
              label_file: str | os.PathLike | None = None) -> tuple[dict[str, Notes], list[str]]:
    """The three splits under ``root`` and the label set (see the module docstring)."""
    root = require_path(root, "ICD data folder",
                        "put train/dev/test_<version>.csv there (see seqzoo.datasets.icd.prepare)")
    splits = {name: read_notes(require_path(split_path(root, name, version), f"ICD {name} split"))
              for name in SPLIT_FILES}
    default_label_file = root / f"TOP_{version}_CODES.csv"
    if label_file is None and default_label_file.is_file():
        label_file = default_label_file
    if label_file is not None:
        labels = read_label_file(label_file)
        known = set(labels)
        for name, notes in splits.items():
            for i, codes in enumerate(notes.codes):
                unknown = [c for c in codes if c not in known]
                if unknown:
                    raise DataError(f"{split_path(root, name, version)}, line {i + 2}, column 'LABELS': code(s) "
                                    f"{', '.join(unknown)} not in the label set {label_file} ({len(labels)} codes)")
    else:
        labels = sorted({c for notes in splits.values() for codes in notes.codes for c in codes})
    if not labels:
        raise DataError(f"{root}: no ICD codes in any split")
    return splits, labels


class Vocabulary:
    """Word <-> id map built from training notes: ``PAD`` = 0, ``UNK`` = 1, then the words.

    Args:
        words: the vocabulary's words in id order (from id 2).
    """

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = [PAD, UNK, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, notes: Iterable[Sequence[str]], size: int, min_df: int = 1) -> Vocabulary:
        """Words with document frequency >= ``min_df``, most frequent first, at most ``size - 2``."""
        if size < 3:
            raise ConfigError(f"vocab_size must be >= 3 (PAD, UNK and one word), got {size}")
        if min_df < 1:
            raise ConfigError(f"min_df must be >= 1, got {min_df}")
        df = Counter()
        for words in notes:
            df.update(set(words))
        kept = sorted((w for w, n in df.items() if n >= min_df), key=lambda w: (-df[w], w))
        return cls(kept[: size - 2])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.stoi.get(w, UNK_ID) for w in words), dtype=np.int64, count=len(words))

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]


def encode_split(notes: Notes, vocab: Vocabulary, labels: Sequence[str], max_len: int,
                 where: str = "") -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids per note (truncated to ``max_len``, count logged) and the multi-hot targets (N, K)."""
    if max_len < 1:
        raise ConfigError(f"max_len must be >= 1, got {max_len}")
    index = {c: j for j, c in enumerate(labels)}
    targets = np.zeros((len(notes), len(labels)), dtype=np.float32)
    ids, truncated = [], 0
    for i, (words, codes) in enumerate(zip(notes.words, notes.codes)):
        if len(words) > max_len:
            truncated += 1
            words = words[:max_len]
        ids.append(vocab.encode(words))
        for c in codes:
            if c not in index:
                raise DataError(f"{where}: note {notes.hadm_ids[i]} has code {c!r} outside the label set "
                                f"({len(labels)} codes)")
            targets[i, index[c]] = 1.0
    if truncated:
        log.warning("%s: %d of %d notes longer than max_len=%d tokens were truncated to their first %d tokens",
                    where or "ICD notes", truncated, len(notes), max_len, max_len)
    return ids, targets


def write_split(path: str | os.PathLike, hadm_ids: Sequence[str], texts: Sequence[str],
                codes: Sequence[Sequence[str]]) -> None:
    """Write one split in the CAML layout (``HADM_ID, TEXT, LABELS, length``)."""
    frame = pd.DataFrame({"HADM_ID": list(hadm_ids), "TEXT": list(texts),
                          "LABELS": [";".join(c) for c in codes],
                          "length": [len(t.split()) for t in texts]})
    frame.to_csv(path, index=False)

"""The EmoPain-style subject layout: subject files, checked frames, windows inside exercise segments."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from seqzoo.datasets.base import check_numeric, read_csv_checked, require_path
from seqzoo.errors import DataError


SPLITS = ("train", "val", "test")
SUBJECT_PREFIX = "subject_"


def subject_files(root: str | os.PathLike) -> dict[str, Path]:
    """``{subject id: path}`` of every ``subject_<id>.csv`` in ``root``, sorted by id."""
    root = require_path(root, "pain data folder")
    files = {p.stem[len(SUBJECT_PREFIX):]: p for p in root.glob(f"{SUBJECT_PREFIX}*.csv")}
    if not files:
        raise DataError(f"{root}: no {SUBJECT_PREFIX}<id>.csv files -- write a synthetic set with "
                        "`seqzoo data synth pain --out DIR` (or set data.prepare: synth:pain)")
    return dict(sorted(files.items()))


def read_subject(path: Path, label_column: str, channels: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One subject's frames: checked channels (file order unless given), exercise, integer labels."""
    frame = read_csv_checked(path, required=("exercise", label_column), what="subject file")
    found = [c for c in frame.columns if c not in ("exercise", label_column)]
    if channels is None:
        channels = found
    missing = [c for c in channels if c not in found]
    if missing:
        raise DataError(f"{path}: missing channel column(s) {missing}; found {found}")
    if not channels:
        raise DataError(f"{path}: no channel columns besides 'exercise' and {label_column!r}")
    values = check_numeric(frame, [*channels, label_column], path)
    labels = values[label_column].to_numpy()
    bad = (labels != np.round(labels)) | (labels < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}, line {i + 2}, column {label_column!r}: expected a non-negative integer label, "
                        f"got {labels[i]:g}")
    out = values[channels].copy()
    out["exercise"] = frame["exercise"].astype(str).to_numpy()
    out["label"] = labels.astype(np.int64)
    return out, channels


def segment_windows(exercise: np.ndarray, labels: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Start rows and majority labels of windows that stay inside one exercise segment."""
    change = np.flatnonzero(exercise[1:] != exercise[:-1]) + 1
    bounds = np.r_[0, change, len(exercise)]
    starts, window_labels = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for s in range(lo, hi - window + 1, stride):
            counts = np.bincount(labels[s : s + window])
            starts.append(s)
            window_labels.append(len(counts) - 1 - int(np.argmax(counts[::-1])))  # ties -> higher label
    return np.asarray(starts, dtype=np.int64), np.asarray(window_labels, dtype=np.int64)

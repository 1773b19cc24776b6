"""Readers of the OnHW-chars and OnHW-words fold formats."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import require_path
from seqzoo.errors import DataError


N_CHANNELS = 13
SAMPLE_RATE = 100
CHANNEL_NAMES = (
    "acc_front_x", "acc_front_y", "acc_front_z", "acc_rear_x", "acc_rear_y", "acc_rear_z",
    "gyro_x", "gyro_y", "gyro_z", "mag_x", "mag_y", "mag_z", "force",
)
CHARS_FILES = {"train": ("X_train.npy", "y_train.npy"), "test": ("X_test.npy", "y_test.npy")}
WORDS_FILES = {"train": ("all_x_dat_train_imu.pkl", "all_train_gt.pkl", "train_ids.pkl"),
               "test": ("all_x_dat_val_imu.pkl", "all_val_gt.pkl", "val_ids.pkl")}

Split = tuple[list[np.ndarray], list[str]]




def detect_format(fold_dir: Path) -> str:
    if all((fold_dir / f).exists() for files in CHARS_FILES.values() for f in files):
        return "chars"
    if all((fold_dir / f).exists() for files in WORDS_FILES.values() for f in files[:2]):
        return "words"
    raise DataError(
        f"{fold_dir}: not an OnHW fold: expected {', '.join(f for fs in CHARS_FILES.values() for f in fs)} "
        f"(OnHW-chars) or {', '.join(f for fs in WORDS_FILES.values() for f in fs)} (OnHW-words)"
    )


def read_onhw_chars(fold_dir: str | os.PathLike) -> dict[str, Split]:
    """Train and test (sequences, labels) of an OnHW-chars fold; labels are single characters."""
    fold_dir = Path(fold_dir)
    out = {}
    for split, (x_name, y_name) in CHARS_FILES.items():
        x_path = require_path(fold_dir / x_name, "OnHW-chars file")
        y_path = require_path(fold_dir / y_name, "OnHW-chars file")
        sequences = check_sequences(_load_npy(x_path), x_path)
        labels = [str(v) for v in np.asarray(_load_npy(y_path)).reshape(-1)]
        _check_same_count(sequences, labels, x_path, y_path)
        for i, label in enumerate(labels):
            if len(label) != 1:
                raise DataError(f"{y_path}, record {i}: expected a single-character label, got {label!r}")
        out[split] = (sequences, labels)
    return out


def read_onhw_words(fold_dir: str | os.PathLike) -> dict[str, Split]:
    """Train and test (sequences, label strings) of an OnHW-words/equations fold."""
    fold_dir = Path(fold_dir)
    out = {}
    for split, (x_name, y_name, id_name) in WORDS_FILES.items():
        x_path = require_path(fold_dir / x_name, "OnHW-words file")
        y_path = require_path(fold_dir / y_name, "OnHW-words file")
        sequences = check_sequences(_load_pickle(x_path), x_path)
        raw = list(_load_pickle(y_path))
        labels = []
        for i, label in enumerate(raw):
            if not isinstance(label, str) or not label:
                raise DataError(f"{y_path}, record {i}: expected a non-empty label string, got {label!r}")
            labels.append(label)
        _check_same_count(sequences, labels, x_path, y_path)
        if (fold_dir / id_name).exists():
            _check_same_count(sequences, list(_load_pickle(fold_dir / id_name)), x_path, fold_dir / id_name)
        out[split] = (sequences, labels)
    return out


def check_sequences(values, path: Path) -> list[np.ndarray]:
    """Each record a finite (T_i >= 1, 13) array, as float32; errors name the record."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        values = list(values) if values.ndim == 3 else [values]
    out = []
    for i, seq in enumerate(values):
        try:
            arr = np.asarray(seq, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{path}, record {i}: not a numeric array") from None
        if arr.ndim != 2 or arr.shape[1] != N_CHANNELS:
            raise DataError(f"{path}, record {i}: expected shape (T, {N_CHANNELS}), got {arr.shape}")
        if arr.shape[0] == 0:
            raise DataError(f"{path}, record {i}: empty sequence (0 time steps)")
        if not np.isfinite(arr).all():
            t, c = np.argwhere(~np.isfinite(arr))[0]
            raise DataError(f"{path}, record {i}, step {t}, channel {CHANNEL_NAMES[c]!r}: non-finite value {arr[t, c]}")
        out.append(arr)
    if not out:
        raise DataError(f"{path}: no records")
    return out


def _load_npy(path: Path):
    try:
        return np.load(path, allow_pickle=True)
    except (ValueError, OSError, pickle.UnpicklingError) as err:
        raise DataError(f"{path}: cannot be read as a .npy array: {err}") from None


def _load_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as a pickle: {err}") from None


def _check_same_count(a: Sequence, b: Sequence, path_a: Path, path_b: Path) -> None:
    if len(a) != len(b):
        raise DataError(f"{path_b}: {len(b)} records, but {path_a} has {len(a)}")

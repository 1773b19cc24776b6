"""The ETT / Time-Series-Library CSV format: reading, split borders, time features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqzoo.datasets.base import check_numeric, read_csv_checked
from seqzoo.errors import ConfigError, DataError


def variate_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """Variate columns in file order with the target moved last (Time-Series-Library)."""
    cols = [c for c in frame.columns if c not in ("date", target)]
    return cols + [target]


def load_forecasting_csv(path: str | Path, target: str = "OT") -> pd.DataFrame:
    """Read and validate an ETT-format CSV: a ``date`` column, numeric variates, ordered time."""
    frame = read_csv_checked(path, required=("date", target), what="forecasting CSV")
    if frame.columns[0] != "date":
        raise DataError(f"{path}: the first column must be 'date', found {frame.columns[0]!r}")
    numeric = [c for c in frame.columns if c != "date"]
    frame[numeric] = check_numeric(frame, numeric, path)
    dates = pd.to_datetime(frame["date"], errors="coerce")
    if dates.isna().any():
        i = int(np.argmax(dates.isna().to_numpy()))
        raise DataError(f"{path}, line {i + 2}, column 'date': cannot parse {frame['date'].iloc[i]!r} as a date")
    if not dates.is_monotonic_increasing:
        i = int(np.argmax(np.diff(dates.to_numpy()) < np.timedelta64(0)))
        raise DataError(f"{path}, line {i + 3}: dates must increase (row is earlier than the row before)")
    frame["date"] = dates
    return frame


def split_bounds(
    n_rows: int,
    lookback: int,
    borders: list[int] | None,
    ratios: tuple[float, float, float],
    path: str | Path = "<data>",
) -> dict[str, tuple[int, int]]:
    """Row ranges [lo, hi) per split; val and test start ``lookback`` rows early."""
    if borders is not None:
        train_end, val_end, test_end = borders
        if n_rows < test_end:
            raise DataError(
                f"{path}: the file has {n_rows} rows but the configured borders need {test_end} "
                f"(borders={list(borders)})"
            )
    else:
        train_end = int(n_rows * ratios[0])
        test_len = int(n_rows * ratios[2])
        val_end = n_rows - test_len
        test_end = n_rows
    bounds = {
        "train": (0, train_end),
        "val": (max(0, train_end - lookback), val_end),
        "test": (max(0, val_end - lookback), test_end),
    }
    return bounds



TIME_FEATURES: dict[str, tuple[str, ...]] = {
    "t": ("minute", "hour", "dayofweek", "day", "dayofyear"),
    "h": ("hour", "dayofweek", "day", "dayofyear"),
    "d": ("dayofweek", "day", "dayofyear"),
}


def time_features(dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    if freq not in TIME_FEATURES:
        raise ConfigError(f"freq must be one of {sorted(TIME_FEATURES)}, got {freq!r}")
    scaled = {
        "minute": dates.minute / 59.0 - 0.5,
        "hour": dates.hour / 23.0 - 0.5,
        "dayofweek": dates.dayofweek / 6.0 - 0.5,
        "day": (dates.day - 1) / 30.0 - 0.5,
        "dayofyear": (dates.dayofyear - 1) / 365.0 - 0.5,
    }
    return np.stack([np.asarray(scaled[name], dtype=np.float32) for name in TIME_FEATURES[freq]], axis=1)

"""The forecasting DataModule: stride-1 windows of an ETT-format CSV, scaled with train statistics."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Dataset

from seqzoo.datasets.base import BaseDataModule, materialise, read_csv_checked
from seqzoo.datasets.forecasting.reader import (
    TIME_FEATURES,
    _variate_columns,
    load_forecasting_csv,
    split_bounds,
    time_features,
)
from seqzoo.errors import ConfigError, DataError


SPLITS = ("train", "val", "test")


class WindowDataset(Dataset):
    """Stride-1 (x, y) windows over a contiguous block of rows."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, marks: np.ndarray, lookback: int, horizon: int):
        self.inputs = torch.as_tensor(inputs, dtype=torch.float32)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.marks = torch.as_tensor(marks, dtype=torch.float32)
        self.lookback, self.horizon = lookback, horizon

    def __len__(self) -> int:
        return max(0, len(self.inputs) - self.lookback - self.horizon + 1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        L, H = self.lookback, self.horizon
        return {
            "x": self.inputs[i : i + L],
            "y": self.targets[i + L : i + L + H],
            "x_mark": self.marks[i : i + L],
            "y_mark": self.marks[i + L : i + L + H],
        }


class ForecastingDataModule(BaseDataModule):
    """Windows over an ETT-format CSV, scaled with train statistics."""

    dim_names: ClassVar[tuple[str, ...]] = ("n_channels", "n_targets", "lookback", "horizon", "n_time_features")

    def __init__(
        self,
        path: str,
        lookback: int = 96,
        horizon: int = 96,
        features: Literal["M", "S", "MS"] = "M",
        target: str = "OT",
        borders: list[int] | None = None,
        ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
        scale: bool = True,
        freq: Literal["h", "t", "d"] = "h",
        batch_size: int = 32,
        num_workers: int = 0,
        prepare: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if lookback < 1 or horizon < 1:
            raise ConfigError(f"lookback and horizon must be >= 1, got {lookback} and {horizon}")
        if features not in ("M", "S", "MS"):
            raise ConfigError(f"features must be 'M', 'S' or 'MS', got {features!r}")
        if borders is not None and (len(borders) != 3 or not 0 < borders[0] < borders[1] < borders[2]):
            raise ConfigError(f"borders must be three increasing row counts [train_end, val_end, test_end], got {borders}")
        if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
            raise ConfigError(f"ratios must be three positive fractions summing to 1, got {ratios}")
        self.path = path
        self.lookback, self.horizon = lookback, horizon
        self.features, self.target = features, target
        self.borders, self.ratios = borders, tuple(ratios)
        self.scale, self.freq = scale, freq
        self.prepare = prepare
        self.columns: list[str] | None = None
        self.scaler: StandardScaler | None = None
        self.datasets: dict[str, WindowDataset] = {}

    # -- sizes ------------------------------------------------------------------------
    @property
    def dims(self) -> dict[str, int]:
        self._read_header()
        n_in = 1 if self.features == "S" else len(self.columns)
        n_out = len(self.columns) if self.features == "M" else 1
        return {
            "n_channels": n_in,
            "n_targets": n_out,
            "lookback": self.lookback,
            "horizon": self.horizon,
            "n_time_features": len(TIME_FEATURES[self.freq]),
        }

    def _read_header(self) -> None:
        if self.columns is not None:
            return
        self._ensure_file()
        frame = read_csv_checked(self.path, required=("date", self.target), nrows=2, what="forecasting CSV")
        self.columns = _variate_columns(frame, self.target)

    # -- data -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._ensure_file()

    def _ensure_file(self) -> None:
        if Path(self.path).exists():
            return
        if self.prepare:
            materialise(self.prepare, Path(self.path).parent)
            if Path(self.path).exists():
                return
            raise DataError(f"data source {self.prepare!r} did not write {self.path}")
        raise DataError(
            f"forecasting CSV not found: {self.path} -- put the file there (first column 'date', "
            f"target {self.target!r} last), or write one with `seqzoo data synth forecasting --out DIR`"
        )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._ensure_file()
        frame = load_forecasting_csv(self.path, self.target)
        self.columns = _variate_columns(frame, self.target)
        values = frame[self.columns].to_numpy(np.float64)
        bounds = split_bounds(len(frame), self.lookback, self.borders, self.ratios, self.path)
        train_lo, train_hi = bounds["train"]
        self.scaler = StandardScaler()
        if self.scale:
            self.scaler.fit(values[train_lo:train_hi])
            values = self.scaler.transform(values)
        inputs = values[:, -1:] if self.features == "S" else values
        targets = values if self.features == "M" else values[:, -1:]
        marks = time_features(pd.DatetimeIndex(frame["date"]), self.freq)
        for split, (lo, hi) in bounds.items():
            ds = WindowDataset(inputs[lo:hi], targets[lo:hi], marks[lo:hi], self.lookback, self.horizon)
            if len(ds) == 0:
                raise DataError(
                    f"{self.path}: the {split} split has {hi - lo} rows, fewer than lookback + horizon = "
                    f"{self.lookback + self.horizon}; use a longer file, other borders/ratios or a shorter window"
                )
            self.datasets[split] = ds

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["train"], shuffle=True, drop_last=True, **self.loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["val"], shuffle=False, **self.loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        # Never drop the last partial batch: metrics cover every test window.
        return DataLoader(self.datasets["test"], shuffle=False, drop_last=False, **self.loader_kwargs())

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

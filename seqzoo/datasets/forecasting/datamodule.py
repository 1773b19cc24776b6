"""The forecasting DataModule: stride-1 windows of an ETT-format CSV, scaled with train statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, fitted_scaler
from seqzoo.datasets.forecasting.reader import (
    TIME_FEATURES,
    TimeStep,
    variate_columns,
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


class ForecastOrigins(Dataset):
    """Windows ending at given rows (forecast origins) of a block of rows: ``x`` and ``x_mark`` the
    ``lookback`` rows up to the origin, ``y_mark`` the time features of the ``horizon`` steps after
    it (past the block's end too: the rows of ``marks`` extend beyond ``inputs``)."""

    def __init__(self, inputs: np.ndarray, marks: np.ndarray, origins: list[int], lookback: int, horizon: int):
        self.inputs = torch.as_tensor(inputs, dtype=torch.float32)
        self.marks = torch.as_tensor(marks, dtype=torch.float32)
        self.origins, self.lookback, self.horizon = list(origins), lookback, horizon

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, L, H = self.origins[i], self.lookback, self.horizon
        return {"x": self.inputs[e - L + 1 : e + 1], "x_mark": self.marks[e - L + 1 : e + 1],
                "y_mark": self.marks[e + 1 : e + 1 + H]}


class ForecastingDataModule(BaseDataModule):
    """Windows over an ETT-format CSV, scaled with train statistics.

    Args:
        path: the CSV (first column ``date``, then the variates, ``target`` among them).
        n_variates: variate columns in the file, the target included (ETT: 7; the
            pvlib weather set: 13); checked against the file in ``setup``.
        lookback: input window length L.
        horizon: forecast length H.
        features: ``M`` all -> all, ``S`` target -> target, ``MS`` all -> target.
        target: the target column (moved last).
        borders: ``[train_end, val_end, test_end]`` in rows (Time-Series-Library ETT borders).
        ratios: train/val/test fractions of the file by time when ``borders`` is not set.
        scale: standardise with the training rows' statistics.
        freq: the time features: ``h`` hourly (hour of day, minutes as a fraction), ``t``
            minutely (minute and hour), ``d`` daily; checked against the timestamps' median
            step (a ConfigError naming both). ``None``: the step is inferred from the file
            and the hourly set is used.
        columns: the variate columns to keep (the target always is); ``None``: all.
        drop: columns to leave out (ids, text, flags); unknown names are a ConfigError.
        gaps: missing timestamps: ``error`` (a DataError with their count and the first),
            or ``ignore`` (a warning; windows across a gap treat its rows as one step apart).
        season_length: the seasonal period in steps for the seasonal-naive baseline;
            ``None``: from the step (24 hourly, 48 half-hourly, 7 daily, 52 weekly, 12 monthly).
        batch_size: training batch size.
        num_workers: DataLoader workers.
        prepare: what writes the CSV's folder when the file is missing (``synth:forecasting``, ``pvlib-tmy3``).
        predict_windows: what ``seqzoo predict`` forecasts: ``test`` the test split's windows;
            ``all`` from every row with ``lookback`` rows before it (the last ``horizon`` forecasts
            reach past the file's end); ``last`` the ``horizon`` steps after the file's last row.
            With a trained model's saved scaler (``seqzoo predict``, ``seqzoo.predict``) ``all``
            and ``last`` read any file with the trained columns, however short.
    """

    target_key = "y"
    data_name = "forecasting CSV"

    def __init__(
        self,
        path: str,
        n_variates: int = 7,
        lookback: int = 96,
        horizon: int = 96,
        features: Literal["M", "S", "MS"] = "M",
        target: str = "OT",
        borders: list[int] | None = None,
        ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
        scale: bool = True,
        freq: Literal["h", "t", "d"] | None = None,
        columns: list[str] | None = None,
        drop: list[str] | None = None,
        gaps: Literal["error", "ignore"] = "error",
        season_length: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        prepare: str | None = None,
        predict_windows: Literal["test", "all", "last"] = "test",
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare)
        if predict_windows not in ("test", "all", "last"):
            raise ConfigError(f"predict_windows must be 'test', 'all' or 'last', got {predict_windows!r}")
        self.predict_windows = predict_windows
        if lookback < 1 or horizon < 1:
            raise ConfigError(f"lookback and horizon must be >= 1, got {lookback} and {horizon}")
        if n_variates < 1:
            raise ConfigError(f"n_variates must be >= 1, got {n_variates}")
        if features not in ("M", "S", "MS"):
            raise ConfigError(f"features must be 'M', 'S' or 'MS', got {features!r}")
        if borders is not None and (len(borders) != 3 or not 0 < borders[0] < borders[1] < borders[2]):
            raise ConfigError(f"borders must be three increasing row counts [train_end, val_end, test_end], got {borders}")
        if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
            raise ConfigError(f"ratios must be three positive fractions summing to 1, got {ratios}")
        if freq is not None and freq not in TIME_FEATURES:
            raise ConfigError(f"freq must be one of {sorted(TIME_FEATURES)}, got {freq!r}")
        if columns is not None and drop is not None:
            raise ConfigError("set data.columns (the columns to keep) or data.drop (those to leave out), not both")
        if gaps not in ("error", "ignore"):
            raise ConfigError(f"gaps must be 'error' or 'ignore', got {gaps!r}")
        if season_length is not None and season_length < 1:
            raise ConfigError(f"season_length must be >= 1, got {season_length}")
        self.path, self.n_variates = path, n_variates
        self.lookback, self.horizon = lookback, horizon
        self.features, self.target = features, target
        self.borders, self.ratios = borders, tuple(ratios)
        self.scale, self.freq = scale, freq
        self.keep, self.drop = None if columns is None else list(columns), None if drop is None else list(drop)
        self.gaps, self.season_length = gaps, season_length
        self.step: TimeStep | None = None
        self.columns: list[str] | None = None
        self.scaler: StandardScaler | None = None

    @property
    def dims(self) -> dict[str, int]:
        return {
            "n_channels": 1 if self.features == "S" else self.n_variates,
            "n_targets": self.n_variates if self.features == "M" else 1,
            "lookback": self.lookback,
            "horizon": self.horizon,
            "n_time_features": len(TIME_FEATURES[self.freq or "h"]),
        }

    def data_ready(self) -> bool:
        return Path(self.path).is_file()

    def prepare_target(self) -> Path:
        return Path(self.path).parent

    def missing_data_hint(self) -> str:
        return (f"put the file there (first column 'date', target {self.target!r} last), or write one with "
                "`seqzoo data synth forecasting --out DIR` (or set data.prepare: synth:forecasting)")

    def read_frame(self) -> pd.DataFrame:
        """The file through :func:`load_forecasting_csv` with this module's column, frequency and gap
        settings; records the timestamps' step."""
        frame = load_forecasting_csv(self.path, self.target, columns=self.keep, drop=self.drop,
                                     freq=self.freq, gaps=self.gaps)
        self.step = frame.attrs["step"]
        return frame

    def seasonal_period(self) -> int | None:
        """Steps per season for the seasonal-naive baseline: ``season_length``, else the one the
        file's step implies (None when none fits); reads the file if ``setup`` has not."""
        if self.season_length is not None:
            return self.season_length
        if self.step is None:
            self.setup("test")
        return self.step.season_length

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_windows != "test":
            if "predict" not in self.datasets:
                self._setup_predict()
            return
        if all(split in self.datasets for split in SPLITS):
            return
        self.require_data()
        frame = self._read()
        values = frame[self.columns].to_numpy(np.float64)
        bounds = split_bounds(len(frame), self.lookback, self.borders, self.ratios, self.path)
        train_lo, train_hi = bounds["train"]
        if self.fitted_transform is None:
            self.scaler = StandardScaler()
            if self.scale:
                self.scaler.fit(values[train_lo:train_hi])
        if self.scale:
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
        self._bounds = bounds

    # -- reading, with or without a trained model's transform ------------------------------
    def _read(self) -> pd.DataFrame:
        """The CSV, its variate columns in ``self.columns`` (target last) and, with a fitted
        transform, the trained columns checked and the saved scaler in ``self.scaler``."""
        frame = self.read_frame()
        columns = variate_columns(frame, self.target)
        fitted = self.fitted_transform
        if fitted:
            trained = list(fitted["columns"])
            missing = [c for c in trained if c not in frame.columns]
            extra = [c for c in columns if c not in trained]
            if missing or extra:
                raise DataError(f"{self.path}: the model was trained on columns {trained}"
                                + (f"; missing here: {missing}" if missing else "")
                                + (f"; not known to the model: {extra} (drop them)" if extra else ""))
            columns = trained
            self.scaler = fitted_scaler(fitted["mean"], fitted["scale"]) if fitted.get("scaled") else StandardScaler()
        self.columns = columns
        if len(self.columns) != self.n_variates:
            raise DataError(f"{self.path}: has {len(self.columns)} variate columns ({', '.join(self.columns)}), but "
                            f"data.n_variates is {self.n_variates}; set data.n_variates: {len(self.columns)}")
        self._dates, self._frame = pd.DatetimeIndex(frame["date"]), frame
        return frame

    def _setup_predict(self) -> None:
        """The forecast origins of ``predict_windows`` and the timestamps of every forecast step."""
        if self.predict_windows == "test":
            self.setup("test")
        else:
            self.require_data()
            frame = self._read()
            if self.fitted_transform is None and self.scale:  # no trained scaler: the training rows'
                lo, hi = split_bounds(len(frame), self.lookback, self.borders, self.ratios, self.path)["train"]
                self.scaler = StandardScaler().fit(frame[self.columns].to_numpy(np.float64)[lo:hi])
        n, L, H = len(self._dates), self.lookback, self.horizon
        if self.predict_windows == "test":
            lo, hi = self._bounds["test"]
            origins = list(range(lo + L - 1, hi - H))
        else:
            if n < L:
                raise DataError(f"{self.path}: has {n} rows, fewer than the model's lookback {L}")
            origins = [n - 1] if self.predict_windows == "last" else list(range(L - 1, n))
        frame = self._frame
        values = frame[self.columns].to_numpy(np.float64)
        if self.scale:
            values = self.scaler.transform(values)
        saved = (self.fitted_transform or {}).get("step")
        step = TimeStep.from_dict(saved) if isinstance(saved, dict) else self.step
        self._all_dates = self._dates.append(step.after(self._dates[-1], H))
        self._actual = frame[self.target_columns].to_numpy(np.float64)
        marks = time_features(self._all_dates, self.freq)
        inputs = values[:, -1:] if self.features == "S" else values
        self.datasets["predict"] = ForecastOrigins(inputs, marks, origins, L, H)

    @property
    def target_columns(self) -> list[str]:
        """The forecast columns, in the order of the model's outputs."""
        return list(self.columns) if self.features == "M" else [self.target]

    def predict_dataloader(self):
        if "predict" not in self.datasets:
            self._setup_predict()
        return self.eval_dataloader("predict")

    def transform_state(self) -> dict:
        if self.columns is None or self.scaler is None:
            return dict(self.fitted_transform or {})
        scaled = bool(self.scale)
        return {
            "kind": "forecasting", "columns": list(self.columns), "target": self.target,
            "targets": self.target_columns, "features": self.features, "freq": self.freq or "h",
            "step": self.step.to_dict(), "scaled": scaled,
            "mean": self.scaler.mean_.tolist() if scaled else [0.0] * len(self.columns),
            "scale": self.scaler.scale_.tolist() if scaled else [1.0] * len(self.columns),
        }

    def prediction_table(self, predictions) -> pd.DataFrame:
        """One row per (forecast origin, step ahead): ``origin`` (the last input row's time),
        ``step``, ``date``, each target column forecast in the file's units, and
        ``<column>_actual`` where the file has that row."""
        ds = self.datasets["predict"]
        pred = torch.as_tensor(predictions).detach().double().cpu().numpy()
        N, H, K = pred.shape
        if N != len(ds):
            raise ValueError(f"{N} predictions for {len(ds)} forecast origins")
        cols = self.target_columns
        idx = [self.columns.index(c) for c in cols]
        if self.scale:
            pred = pred * self.scaler.scale_[idx] + self.scaler.mean_[idx]
        origins = np.repeat(np.asarray(ds.origins), H)
        rows = origins + np.tile(np.arange(1, H + 1), N)
        table = pd.DataFrame({"origin": self._all_dates[origins], "step": np.tile(np.arange(1, H + 1), N),
                              "date": self._all_dates[rows]})
        flat = pred.reshape(N * H, K)
        known = rows < len(self._actual)
        for k, col in enumerate(cols):
            table[col] = flat[:, k]
            actual = np.full(N * H, np.nan)
            actual[known] = self._actual[rows[known], k]
            table[f"{col}_actual"] = actual
        return table

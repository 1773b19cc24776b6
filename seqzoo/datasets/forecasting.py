"""Long-horizon forecasting data in the ETT / Time-Series-Library CSV format.

Format: a CSV whose first column is ``date``, then the variates, the target
(``OT`` by default) last. Windows: ``x = rows[i : i + L]``, ``y = rows[i + L : i + L + H]``
with stride 1. Splits follow Time-Series-Library:

* ``borders=[train_end, val_end, test_end]`` in rows (ETTh: 8640, 11520, 14400;
  ETTm: 34560, 46080, 57600); or
* ``ratios=(0.7, 0.1, 0.2)`` of the file by time (the default);

validation and test windows start ``L`` rows early so their first target follows
the previous split. A StandardScaler is fitted on the training rows only. Features:
``M`` all -> all, ``S`` target -> target, ``MS`` all -> target.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Dataset

from seqzoo.datasets.base import (
    BaseDataModule,
    atomic_dir,
    check_numeric,
    materialise,
    read_csv_checked,
    register_prepare,
    register_synth,
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


def _variate_columns(frame: pd.DataFrame, target: str) -> list[str]:
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


# ---------------------------------------------------------------------------------------
# time features (Informer / Time-Series-Library "timeF": each scaled to [-0.5, 0.5])
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# synthetic ETT-like data and real weather from pvlib
# ---------------------------------------------------------------------------------------

ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL")


@register_synth("forecasting")
def synth_forecasting(out: str, n_rows: int = 4000, seed: int = 0, name: str = "ett_synthetic.csv") -> Path:
    """An ETT-like hourly CSV: daily and weekly seasonality, trend, AR(1) noise; ``OT`` is a
    lagged mix of the loads plus its own cycle, so multivariate inputs help."""
    if n_rows < 10:
        raise ConfigError(f"n_rows must be >= 10, got {n_rows}")
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows, dtype=np.float64)
    cols = {}
    for j, col in enumerate(ETT_COLUMNS):
        daily = rng.uniform(1.0, 3.0) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi))
        weekly = rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * t / 168 + rng.uniform(0, 2 * np.pi))
        trend = rng.uniform(-2, 2) * t / n_rows
        noise = _ar1(n_rows, 0.7, 0.3, rng)
        cols[col] = 5 + j + daily + weekly + trend + noise
    loads = np.stack(list(cols.values()), axis=1)
    lagged = np.roll(loads, 3, axis=0)
    lagged[:3] = loads[:3]
    cols["OT"] = (
        20 + lagged @ rng.uniform(0.2, 0.6, size=len(ETT_COLUMNS)) / 2
        + 2.0 * np.sin(2 * np.pi * t / 24 + 1.0)
        + _ar1(n_rows, 0.8, 0.2, rng)
    )
    frame = pd.DataFrame(cols)
    frame.insert(0, "date", pd.date_range("2016-07-01", periods=n_rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"))
    with atomic_dir(out) as tmp:
        frame.to_csv(tmp / name, index=False, float_format="%.4f")
    return Path(out) / name


def _ar1(n: int, phi: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    eps = rng.normal(0, sigma, size=n)
    x = np.empty(n)
    x[0] = eps[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return x


PVLIB_TMY3_CHANNELS = {
    "ghi": "ghi",
    "dni": "dni",
    "dhi": "dhi",
    "TotCld (tenths)": "total_cloud",
    "OpqCld (tenths)": "opaque_cloud",
    "temp_dew": "temp_dew",
    "relative_humidity": "relative_humidity",
    "pressure": "pressure",
    "wind_direction": "wind_direction",
    "wind_speed": "wind_speed",
    "precipitable_water": "precipitable_water",
    "Hvis (m)": "visibility",
}


@register_prepare("pvlib-tmy3")
def prepare_pvlib_tmy3(out: str, name: str = "weather.csv") -> Path:
    """Real hourly weather: the TMY3 year for Greensboro, NC, shipped in pvlib (BSD-3).

    8,760 ordered hours; 12 channels (irradiance, cloud, humidity, pressure, wind,
    water, visibility) and the target ``OT`` = dry-bulb air temperature (deg C).
    Months come from different years, so expect jumps at month borders.
    """
    try:
        import pvlib
    except ImportError:
        raise DataError(
            "pvlib-tmy3 needs the pvlib package: pip install 'seqzoo[data]' (or pip install pvlib)"
        ) from None
    source = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
    if not source.exists():
        raise DataError(f"pvlib is installed but its TMY3 file is missing: {source}")
    frame, _meta = pvlib.iotools.read_tmy3(str(source), map_variables=True, coerce_year=2000)
    missing = [c for c in (*PVLIB_TMY3_CHANNELS, "temp_air") if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: pvlib did not return column(s) {missing}")
    data = frame[list(PVLIB_TMY3_CHANNELS)].rename(columns=PVLIB_TMY3_CHANNELS).astype("float64")
    data["OT"] = frame["temp_air"].astype("float64")
    data.insert(0, "date", frame.index.tz_localize(None).strftime("%Y-%m-%d %H:%M:%S"))
    with atomic_dir(out) as tmp:
        data.to_csv(tmp / name, index=False, float_format="%.6g")
    return Path(out) / name

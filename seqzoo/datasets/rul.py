"""Remaining-useful-life data: laser aging tests and NASA C-MAPSS turbofan engines.

Formats (the user brings the files; nothing is downloaded):

* **laser** -- a folder with ``devices.csv`` (``device_id, split, failed``; split is
  ``train``/``val``/``test``, failed is 0 or 1) and one ``<device_id>.csv`` per device
  with ``time_h, current_mA`` and optionally ``power_mW, temp_C`` (the same columns
  for every device). Lasers age at constant output power, so the drive current
  rises, I(t) = I0 (1 + a t^b); a failed device's record ends at its failure (the
  current crossed its end-of-life threshold, +20 % over I0 by default), a device
  still running at the end of the test (failed = 0) is right-censored. The current
  is fed as its relative rise I/I0 - 1, with I0 the mean of the first
  ``baseline_points`` samples of that device.
* **cmapss** -- ``train_FDxxx.txt``, ``test_FDxxx.txt`` (whitespace, no header, 26
  columns ``unit, cycle, op1..op3, s1..s21``) and ``RUL_FDxxx.txt`` (one integer per
  test unit: its remaining cycles after the last recorded one). Training units run
  to failure. Validation units are drawn from the training file (by unit).

Labels (time in hours or cycles): RUL_t = remaining life, capped, ``min(rul_cap, RUL_t)``
(the piecewise-linear target of the C-MAPSS literature, cap 125 cycles). A window
is *anomalous* (the unit is degrading) when RUL_t < ``anomaly_rul`` (default: the
cap, where the capped target starts to fall). For a censored laser the true RUL
only has a lower bound, so a label is used only where that bound decides it.

Splits are by unit/device (never by window); the scaler (min-max or standard) is
fitted on the training units' rows only. One data module serves the three stages
of the laser maintenance framework (Abdelli et al., JLT 2022):

* ``stage="forecast"``: window of all channels -> next ``horizon`` values of the
  target channels (the monitored degradation values; laser: the current);
* ``stage="detect"``:   window of the target channels -> anomaly label (training
  windows are normal ones only: the autoencoder learns normal behaviour);
* ``stage="rul"``:      window of all channels -> capped RUL / rul_cap, tested at the
  last cycle of each test unit (``rul_eval="last"``, C-MAPSS) or at every window
  whose label is known (``rul_eval="all"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch.utils.data import Dataset

from seqzoo.datasets.base import (
    BaseDataModule,
    SplitLoaders,
    atomic_dir,
    check_numeric,
    get_synth,
    read_csv_checked,
    register_synth,
    require_path,
)
from seqzoo.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
LASER_REQUIRED = ("time_h", "current_mA")
LASER_OPTIONAL = ("power_mW", "temp_C")
CMAPSS_COLUMNS = ("unit", "cycle", "op1", "op2", "op3", *(f"s{i}" for i in range(1, 22)))
Stage = Literal["forecast", "detect", "rul"]


@dataclass
class Unit:
    """One device or engine as read from disk (raw values, file order of rows)."""

    unit_id: str
    split: str
    time: np.ndarray  # (T,) hours or cycles, strictly increasing
    values: np.ndarray  # (T, F) raw channel values
    end_rul: float | None  # true RUL at the last row; None = still running (censored)


@dataclass
class PreparedUnit:
    """A unit ready for windows: scaled features (targets last) and per-row labels."""

    unit_id: str
    time: np.ndarray  # (T,)
    features: np.ndarray  # (T, C) float32, scaled
    rul: np.ndarray  # (T,) capped RUL, NaN where unknown
    anomaly: np.ndarray  # (T,) 1 degrading, 0 normal, -1 unknown


def rul_labels(time: np.ndarray, end_rul: float | None, cap: float, anomaly_rul: float) -> tuple[np.ndarray, np.ndarray]:
    """Capped RUL and anomaly label per row: RUL_t = end_rul + (t_last - t), capped.

    A censored unit (``end_rul=None``) has true RUL > t_last - t: its capped label is
    known (= cap) where that bound reaches the cap, and it is normal where the bound
    reaches ``anomaly_rul``; elsewhere the labels are unknown (NaN, -1).
    """
    remaining = time[-1] - time
    if end_rul is None:
        capped = np.where(remaining >= cap, float(cap), np.nan)
        anomaly = np.where(remaining >= anomaly_rul, 0, -1)
    else:
        true = remaining + end_rul
        capped = np.minimum(true, float(cap))
        anomaly = (true < anomaly_rul).astype(np.int64)
    return capped.astype(np.float64), anomaly.astype(np.int64)


# ---------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------


def read_laser(root: str | os.PathLike) -> tuple[list[Unit], list[str]]:
    """Devices of a laser aging test and the channel names (``current_mA`` last)."""
    root = Path(root)
    index_path = require_path(root / "devices.csv", "laser device list",
                              hint="write one with `seqzoo data synth rul-laser --out DIR`")
    index = read_csv_checked(index_path, required=("device_id", "split", "failed"), what="laser device list",
                             dtype={"device_id": str, "split": str})
    failed = check_numeric(index, ["failed"], index_path)["failed"].to_numpy()
    seen: dict[str, int] = {}
    units: list[Unit] = []
    columns: list[str] | None = None
    first_file = None
    for i, row in enumerate(index.itertuples(index=False)):
        line = i + 2
        device = str(row.device_id).strip()
        if not device or device.lower() == "nan":
            raise DataError(f"{index_path}, line {line}, column 'device_id': empty device id")
        if device in seen:
            raise DataError(f"{index_path}, line {line}: device {device!r} is listed twice (first on line {seen[device]})")
        seen[device] = line
        split = str(row.split).strip()
        if split not in SPLITS:
            raise DataError(f"{index_path}, line {line}, column 'split': expected one of {', '.join(SPLITS)}, got {split!r}")
        if failed[i] not in (0, 1):
            raise DataError(f"{index_path}, line {line}, column 'failed': expected 0 or 1, got {failed[i]:g}")
        path = root / f"{device}.csv"
        if not path.exists():
            raise DataError(f"device file not found: {path} (device {device!r}, {index_path} line {line})")
        frame = read_csv_checked(path, required=LASER_REQUIRED, what="laser device file")
        extra = [c for c in frame.columns if c not in LASER_REQUIRED + LASER_OPTIONAL]
        if extra:
            raise DataError(f"{path}: unexpected column(s) {', '.join(map(repr, extra))}; expected "
                            f"time_h, current_mA[, power_mW, temp_C]")
        cols = [c for c in LASER_OPTIONAL if c in frame.columns] + ["current_mA"]
        if columns is None:
            columns, first_file = cols, path
        elif cols != columns:
            raise DataError(f"{path}: has channels {cols} but {first_file} has {columns}; every device needs the same columns")
        numeric = check_numeric(frame, ["time_h", *cols], path)
        time = numeric["time_h"].to_numpy()
        _check_increasing(time, path, "time_h")
        current = numeric["current_mA"].to_numpy()
        if (current <= 0).any():
            j = int(np.argmax(current <= 0))
            raise DataError(f"{path}, line {j + 2}, column 'current_mA': drive current must be positive, got {current[j]:g}")
        if len(frame) < 2:
            raise DataError(f"{path}: a device needs at least 2 rows, found {len(frame)}")
        units.append(Unit(device, split, time, numeric[cols].to_numpy(np.float64), 0.0 if failed[i] == 1 else None))
    return units, columns


def _check_increasing(time: np.ndarray, path: Path, column: str, line_of=lambda i: i + 2) -> None:
    bad = np.diff(time) <= 0
    if bad.any():
        i = int(np.argmax(bad)) + 1
        raise DataError(f"{path}, line {line_of(i)}, column {column!r}: must increase "
                        f"({time[i]:g} follows {time[i - 1]:g})")


def read_cmapss_table(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a C-MAPSS text file: (line numbers, values (N, 26)), checked field by field."""
    path = require_path(path, "C-MAPSS file")
    rows, lines = [], []
    with open(path) as f:
        for n, text in enumerate(f, 1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) != len(CMAPSS_COLUMNS):
                raise DataError(f"{path}, line {n}: expected {len(CMAPSS_COLUMNS)} whitespace-separated columns "
                                f"(unit, cycle, op1..op3, s1..s21), found {len(fields)}")
            try:
                values = [float(v) for v in fields]
            except ValueError:
                j = next(k for k, v in enumerate(fields) if not _is_float(v))
                raise DataError(f"{path}, line {n}, column {CMAPSS_COLUMNS[j]!r}: expected a number, got {fields[j]!r}") from None
            if not all(np.isfinite(values)):
                j = int(np.argmax(~np.isfinite(values)))
                raise DataError(f"{path}, line {n}, column {CMAPSS_COLUMNS[j]!r}: missing or non-finite value {fields[j]!r}")
            rows.append(values)
            lines.append(n)
    if not rows:
        raise DataError(f"{path}: no data rows")
    table = np.asarray(rows)
    for j, name in ((0, "unit"), (1, "cycle")):
        bad = (table[:, j] != np.round(table[:, j])) | (table[:, j] < 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}, line {lines[i]}, column {name!r}: expected a positive integer, got {table[i, j]:g}")
    return np.asarray(lines), table


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def cmapss_units(path: str | os.PathLike, split: str, end_ruls: np.ndarray | None = None) -> list[Unit]:
    """Units of a C-MAPSS file; rows of a unit are contiguous with increasing cycles.

    ``end_ruls`` (test files) gives each unit's RUL after its last row, in unit order;
    training units run to failure (end RUL 0).
    """
    lines, table = read_cmapss_table(path)
    unit_col = table[:, 0].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, unit_col[1:] != unit_col[:-1]])
    ids = unit_col[starts]
    if len(np.unique(ids)) != len(ids):
        dup = next(u for k, u in enumerate(ids) if u in ids[:k])
        second = starts[[k for k, u in enumerate(ids) if u == dup][1]]
        raise DataError(f"{path}, line {lines[second]}: rows of unit {dup} are not contiguous (the file must be "
                        "sorted by unit, then cycle)")
    if end_ruls is not None and len(end_ruls) != len(ids):
        raise DataError(f"RUL file has {len(end_ruls)} values but {path} has {len(ids)} units; "
                        "the RUL file needs one integer per test unit, in unit order")
    units = []
    bounds = [*starts, len(table)]
    for k, unit in enumerate(ids):
        block = table[bounds[k] : bounds[k + 1]]
        _check_increasing(block[:, 1], Path(path), "cycle", line_of=lambda i, o=bounds[k]: lines[o + i])
        units.append(Unit(str(unit), split, block[:, 1], block[:, 2:], 0.0 if end_ruls is None else float(end_ruls[k])))
    return units


def read_rul_file(path: str | os.PathLike) -> np.ndarray:
    """``RUL_FDxxx.txt``: one non-negative integer per line (blank lines ignored)."""
    path = require_path(path, "C-MAPSS RUL file")
    values = []
    with open(path) as f:
        for n, text in enumerate(f, 1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) != 1 or not fields[0].isdigit():
                raise DataError(f"{path}, line {n}: expected one non-negative integer (the unit's remaining cycles), "
                                f"got {text.strip()!r}")
            values.append(int(fields[0]))
    if not values:
        raise DataError(f"{path}: no values")
    return np.asarray(values, dtype=np.float64)


def read_cmapss(root: str | os.PathLike, subset: str = "FD001") -> tuple[list[Unit], list[Unit]]:
    """Training units (run to failure) and test units (truncated, RUL from the RUL file)."""
    root = Path(root)
    train = cmapss_units(root / f"train_{subset}.txt", "train")
    end_ruls = read_rul_file(root / f"RUL_{subset}.txt")
    test = cmapss_units(root / f"test_{subset}.txt", "test", end_ruls)
    return train, test


# ---------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------


class UnitWindows(Dataset):
    """Windows ``features[e - L + 1 : e + 1]`` of prepared units, indexed by (unit, end row).

    Windows that start before the unit's first row repeat that row (edge padding:
    short C-MAPSS test units). Items by stage: forecast ``{x, y}``, detect
    ``{x, label}``, rul ``{x, rul}`` (rul divided by the cap).
    """

    def __init__(self, units: list[PreparedUnit], ends: list[tuple[int, int]], stage: str, lookback: int,
                 horizon: int, n_targets: int, rul_cap: float) -> None:
        self.features = [torch.as_tensor(u.features) for u in units]
        self.rul = [torch.as_tensor(u.rul, dtype=torch.float32) / rul_cap for u in units]
        self.anomaly = [torch.as_tensor(u.anomaly) for u in units]
        self.ends = ends
        self.stage, self.lookback, self.horizon, self.n_targets = stage, lookback, horizon, n_targets

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        u, e = self.ends[i]
        feats = self.features[u]
        x = window_at(feats, e, self.lookback)
        if self.stage == "forecast":
            return {"x": x, "y": feats[e + 1 : e + 1 + self.horizon, -self.n_targets :]}
        if self.stage == "detect":
            return {"x": x[:, -self.n_targets :], "label": self.anomaly[u][e]}
        return {"x": x, "rul": self.rul[u][e]}


def window_at(features: torch.Tensor, end: int, length: int) -> torch.Tensor:
    """Rows ``end - length + 1 .. end`` of ``features`` (T, C), the first row repeated before the start."""
    start = end - length + 1
    if start >= 0:
        return features[start : end + 1]
    pad = features[:1].expand(-start, -1)
    return torch.cat([pad, features[: end + 1]], dim=0)


# ---------------------------------------------------------------------------------------
# data module
# ---------------------------------------------------------------------------------------


class RULDataModule(SplitLoaders, BaseDataModule):
    """Windows of laser or C-MAPSS units for one stage of the maintenance framework."""

    dim_names: ClassVar[tuple[str, ...]] = ("n_channels", "n_targets", "lookback", "horizon", "rul_cap")

    def __init__(
        self,
        path: str,
        format: Literal["laser", "cmapss"] = "cmapss",
        stage: Stage = "rul",
        subset: str = "FD001",
        lookback: int = 30,
        horizon: int = 1,
        rul_cap: int = 125,
        anomaly_rul: int | None = None,
        channels: list[str] | None = None,
        targets: list[str] | None = None,
        scaler: Literal["minmax", "standard"] = "minmax",
        val_fraction: float = 0.2,
        split_seed: int = 0,
        stride: int = 1,
        eval_stride: int = 1,
        rul_eval: Literal["last", "all"] = "last",
        baseline_points: int = 5,
        synth: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if format not in ("laser", "cmapss"):
            raise ConfigError(f"format must be 'laser' or 'cmapss', got {format!r}")
        if stage not in ("forecast", "detect", "rul"):
            raise ConfigError(f"stage must be 'forecast', 'detect' or 'rul', got {stage!r}")
        if lookback < 1 or horizon < 1 or stride < 1 or eval_stride < 1 or baseline_points < 1:
            raise ConfigError("lookback, horizon, stride, eval_stride and baseline_points must be >= 1")
        if rul_cap <= 0 or (anomaly_rul is not None and anomaly_rul <= 0):
            raise ConfigError(f"rul_cap and anomaly_rul must be positive, got {rul_cap} and {anomaly_rul}")
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if rul_eval not in ("last", "all"):
            raise ConfigError(f"rul_eval must be 'last' or 'all', got {rul_eval!r}")
        self.path, self.format, self.stage, self.subset = path, format, stage, subset
        self.lookback, self.horizon, self.rul_cap = lookback, horizon, rul_cap
        self.anomaly_rul = anomaly_rul if anomaly_rul is not None else rul_cap
        self.requested_channels, self.requested_targets = channels, targets
        self.scaler_kind, self.val_fraction, self.split_seed = scaler, val_fraction, split_seed
        self.stride, self.eval_stride, self.rul_eval = stride, eval_stride, rul_eval
        self.baseline_points, self.synth = baseline_points, synth
        self.channels: list[str] = []  # model inputs, targets last
        self.targets: list[str] = []
        self.units: dict[str, list[PreparedUnit]] = {}
        self.scaler: MinMaxScaler | StandardScaler | None = None
        self.datasets: dict[str, UnitWindows] = {}

    # -- sizes ------------------------------------------------------------------------
    @property
    def dims(self) -> dict[str, int]:
        self._load()
        n_targets = len(self.targets)
        if self.stage == "forecast":
            return {"n_channels": len(self.channels), "n_targets": n_targets, "lookback": self.lookback,
                    "horizon": self.horizon}
        if self.stage == "detect":
            return {"n_channels": n_targets, "lookback": self.lookback}
        return {"n_channels": len(self.channels), "lookback": self.lookback, "rul_cap": self.rul_cap}

    # -- reading and scaling ----------------------------------------------------------
    def prepare_data(self) -> None:
        self._ensure_files()

    def _ensure_files(self) -> None:
        needed = ["devices.csv"] if self.format == "laser" else [
            f"{kind}_{self.subset}.txt" for kind in ("train", "test", "RUL")]
        root = Path(self.path)
        if all((root / name).exists() for name in needed):
            return
        if self.synth:
            get_synth(f"rul-{self.format}")(out=self.path, **({"subset": self.subset} if self.format == "cmapss" else {}))
            return
        raise DataError(f"{root}: missing {', '.join(n for n in needed if not (root / n).exists())} -- bring the "
                        f"{self.format} files, or write a synthetic set with `seqzoo data synth rul-{self.format} "
                        f"--out {root}` (or set data.synth: true)")

    def _load(self) -> None:
        if self.units:
            return
        self._ensure_files()
        if self.format == "laser":
            raw, columns = read_laser(self.path)
            raw = [self._relative_current(u, columns) for u in raw]
        else:
            train, test = read_cmapss(self.path, self.subset)
            raw = self._split_train_val(train) + test
            columns = list(CMAPSS_COLUMNS[2:])
        by_split = {s: [u for u in raw if u.split == s] for s in SPLITS}
        for split, units in by_split.items():
            if not units:
                raise DataError(f"{self.path}: no {split} units -- every split needs at least one unit")
        train_rows = np.concatenate([u.values for u in by_split["train"]])
        self.channels, self.targets = self._select_channels(columns, train_rows)
        idx = [columns.index(c) for c in self.channels]
        self.scaler = MinMaxScaler() if self.scaler_kind == "minmax" else StandardScaler()
        self.scaler.fit(train_rows[:, idx])
        for split, units in by_split.items():
            self.units[split] = [self._prepare(u, idx) for u in units]

    def _relative_current(self, unit: Unit, columns: list[str]) -> Unit:
        """Current as its relative rise I/I0 - 1 (I0: mean of the first samples)."""
        values = unit.values.copy()
        j = columns.index("current_mA")
        i0 = values[: self.baseline_points, j].mean()
        values[:, j] = values[:, j] / i0 - 1.0
        return Unit(unit.unit_id, unit.split, unit.time, values, unit.end_rul)

    def _split_train_val(self, train: list[Unit]) -> list[Unit]:
        """Validation units drawn from the training file, by unit (seeded)."""
        if len(train) < 2:
            raise DataError(f"{self.path}: train_{self.subset}.txt needs at least 2 units to hold some out for validation")
        rng = np.random.default_rng(self.split_seed)
        n_val = min(len(train) - 1, max(1, int(round(self.val_fraction * len(train)))))
        val = set(rng.choice(len(train), size=n_val, replace=False).tolist())
        return [Unit(u.unit_id, "val" if k in val else "train", u.time, u.values, u.end_rul) for k, u in enumerate(train)]

    def _select_channels(self, columns: list[str], train_rows: np.ndarray) -> tuple[list[str], list[str]]:
        """Input channels (targets last) and forecast targets; constant-on-train channels are dropped."""
        for name, wanted in (("channels", self.requested_channels), ("targets", self.requested_targets)):
            unknown = [c for c in wanted or () if c not in columns]
            if unknown:
                raise ConfigError(f"data.{name}: unknown channel(s) {unknown}; the {self.format} data has {columns}")
        if self.requested_channels:
            chosen = list(self.requested_channels)
        else:
            spread = train_rows.std(axis=0)
            chosen = [c for c, s in zip(columns, spread) if s > 1e-8 * max(1.0, abs(train_rows[:, columns.index(c)].mean()))]
        default_targets = ["current_mA"] if self.format == "laser" else chosen
        targets = list(self.requested_targets or default_targets)
        missing = [t for t in targets if t not in chosen]
        if missing:
            raise ConfigError(f"data.targets {missing} must be among the input channels {chosen}")
        return [c for c in chosen if c not in targets] + targets, targets

    def _prepare(self, unit: Unit, idx: list[int]) -> PreparedUnit:
        features = self.scaler.transform(unit.values[:, idx]).astype(np.float32)
        rul, anomaly = rul_labels(unit.time, unit.end_rul, self.rul_cap, self.anomaly_rul)
        return PreparedUnit(unit.unit_id, unit.time, features, rul, anomaly)

    # -- windows ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load()
        for split in SPLITS:
            ends = self.window_ends(split)
            if not ends:
                raise DataError(
                    f"{self.path}: the {split} split has no {self.stage} windows (lookback {self.lookback}"
                    + (f", horizon {self.horizon}" if self.stage == "forecast" else "")
                    + ") -- use shorter windows or longer unit histories")
            self.datasets[split] = UnitWindows(self.units[split], ends, self.stage, self.lookback, self.horizon,
                                               len(self.targets), self.rul_cap)

    def window_ends(self, split: str) -> list[tuple[int, int]]:
        """(unit index, end row) of every window of ``split`` for this stage."""
        step = self.stride if split == "train" else self.eval_stride
        ends = []
        for k, u in enumerate(self.units[split]):
            T, L = len(u.time), self.lookback
            if self.stage == "forecast":
                ends += [(k, e) for e in range(L - 1, T - self.horizon, step)]
            elif self.stage == "detect":
                wanted = (0,) if split == "train" else (0, 1)
                ends += [(k, e) for e in range(L - 1, T, step) if u.anomaly[e] in wanted]
            elif split == "test" and self.rul_eval == "last":
                if not np.isnan(u.rul[-1]):
                    ends.append((k, T - 1))
            else:
                ends += [(k, e) for e in range(L - 1, T, step) if not np.isnan(u.rul[e])]
        return ends

    def unscale(self, values: np.ndarray, channels: list[str]) -> np.ndarray:
        """Scaled values (..., len(channels)) back to the reader's units (the laser current as I/I0 - 1)."""
        idx = [self.channels.index(c) for c in channels]
        if isinstance(self.scaler, MinMaxScaler):
            return (values - self.scaler.min_[idx]) / self.scaler.scale_[idx]
        return values * self.scaler.scale_[idx] + self.scaler.mean_[idx]

    def train_labels(self) -> np.ndarray:
        """Labels of the training windows (capped RUL / cap, or anomaly flags)."""
        ds = self.datasets["train"]
        labels = {"rul": ds.rul, "detect": ds.anomaly}[self.stage]  # what UnitWindows items read
        return np.asarray([float(labels[u][e]) for u, e in ds.ends])


# ---------------------------------------------------------------------------------------
# synthetic data in both formats
# ---------------------------------------------------------------------------------------


@register_synth("rul-laser")
def synth_laser(
    out: str,
    n_devices: int = 40,
    fail_fraction: float = 0.6,
    test_hours: float = 6000.0,
    step_hours: float = 20.0,
    threshold: float = 0.2,
    min_life_hours: float = 1500.0,
    noise: float = 0.002,
    seed: int = 0,
) -> Path:
    """Laser aging test: drive current I(t) = I0 (1 + a t^b) + noise at constant power.

    A failing device gets a lifetime L in [min_life_hours, test_hours] and an exponent
    b in [0.6, 1.8], so a = threshold / L^b, and its record stops when the measured
    current first reaches (1 + threshold) I0 (default +20 %); the others stay below
    60 % of the threshold until the test ends (censored). Splits 60/20/20 by device.
    """
    if n_devices < 5 or not 0 < fail_fraction <= 1 or not min_life_hours < test_hours:
        raise ConfigError("need n_devices >= 5, 0 < fail_fraction <= 1 and min_life_hours < test_hours")
    rng = np.random.default_rng(seed)
    n_fail = max(1, int(round(fail_fraction * n_devices)))
    failing = rng.permutation(np.r_[np.ones(n_fail, bool), np.zeros(n_devices - n_fail, bool)])
    splits = _device_splits(failing, rng)
    rows, files = [], {}
    for k in range(n_devices):
        device = f"L{k + 1:03d}"
        i0, power, b = rng.uniform(40, 80), rng.uniform(5, 10), rng.uniform(0.6, 1.8)
        if failing[k]:
            a = threshold / rng.uniform(min_life_hours, test_hours) ** b
            t = np.arange(0.0, 1.5 * test_hours, step_hours)
        else:
            a = rng.uniform(0.05, 0.6) * threshold / test_hours**b
            t = np.arange(0.0, test_hours + step_hours / 2, step_hours)
        current = i0 * (1 + a * t**b) + rng.normal(0, noise * i0, len(t))
        if failing[k]:
            crossed = np.flatnonzero(current >= (1 + threshold) * i0)
            stop = crossed[0] + 1 if len(crossed) else len(t)
            t, current = t[:stop], current[:stop]
        frame = pd.DataFrame({
            "time_h": t,
            "current_mA": current,
            "power_mW": power + rng.normal(0, 0.01 * power, len(t)),
            "temp_C": 25 + 0.05 * (current - i0) + rng.normal(0, 0.05, len(t)),
        })
        files[device] = frame
        rows.append({"device_id": device, "split": splits[k], "failed": int(failing[k])})
    with atomic_dir(out) as tmp:
        pd.DataFrame(rows).to_csv(tmp / "devices.csv", index=False)
        for device, frame in files.items():
            frame.to_csv(tmp / f"{device}.csv", index=False, float_format="%.5f")
    return Path(out)


def _device_splits(failing: np.ndarray, rng: np.random.Generator) -> list[str]:
    """60/20/20 train/val/test by device, stratified by failing/censored."""
    splits = [""] * len(failing)
    for group in (np.flatnonzero(failing), np.flatnonzero(~failing)):
        group = rng.permutation(group)
        n_val = int(round(0.2 * len(group)))
        n_test = int(round(0.2 * len(group)))
        for j, k in enumerate(group):
            splits[k] = "val" if j < n_val else "test" if j < n_val + n_test else "train"
    for split in SPLITS:  # small sets: make sure every split has a device
        if split not in splits:
            donor = max(SPLITS, key=splits.count)
            splits[splits.index(donor)] = split
    return splits


# FD001-like sensor levels: (name, mean, noise std, degradation direction); 0 = constant.
_CMAPSS_SENSORS = (
    ("s1", 518.67, 0.0, 0), ("s2", 642.68, 0.50, 1), ("s3", 1590.5, 6.1, 1), ("s4", 1408.9, 9.0, 1),
    ("s5", 14.62, 0.0, 0), ("s6", 21.61, 0.0015, 0), ("s7", 553.37, 0.88, -1), ("s8", 2388.1, 0.07, 1),
    ("s9", 9065.2, 22.1, 1), ("s10", 1.3, 0.0, 0), ("s11", 47.54, 0.27, 1), ("s12", 521.41, 0.74, -1),
    ("s13", 2388.1, 0.07, 1), ("s14", 8143.8, 19.1, 1), ("s15", 8.442, 0.038, 1), ("s16", 0.03, 0.0, 0),
    ("s17", 393.2, 1.55, 1), ("s18", 2388.0, 0.0, 0), ("s19", 100.0, 0.0, 0), ("s20", 38.82, 0.18, -1),
    ("s21", 23.29, 0.11, -1),
)


@register_synth("rul-cmapss")
def synth_cmapss(
    out: str,
    subset: str = "FD001",
    n_train_units: int = 60,
    n_test_units: int = 30,
    min_life: int = 128,
    max_life: int = 362,
    seed: int = 0,
) -> Path:
    """C-MAPSS-format engines: sensors drift with a hidden wear w(c) = w0 + (1 - w0)(c/L)^beta.

    Each unit has its own lifetime L in [min_life, max_life] cycles, initial wear w0
    and wear exponent beta; 14 sensors move with the wear (in FD001's directions, by
    a few noise standard deviations at failure), seven stay constant. Test units stop
    at a random cycle; RUL_<subset>.txt holds their remaining cycles.
    """
    if n_train_units < 2 or n_test_units < 1 or not 31 < min_life <= max_life:
        raise ConfigError("need n_train_units >= 2, n_test_units >= 1 and 31 < min_life <= max_life")
    rng = np.random.default_rng(seed)

    def engine(unit: int, life: int, stop: int) -> list[str]:
        w0, beta = rng.uniform(0.0, 0.15), rng.uniform(1.5, 3.0)
        offsets = rng.normal(0, 0.5, len(_CMAPSS_SENSORS))
        lines = []
        for c in range(1, stop + 1):
            wear = w0 + (1 - w0) * (c / life) ** beta
            ops = (rng.normal(0, 0.002), rng.normal(0, 0.0003), 100.0)
            sensors = [mean + sign * 6.0 * std * wear + std * (offsets[j] + rng.normal())
                       for j, (_, mean, std, sign) in enumerate(_CMAPSS_SENSORS)]
            lines.append(f"{unit} {c} {ops[0]:.4f} {ops[1]:.4f} {ops[2]:.1f} " + " ".join(f"{v:.4f}" for v in sensors))
        return lines

    train_lines, test_lines, ruls = [], [], []
    for unit in range(1, n_train_units + 1):
        life = int(rng.integers(min_life, max_life + 1))
        train_lines += engine(unit, life, life)
    for unit in range(1, n_test_units + 1):
        life = int(rng.integers(min_life, max_life + 1))
        stop = int(rng.integers(31, max(32, int(0.95 * life))))
        test_lines += engine(unit, life, stop)
        ruls.append(life - stop)
    with atomic_dir(out) as tmp:
        (tmp / f"train_{subset}.txt").write_text("\n".join(train_lines) + "\n")
        (tmp / f"test_{subset}.txt").write_text("\n".join(test_lines) + "\n")
        (tmp / f"RUL_{subset}.txt").write_text("\n".join(map(str, ruls)) + "\n")
    return Path(out)

"""The RUL DataModule: windows of laser or C-MAPSS units for one stage of the maintenance framework."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, SplitLoaders, get_synth
from seqzoo.datasets.rul.reader import (
    CMAPSS_COLUMNS,
    PreparedUnit,
    SPLITS,
    Unit,
    read_cmapss,
    read_laser,
    rul_labels,
)
from seqzoo.errors import ConfigError, DataError


Stage = Literal["forecast", "detect", "rul"]


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

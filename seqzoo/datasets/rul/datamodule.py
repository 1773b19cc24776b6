"""The RUL DataModule: windows of laser or C-MAPSS units for one stage of the maintenance framework."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, fitted_scaler
from seqzoo.datasets.rul.reader import (
    CMAPSS_INFORMATIVE,
    LASER_OPTIONAL,
    PreparedUnit,
    SPLITS,
    Unit,
    read_cmapss,
    read_laser,
    rul_labels,
)
from seqzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)


Stage = Literal["forecast", "detect", "rul"]


def _saved_scaler(state: dict):
    """The input scaler of a checkpoint's transform (min-max or standard), nothing refitted."""
    if state["scaler"] == "standard":
        return fitted_scaler(state["mean"], state["scale"])
    scaler = MinMaxScaler()
    scaler.fit(np.asarray([state["data_min"], state["data_max"]], dtype=np.float64))
    return scaler


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




class RULDataModule(BaseDataModule):
    """Windows of laser or C-MAPSS units for one stage of the maintenance framework.

    ``dims`` are the same for every stage (n_channels, n_targets, lookback, horizon,
    rul_cap): the stage decides the batches (see :class:`UnitWindows`), and each task
    takes the sizes it needs (the detector reads the ``n_targets`` target channels).

    Args:
        path: the data folder (laser: ``devices.csv`` + device files; C-MAPSS: the FDxxx text files).
        format: ``laser`` or ``cmapss``.
        stage: ``forecast``, ``detect`` or ``rul`` (the items' keys; see the package docstring).
        subset: C-MAPSS subset (``FD001``...).
        lookback: window length L.
        horizon: forecast length H (stage ``forecast``).
        rul_cap: cap of the piecewise-linear RUL target.
        anomaly_rul: a window is anomalous when its RUL is below this (default ``rul_cap``).
        channels: input channels, by column name (default: laser ``power_mW, temp_C, current_mA``;
            C-MAPSS the 14 informative sensors of the literature, ``CMAPSS_INFORMATIVE``). A C-MAPSS
            file with a header line may have any subset of sensors (and settings): list the ones to use.
        constant_channels: channels constant over the training units carry nothing: ``keep`` feeds
            them (each named in a warning, with the ``data.channels`` list without them), ``error``
            refuses them. (The model's input width is fixed by ``channels`` before the data is read,
            so leaving them out is done there.)
        targets: the degradation channels forecast and reconstructed (default: laser ``current_mA``,
            C-MAPSS every input channel); they are placed last.
        scaler: ``minmax`` or ``standard``, fitted on the training units.
        val_fraction: C-MAPSS training units held out for validation.
        split_seed: seed of that hold-out.
        stride: rows between training windows.
        eval_stride: rows between validation/test windows.
        rul_eval: RUL test points: ``last`` cycle of each unit (C-MAPSS) or ``all`` labelled rows.
        short_units: test units with fewer rows than ``lookback`` (C-MAPSS has some at the
            literature's windows): ``pad`` repeats their first row before it (edge padding, the usual
            protocol; the count is logged), ``drop`` leaves them out of the test set (logged), ``error``
            refuses them, naming the units.
        baseline_points: laser samples averaged into I0 for the relative current.
        prepare: what writes the data when it is missing (``synth:rul-laser``, ``synth:rul-cmapss``).
        synth: removed; set ``prepare: synth:rul-<format>`` (a ConfigError says so).
        batch_size: training batch size.
        num_workers: DataLoader workers.
    """

    data_name = "RUL data"

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
        short_units: Literal["pad", "drop", "error"] = "pad",
        constant_channels: Literal["keep", "error"] = "keep",
        baseline_points: int = 5,
        prepare: str | None = None,
        synth: bool | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        if synth is not None:
            raise ConfigError(f"data.synth was removed: write missing data with data.prepare: synth:rul-{format}")
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare)
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
        if short_units not in ("pad", "drop", "error"):
            raise ConfigError(f"short_units must be 'pad', 'drop' or 'error', got {short_units!r}")
        if constant_channels not in ("keep", "error"):
            raise ConfigError(f"constant_channels must be 'keep' or 'error', got {constant_channels!r}")
        if scaler not in ("minmax", "standard"):
            raise ConfigError(f"scaler must be 'minmax' or 'standard', got {scaler!r}")
        self.path, self.format, self.stage, self.subset = path, format, stage, subset
        self.lookback, self.horizon, self.rul_cap = lookback, horizon, rul_cap
        self.anomaly_rul = anomaly_rul if anomaly_rul is not None else rul_cap
        self.scaler_kind, self.val_fraction, self.split_seed = scaler, val_fraction, split_seed
        self.stride, self.eval_stride, self.rul_eval = stride, eval_stride, rul_eval
        self.baseline_points, self.short_units = baseline_points, short_units
        self.constant_channels = constant_channels
        self.channels, self.targets = self._select_channels(channels, targets)  # model inputs, targets last
        self.units: dict[str, list[PreparedUnit]] = {}  # filled by setup: scaled units with labels, per split
        self.scaler: MinMaxScaler | StandardScaler | None = None

    @property
    def dims(self) -> dict[str, int]:
        return {"n_channels": len(self.channels), "n_targets": len(self.targets), "lookback": self.lookback,
                "horizon": self.horizon, "rul_cap": self.rul_cap}

    @property
    def target_key(self) -> str:
        return {"forecast": "y", "detect": "label", "rul": "rul"}[self.stage]

    # -- reading and scaling ----------------------------------------------------------
    def needed_files(self) -> list[str]:
        if self.format == "laser":
            return ["devices.csv"]
        return [f"{kind}_{self.subset}.txt" for kind in ("train", "test", "RUL")]

    def data_ready(self) -> bool:
        return all((Path(self.path) / name).is_file() for name in self.needed_files())

    def prepare_options(self) -> dict:
        return {"subset": self.subset} if self.prepare == "synth:rul-cmapss" else {}

    def missing_data_hint(self) -> str:
        missing = [n for n in self.needed_files() if not (Path(self.path) / n).exists()]
        return (f"missing {', '.join(missing)} -- bring the {self.format} files, or write a synthetic set with "
                f"`seqzoo data synth rul-{self.format} --out {self.path}` (or set data.prepare: synth:rul-{self.format})")

    def read_units(self) -> None:
        """Read, split and scale the units into ``self.units`` (called by ``setup``)."""
        if self.units:
            return
        self.require_data()
        if self.format == "laser":
            raw, columns = read_laser(self.path)
            raw = [self._relative_current(u, columns) for u in raw]
        else:
            train, test, columns = read_cmapss(self.path, self.subset)
            raw = self._split_train_val(train) + test
        missing = [c for c in self.channels if c not in columns]
        if missing:
            raise DataError(f"{self.path}: the {self.format} data has no channel(s) {missing} (it has {columns}); "
                            f"set data.channels to the ones to use"
                            + (" (and data.targets)" if any(c in self.targets for c in missing) else ""))
        by_split = {s: [u for u in raw if u.split == s] for s in SPLITS}
        for split, units in by_split.items():
            if not units:
                raise DataError(f"{self.path}: no {split} units -- every split needs at least one unit")
        idx = [columns.index(c) for c in self.channels]
        fitted = self.fitted_transform
        if fitted:  # a trained model's scaler and channels: nothing refitted on this data
            if list(fitted["channels"]) != list(self.channels) or fitted["scaler"] != self.scaler_kind:
                raise DataError(f"{self.path}: channels {self.channels} ({self.scaler_kind} scaler) differ from the "
                                f"trained model's {fitted['channels']} ({fitted['scaler']})")
            self.scaler = _saved_scaler(fitted)
        else:
            train_rows = np.concatenate([u.values for u in by_split["train"]])
            self._check_constant(train_rows[:, idx])
            self.scaler = MinMaxScaler() if self.scaler_kind == "minmax" else StandardScaler()
            self.scaler.fit(train_rows[:, idx])
        for split, units in by_split.items():
            self.units[split] = [self._prepare(u, idx) for u in units]

    def _check_constant(self, train_rows: np.ndarray) -> None:
        """Name the input channels that never change over the training rows (``constant_channels``)."""
        constant = [c for c, spread in zip(self.channels, np.ptp(train_rows, axis=0)) if spread == 0]
        if not constant:
            return
        kept = [c for c in self.channels if c not in constant]
        what = (f"{self.path}: channel(s) {', '.join(constant)} are constant over the training units and carry "
                f"no information" + (f"; data.channels: [{', '.join(kept)}] leaves them out" if kept else ""))
        if self.constant_channels == "error" or not kept:
            raise DataError(f"{what}" + ("" if kept else "; every channel is constant: choose others in data.channels"))
        log.warning("%s (kept: data.constant_channels=keep feeds them as constant inputs)", what)

    def transform_state(self) -> dict:
        """The fitted input scaler with its channels, and the RUL cap: predicting on other
        engines reuses them."""
        if self.scaler is None:
            return dict(self.fitted_transform or {})
        state = {"kind": "rul", "format": self.format, "channels": list(self.channels), "targets": list(self.targets),
                 "scaler": self.scaler_kind, "rul_cap": self.rul_cap, "lookback": self.lookback,
                 "time_column": "cycle" if self.format == "cmapss" else "time_h"}
        if self.scaler_kind == "minmax":
            state.update(data_min=self.scaler.data_min_.tolist(), data_max=self.scaler.data_max_.tolist())
        else:
            state.update(mean=self.scaler.mean_.tolist(), scale=self.scaler.scale_.tolist())
        return state

    def prediction_table(self, predictions) -> pd.DataFrame | None:
        """Stage ``rul``: one row per test window -- the unit, its time (C-MAPSS cycle or laser
        hours) at the window's end, the predicted RUL and the true RUL (capped at ``rul_cap``,
        the label the model was trained on), in cycles or hours."""
        if self.stage != "rul":
            return None
        ds, units = self.datasets["test"], self.units["test"]
        pred = torch.as_tensor(predictions).detach().double().cpu().reshape(-1).numpy()
        if len(pred) != len(ds.ends):
            raise ValueError(f"expected {len(ds.ends)} predictions (one per test window), got {len(pred)}")
        time_column = "cycle" if self.format == "cmapss" else "time_h"
        return pd.DataFrame({
            "unit": [units[u].unit_id for u, _ in ds.ends],
            time_column: [units[u].time[e] for u, e in ds.ends],
            "rul_predicted": pred,
            f"rul_true_capped_{self.rul_cap:g}": [float(units[u].rul[e]) for u, e in ds.ends],
        })

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

    def _select_channels(self, channels: list[str] | None, targets: list[str] | None) -> tuple[list[str], list[str]]:
        """Input channels (targets last) and forecast targets, from the arguments alone."""
        known = [*LASER_OPTIONAL, "current_mA"]
        for name, wanted in (("channels", channels), ("targets", targets)):
            unknown = [c for c in wanted or () if c not in known]
            if unknown and self.format == "laser":  # C-MAPSS files may name their own sensors (checked on reading)
                raise ConfigError(f"data.{name}: unknown channel(s) {unknown}; {self.format} data has {known}")
        chosen = list(channels or (CMAPSS_INFORMATIVE if self.format == "cmapss" else known))
        if not chosen:
            raise ConfigError("data.channels is empty")
        targets = list(targets or (["current_mA"] if self.format == "laser" else chosen))
        missing = [c for c in targets if c not in chosen]
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
        self.read_units()
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
        return self._handle_short_units(split, ends)

    def _handle_short_units(self, split: str, ends: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Apply ``short_units`` to windows that start before their unit's first row."""
        short = [(k, e) for k, e in ends if e + 1 < self.lookback]
        if not short:
            return ends
        names = sorted({self.units[split][k].unit_id for k, _ in short})
        shown = ", ".join(str(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        what = (f"{self.path}: {len(names)} {split} unit(s) have fewer than lookback={self.lookback} rows "
                f"before their evaluated cycle (units {shown})")
        if self.short_units == "error":
            raise DataError(f"{what}; set data.short_units: pad (edge padding) or drop, or a shorter lookback")
        if self.short_units == "drop":
            log.warning("%s: left out (data.short_units=drop)", what)
            return [ke for ke in ends if ke[1] + 1 >= self.lookback]
        log.warning("%s: their windows repeat the first row (edge padding, data.short_units=pad)", what)
        return ends

    def unscale(self, values: np.ndarray, channels: list[str]) -> np.ndarray:
        """Scaled values (..., len(channels)) back to the reader's units (the laser current as I/I0 - 1)."""
        idx = [self.channels.index(c) for c in channels]
        if isinstance(self.scaler, MinMaxScaler):
            return (values - self.scaler.min_[idx]) / self.scaler.scale_[idx]
        return values * self.scaler.scale_[idx] + self.scaler.mean_[idx]

"""The pain DataModule: windows of subject recordings, split by subject."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, class_table, fitted_scaler, read_csv_checked
from seqzoo.datasets.pain.reader import SPLITS, SUBJECT_PREFIX, read_subject, segment_windows, subject_files
from seqzoo.errors import ConfigError, DataError


class WindowTensors(Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, subjects: np.ndarray) -> None:
        self.x, self.y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
        self.subjects = subjects

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "label": self.y[i]}


class PainDataModule(BaseDataModule):
    """Windows of subject recordings, split by subject.

    Args:
        path: the folder of ``subject_<id>.csv`` files.
        n_channels: channel columns in every subject file (``seqzoo data synth pain``: 16 by default;
            BasicMotions: 6); not needed when ``channels`` lists them. Checked in ``setup``.
        split: ``loso`` (leave one subject out) or ``fixed``.
        fold: the LOSO test subject's index in sorted id order.
        loso_val_subjects: subjects after the test one that validate (LOSO).
        train_subjects: fixed split: training subject ids (else ``subjects.csv``).
        val_subjects: fixed split: validation subject ids.
        test_subjects: fixed split: test subject ids.
        label_column: the per-frame label column.
        channels: channel columns to use, in this order (default: every channel column, file order).
        n_classes: classes of the label (labels 0..n_classes-1).
        sample_rate: frames per second.
        window_seconds: window length in seconds.
        stride_seconds: step between windows in seconds.
        prepare: what writes the folder when it is missing (``synth:pain``, ``aeon-basicmotions``).
        synth: removed; set ``prepare: synth:pain`` (a ConfigError says so).
        batch_size: training batch size.
        num_workers: DataLoader workers.
    """

    target_key = "label"
    data_name = "pain data"

    def __init__(
        self,
        path: str,
        n_channels: int | None = None,
        split: Literal["loso", "fixed"] = "loso",
        fold: int = 0,
        loso_val_subjects: int = 1,
        train_subjects: list[str] | None = None,
        val_subjects: list[str] | None = None,
        test_subjects: list[str] | None = None,
        label_column: str = "protective",
        channels: list[str] | None = None,
        n_classes: int = 2,
        sample_rate: float = 60.0,
        window_seconds: float = 3.0,
        stride_seconds: float = 1.5,
        prepare: str | None = None,
        synth: bool | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        if synth is not None:
            raise ConfigError("data.synth was removed: write missing data with data.prepare: synth:pain")
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare)
        if split not in ("loso", "fixed"):
            raise ConfigError(f"split must be 'loso' or 'fixed', got {split!r}")
        if fold < 0 or loso_val_subjects < 1:
            raise ConfigError(f"fold must be >= 0 and loso_val_subjects >= 1, got {fold} and {loso_val_subjects}")
        self.window = int(round(window_seconds * sample_rate))
        self.stride = int(round(stride_seconds * sample_rate))
        if self.window < 1 or self.stride < 1:
            raise ConfigError(f"window_seconds and stride_seconds must span at least one frame at {sample_rate} Hz")
        if n_classes < 2:
            raise ConfigError(f"n_classes must be >= 2, got {n_classes}")
        if channels is not None and n_channels is not None and n_channels != len(channels):
            raise ConfigError(f"data.n_channels is {n_channels} but data.channels lists {len(channels)}")
        if channels is None and n_channels is None:
            raise ConfigError("set data.n_channels (the channel columns of the subject files) or data.channels")
        if n_channels is not None and n_channels < 1:
            raise ConfigError(f"n_channels must be >= 1, got {n_channels}")
        self.path, self.split, self.fold, self.loso_val_subjects = path, split, fold, loso_val_subjects
        self.lists = {"train": train_subjects, "val": val_subjects, "test": test_subjects}
        self.label_column, self.requested_channels = label_column, channels
        self.n_channels = len(channels) if channels is not None else n_channels
        self.n_classes = n_classes
        self.channels: list[str] = []
        self.subjects: dict[str, list[str]] = {}
        self.scaler: StandardScaler | None = None

    @property
    def dims(self) -> dict[str, int]:
        return {"n_channels": self.n_channels, "seq_len": self.window, "n_classes": self.n_classes}

    def fold_count(self) -> int | None:
        """Leave-one-subject-out: one fold per subject file (None for a fixed split)."""
        if self.split != "loso":
            return None
        self.require_data()
        return len(list(Path(self.path).glob(f"{SUBJECT_PREFIX}*.csv")))

    def data_ready(self) -> bool:
        root = Path(self.path)
        return root.is_dir() and any(root.glob(f"{SUBJECT_PREFIX}*.csv"))

    def missing_data_hint(self) -> str:
        return (f"no {SUBJECT_PREFIX}<id>.csv files -- bring EmoPain-layout subject files, or write a synthetic "
                "set with `seqzoo data synth pain --out DIR` (or set data.prepare: synth:pain)")

    # -- subjects ---------------------------------------------------------------------
    def subject_split(self, ids: list[str]) -> dict[str, list[str]]:
        """Subject ids per split, by the configured protocol."""
        if self.split == "loso":
            if len(ids) < 2 + self.loso_val_subjects:
                raise DataError(f"{self.path}: leave-one-subject-out needs at least {2 + self.loso_val_subjects} "
                                f"subjects (1 test, {self.loso_val_subjects} validation, 1 training), found {len(ids)}")
            if self.fold >= len(ids):
                raise ConfigError(f"data.fold {self.fold} is out of range: {len(ids)} subjects give folds 0..{len(ids) - 1}")
            order = ids[self.fold :] + ids[: self.fold]
            return {"test": order[:1], "val": order[1 : 1 + self.loso_val_subjects],
                    "train": sorted(order[1 + self.loso_val_subjects :])}
        lists = dict(self.lists)
        if not any(lists.values()):
            lists = self._read_split_file()
        for split, members in lists.items():
            if not members:
                raise ConfigError(f"fixed split: no {split} subjects (set data.{split}_subjects or write subjects.csv)")
            unknown = [s for s in members if s not in ids]
            if unknown:
                raise DataError(f"{self.path}: {split} subject(s) {unknown} have no {SUBJECT_PREFIX}<id>.csv file")
        seen: dict[str, str] = {}
        for split, members in lists.items():
            for s in members:
                if s in seen:
                    raise ConfigError(f"subject {s!r} is in both the {seen[s]} and the {split} split")
                seen[s] = split
        return {split: list(lists[split]) for split in SPLITS}

    def _read_split_file(self) -> dict[str, list[str]]:
        path = Path(self.path) / "subjects.csv"
        if not path.exists():
            raise ConfigError(f"split 'fixed' needs data.train_subjects/val_subjects/test_subjects or {path}")
        table = read_csv_checked(path, required=("subject_id", "split"), what="subject split file", dtype=str)
        lists: dict[str, list[str]] = {s: [] for s in SPLITS}
        for i, row in enumerate(table.itertuples(index=False)):
            split = str(row.split).strip()
            if split not in SPLITS:
                raise DataError(f"{path}, line {i + 2}, column 'split': expected one of {', '.join(SPLITS)}, got {split!r}")
            lists[split].append(str(row.subject_id).strip())
        return lists

    # -- reading ----------------------------------------------------------------------
    def _read(self) -> dict[str, pd.DataFrame]:
        self.require_data()
        files = subject_files(self.path)
        self.subjects = self.subject_split(list(files))
        frames: dict[str, pd.DataFrame] = {}
        first = None
        for sid in [s for split in SPLITS for s in self.subjects[split]]:
            frame, channels = read_subject(files[sid], self.label_column, self.requested_channels)
            if not self.channels:
                self.channels, first = channels, files[sid]
            elif channels != self.channels:
                raise DataError(f"{files[sid]}: channels {channels} differ from {first}'s {self.channels}")
            frames[sid] = frame
        if len(self.channels) != self.n_channels:
            raise DataError(f"{first}: has {len(self.channels)} channel columns, but data.n_channels is "
                            f"{self.n_channels}; set data.n_channels: {len(self.channels)}")
        top = max(int(f["label"].max()) for f in frames.values())
        if top >= self.n_classes:
            sid = next(s for s, f in frames.items() if f["label"].max() == top)
            raise DataError(f"{files[sid]}: label {top} does not fit data.n_classes = {self.n_classes}")
        fitted = self.fitted_transform
        if fitted:  # a trained model's scaler and channels: nothing refitted
            if list(fitted["channels"]) != list(self.channels):
                raise DataError(f"{self.path}: channels {self.channels} differ from the trained model's {fitted['channels']}")
            self.scaler = fitted_scaler(fitted["mean"], fitted["scale"])
        else:
            self.scaler = StandardScaler().fit(np.concatenate([frames[s][self.channels].to_numpy()
                                                               for s in self.subjects["train"]]))
        return frames

    def transform_state(self) -> dict:
        if self.scaler is None or not hasattr(self.scaler, "mean_"):
            return dict(self.fitted_transform or {})
        return {"kind": "pain", "channels": list(self.channels), "mean": self.scaler.mean_.tolist(),
                "scale": self.scaler.scale_.tolist(), "window": self.window, "label_column": self.label_column,
                "class_names": self.class_names}

    @property
    def class_names(self) -> list[str]:
        return [f"{self.label_column}={k}" for k in range(self.n_classes)]

    def prediction_table(self, predictions) -> pd.DataFrame:
        """One row per test window: subject, the predicted class and probability, the true class,
        and every class's probability."""
        ds = self.datasets["test"]
        return class_table(predictions, self.class_names, np.asarray(ds.y), {"subject": np.asarray(ds.subjects)})

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frames = self._read()
        for split in SPLITS:
            xs, ys, who = [], [], []
            for sid in self.subjects[split]:
                frame = frames[sid]
                values = self.scaler.transform(frame[self.channels].to_numpy()).astype(np.float32)
                starts, labels = segment_windows(frame["exercise"].to_numpy(), frame["label"].to_numpy(),
                                                 self.window, self.stride)
                xs += [values[s : s + self.window] for s in starts]
                ys.append(labels)
                who += [sid] * len(starts)
            if not xs:
                raise DataError(f"{self.path}: the {split} subjects {self.subjects[split]} give no window of "
                                f"{self.window} frames inside one exercise segment")
            self.datasets[split] = WindowTensors(np.stack(xs), np.concatenate(ys), np.asarray(who))

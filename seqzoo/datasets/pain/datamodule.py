"""The pain DataModule: windows of subject recordings, split by subject."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, SplitLoaders, materialise, read_csv_checked
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


class PainDataModule(SplitLoaders, BaseDataModule):
    """Windows of subject recordings, split by subject."""

    dim_names: ClassVar[tuple[str, ...]] = ("n_channels", "seq_len", "n_classes")

    def __init__(
        self,
        path: str,
        split: Literal["loso", "fixed"] = "loso",
        fold: int = 0,
        loso_val_subjects: int = 1,
        train_subjects: list[str] | None = None,
        val_subjects: list[str] | None = None,
        test_subjects: list[str] | None = None,
        label_column: str = "protective",
        channels: list[str] | None = None,
        n_classes: int | None = None,
        sample_rate: float = 60.0,
        window_seconds: float = 3.0,
        stride_seconds: float = 1.5,
        synth: bool = False,
        prepare: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if split not in ("loso", "fixed"):
            raise ConfigError(f"split must be 'loso' or 'fixed', got {split!r}")
        if fold < 0 or loso_val_subjects < 1:
            raise ConfigError(f"fold must be >= 0 and loso_val_subjects >= 1, got {fold} and {loso_val_subjects}")
        self.window = int(round(window_seconds * sample_rate))
        self.stride = int(round(stride_seconds * sample_rate))
        if self.window < 1 or self.stride < 1:
            raise ConfigError(f"window_seconds and stride_seconds must span at least one frame at {sample_rate} Hz")
        if n_classes is not None and n_classes < 2:
            raise ConfigError(f"n_classes must be >= 2, got {n_classes}")
        if synth and prepare:
            raise ConfigError("set either data.synth or data.prepare, not both")
        self.path, self.split, self.fold, self.loso_val_subjects = path, split, fold, loso_val_subjects
        self.lists = {"train": train_subjects, "val": val_subjects, "test": test_subjects}
        self.label_column, self.requested_channels = label_column, channels
        self.requested_classes, self.synth, self.prepare = n_classes, synth, prepare
        self.channels: list[str] = []
        self.n_classes = 0
        self.subjects: dict[str, list[str]] = {}
        self.scaler: StandardScaler | None = None
        self.datasets: dict[str, WindowTensors] = {}

    @property
    def dims(self) -> dict[str, int]:
        self._load()
        return {"n_channels": len(self.channels), "seq_len": self.window, "n_classes": self.n_classes}

    def prepare_data(self) -> None:
        self._ensure_files()

    def _ensure_files(self) -> None:
        root = Path(self.path)
        if root.is_dir() and any(root.glob(f"{SUBJECT_PREFIX}*.csv")):
            return
        if self.synth or self.prepare:
            materialise("synth:pain" if self.synth else self.prepare, self.path)

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
    def _load(self) -> None:
        if self.subjects:
            return
        self._ensure_files()
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
        top = max(int(f["label"].max()) for f in frames.values())
        if self.requested_classes is not None and top >= self.requested_classes:
            sid = next(s for s, f in frames.items() if f["label"].max() == top)
            raise DataError(f"{files[sid]}: label {top} does not fit data.n_classes = {self.requested_classes}")
        self.n_classes = self.requested_classes or max(2, top + 1)
        self.scaler = StandardScaler().fit(np.concatenate([frames[s][self.channels].to_numpy() for s in self.subjects["train"]]))
        self._frames = frames

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load()
        for split in SPLITS:
            xs, ys, who = [], [], []
            for sid in self.subjects[split]:
                frame = self._frames[sid]
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

    def train_class_counts(self) -> np.ndarray:
        self.setup()
        return np.bincount(self.datasets["train"].y.numpy(), minlength=self.n_classes)

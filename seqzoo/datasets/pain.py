"""Protective-behaviour detection data in the EmoPain layout, and a real motion sanity set.

Format: a folder of ``subject_<id>.csv``, one per subject, one row per frame (60 Hz):
the channel columns (motion-capture joint angles and energies, sEMG envelopes: every
column but the two below, numeric), ``exercise`` (what the subject is doing; windows
never cross a change of exercise) and a per-frame label (``protective``: 0/1; any
non-negative integers for a multi-class set). An optional ``subjects.csv``
(``subject_id, split``) fixes a subject split.

Windows of ``window_seconds`` (3 s = 180 frames) every ``stride_seconds`` inside each
exercise segment; a window's label is the majority of its frames (a tie goes to the
higher label, i.e. protective). Protocol: leave-one-subject-out (``split="loso"``: the
test subject is ``fold`` in sorted id order, the next ``loso_val_subjects`` subjects in
that order validate) or a fixed subject split (``split="fixed"``: the id lists, else
``subjects.csv``). Never split by window. A per-channel StandardScaler is fitted on the
training subjects' frames; the training windows' class counts weight the task's loss.

``seqzoo data prepare aeon-basicmotions`` writes UEA BasicMotions (real accelerometer
and gyroscope recordings, 4 activities, 10 Hz) in this layout for the multi-class mode:
each of its 80 series becomes one "subject" (the set has no subject ids), its own
train/test split becomes the fixed split (``subjects.csv``) with 2 training series per
class held out for validation, and the activity code is the label column ``activity``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from seqzoo.datasets.base import (
    BaseDataModule,
    SplitLoaders,
    atomic_dir,
    check_numeric,
    materialise,
    read_csv_checked,
    register_prepare,
    register_synth,
    require_path,
)
from seqzoo.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
SUBJECT_PREFIX = "subject_"


def subject_files(root: str | os.PathLike) -> dict[str, Path]:
    """``{subject id: path}`` of every ``subject_<id>.csv`` in ``root``, sorted by id."""
    root = require_path(root, "pain data folder")
    files = {p.stem[len(SUBJECT_PREFIX):]: p for p in root.glob(f"{SUBJECT_PREFIX}*.csv")}
    if not files:
        raise DataError(f"{root}: no {SUBJECT_PREFIX}<id>.csv files -- write a synthetic set with "
                        "`seqzoo data synth pain --out DIR` (or set data.synth: true)")
    return dict(sorted(files.items()))


def read_subject(path: Path, label_column: str, channels: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One subject's frames: checked channels (file order unless given), exercise, integer labels."""
    frame = read_csv_checked(path, required=("exercise", label_column), what="subject file")
    found = [c for c in frame.columns if c not in ("exercise", label_column)]
    if channels is None:
        channels = found
    missing = [c for c in channels if c not in found]
    if missing:
        raise DataError(f"{path}: missing channel column(s) {missing}; found {found}")
    if not channels:
        raise DataError(f"{path}: no channel columns besides 'exercise' and {label_column!r}")
    values = check_numeric(frame, [*channels, label_column], path)
    labels = values[label_column].to_numpy()
    bad = (labels != np.round(labels)) | (labels < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}, line {i + 2}, column {label_column!r}: expected a non-negative integer label, "
                        f"got {labels[i]:g}")
    out = values[channels].copy()
    out["exercise"] = frame["exercise"].astype(str).to_numpy()
    out["label"] = labels.astype(np.int64)
    return out, channels


def segment_windows(exercise: np.ndarray, labels: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Start rows and majority labels of windows that stay inside one exercise segment."""
    change = np.flatnonzero(exercise[1:] != exercise[:-1]) + 1
    bounds = np.r_[0, change, len(exercise)]
    starts, window_labels = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for s in range(lo, hi - window + 1, stride):
            counts = np.bincount(labels[s : s + window])
            starts.append(s)
            window_labels.append(len(counts) - 1 - int(np.argmax(counts[::-1])))  # ties -> higher label
    return np.asarray(starts, dtype=np.int64), np.asarray(window_labels, dtype=np.int64)


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


# ---------------------------------------------------------------------------------------
# synthetic EmoPain-format recordings
# ---------------------------------------------------------------------------------------

EXERCISES = ("sit_to_stand", "forward_trunk_flexion", "full_trunk_flexion", "standing_on_one_leg")


@register_synth("pain")
def synth_pain(
    out: str,
    n_subjects: int = 8,
    minutes: float = 2.0,
    sample_rate: float = 60.0,
    n_joints: int = 6,
    n_emg: int = 4,
    protective_fraction: float = 0.3,
    seed: int = 0,
) -> Path:
    """EmoPain-style recordings: joint angles, energies and sEMG envelopes during exercises,
    with protective episodes of 3-8 s (guarding: smaller and slower movements of the
    trunk joints, muscle co-contraction); subjects differ in range of motion, muscle
    gain and baseline, so the cue is relative. Also writes a fixed split (subjects.csv)."""
    if n_subjects < 3 or minutes <= 0 or not 0 < protective_fraction < 1 or n_joints < 2 or n_emg < 1:
        raise ConfigError("need n_subjects >= 3, minutes > 0, 0 < protective_fraction < 1, n_joints >= 2, n_emg >= 1")
    rng = np.random.default_rng(seed)
    profiles = {e: (rng.uniform(0.15, 0.35), rng.uniform(10, 45, n_joints)) for e in EXERCISES}
    n_frames = int(minutes * 60 * sample_rate)
    files = {}
    for k in range(n_subjects):
        files[f"S{k + 1:02d}"] = _subject_recording(rng, profiles, n_frames, sample_rate, n_joints, n_emg,
                                                    protective_fraction)
    ids = list(files)
    n_test = n_val = max(1, int(round(0.2 * n_subjects)))
    split = ["train"] * (n_subjects - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    with atomic_dir(out) as tmp:
        for sid, frame in files.items():
            frame.to_csv(tmp / f"{SUBJECT_PREFIX}{sid}.csv", index=False, float_format="%.4f")
        pd.DataFrame({"subject_id": ids, "split": split}).to_csv(tmp / "subjects.csv", index=False)
    return Path(out)


def _subject_recording(rng, profiles, n_frames, rate, n_joints, n_emg, fraction) -> pd.DataFrame:
    rom, gain, base = rng.uniform(0.7, 1.3, n_joints), rng.uniform(0.7, 1.3), rng.uniform(0.1, 0.3)
    offsets, phases = rng.normal(0, 10, n_joints), rng.uniform(0, np.pi, n_joints)
    exercise = np.empty(n_frames, dtype=object)
    guard = np.zeros(n_frames)
    t = 0
    while t < n_frames:  # exercise segments of 15-30 s, protective episodes inside them
        length = int(rng.uniform(15, 30) * rate)
        exercise[t : t + length] = EXERCISES[rng.integers(len(EXERCISES))]
        s = t + int(rng.exponential(4.0 * (1 - fraction) / fraction) * rate)
        while s < min(t + length, n_frames):
            episode = int(rng.uniform(3, 8) * rate)
            guard[s : min(s + episode, t + length)] = 1.0
            s += episode + int(rng.exponential(5.5 * (1 - fraction) / fraction) * rate)
        t += length
    ramp = np.ones(int(0.5 * rate)) / int(0.5 * rate)
    g = np.convolve(guard, ramp, mode="same")  # smooth onsets and offsets
    freq = np.array([profiles[e][0] for e in exercise]) * (1 - 0.4 * g)
    phase = 2 * np.pi * np.cumsum(freq) / rate
    amplitude = np.stack([profiles[e][1] for e in exercise])  # (T, J)
    trunk = np.arange(n_joints) < n_joints // 2
    shrink = 1 - 0.5 * g[:, None] * trunk[None, :]
    angles = offsets + rom * amplitude * shrink * np.sin(phase[:, None] + phases) + rng.normal(0, 0.5, (n_frames, n_joints))
    velocity = np.gradient(angles, axis=0) * rate * np.pi / 180
    energy = 0.5 * velocity**2
    drive = np.abs(velocity[:, np.arange(n_emg) % n_joints])
    raw = base + gain * (0.3 * drive / (drive.max(axis=0) + 1e-9) + 0.6 * g[:, None]) + np.abs(rng.normal(0, 0.05, drive.shape))
    window = np.ones(int(0.25 * rate)) / int(0.25 * rate)
    emg = np.stack([np.convolve(raw[:, m], window, mode="same") for m in range(n_emg)], axis=1)
    columns = {f"angle_{j + 1}": angles[:, j] for j in range(n_joints)}
    columns |= {f"energy_{j + 1}": energy[:, j] for j in range(n_joints)}
    columns |= {f"emg_{m + 1}": emg[:, m] for m in range(n_emg)}
    return pd.DataFrame({**columns, "exercise": exercise, "protective": guard.astype(int)})


# ---------------------------------------------------------------------------------------
# real wearable motion: UEA BasicMotions from aeon
# ---------------------------------------------------------------------------------------

BASICMOTIONS_CHANNELS = ("acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z")


@register_prepare("aeon-basicmotions")
def prepare_basicmotions(out: str, val_per_class: int = 2, seed: int = 0) -> Path:
    """UEA BasicMotions (aeon, BSD-3): 80 real 10 s accelerometer + gyroscope recordings at
    10 Hz of 4 activities, one subject file per series, its train/test split kept."""
    try:
        from aeon.datasets import load_classification
    except ImportError:
        raise DataError("aeon-basicmotions needs the aeon package: pip install 'seqzoo[data]' (or pip install aeon)") from None
    parts = {split: load_classification("BasicMotions", split=split) for split in ("train", "test")}
    names = sorted({str(label) for _, labels in parts.values() for label in labels})
    code = {name: i for i, name in enumerate(names)}
    rng = np.random.default_rng(seed)
    train_labels = np.asarray([str(v) for v in parts["train"][1]])
    held = {int(i) for name in names for i in rng.permutation(np.flatnonzero(train_labels == name))[:val_per_class]}
    files, rows = {}, []
    for split, (series, labels) in parts.items():
        if series.ndim != 3 or series.shape[1] != len(BASICMOTIONS_CHANNELS):
            raise DataError(f"aeon returned BasicMotions {split} with shape {series.shape}; expected (n, 6, length)")
        for i, (x, label) in enumerate(zip(series, labels)):
            sid = f"{split[:2]}{i + 1:02d}"
            frame = pd.DataFrame(x.T, columns=list(BASICMOTIONS_CHANNELS))
            frame["exercise"] = "basicmotions"
            frame["activity"] = code[str(label)]
            files[sid] = frame
            rows.append({"subject_id": sid, "split": "val" if split == "train" and i in held else split})
    with atomic_dir(out) as tmp:
        for sid, frame in files.items():
            frame.to_csv(tmp / f"{SUBJECT_PREFIX}{sid}.csv", index=False, float_format="%.6g")
        pd.DataFrame(rows).to_csv(tmp / "subjects.csv", index=False)
        pd.DataFrame({"code": range(len(names)), "activity": names}).to_csv(tmp / "classes.csv", index=False)
    return Path(out)

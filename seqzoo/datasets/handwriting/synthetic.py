"""IMU-like pen signals from trajectories, and synthetic OnHW folds from stroke templates (``seqzoo data synth handwriting``)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import atomic_dir, register_synth
from seqzoo.datasets.handwriting.reader import SAMPLE_RATE
from seqzoo.errors import ConfigError


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

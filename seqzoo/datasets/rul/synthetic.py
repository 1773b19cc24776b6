"""Synthetic laser aging tests and C-MAPSS-format engines (``seqzoo data synth rul-laser|rul-cmapss``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqzoo.datasets.base import atomic_dir, register_synth
from seqzoo.datasets.rul.reader import SPLITS
from seqzoo.errors import ConfigError


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

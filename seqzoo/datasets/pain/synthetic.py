"""Synthetic EmoPain-format recordings (``seqzoo data synth pain``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqzoo.datasets.base import atomic_dir, register_synth
from seqzoo.datasets.pain.reader import SUBJECT_PREFIX
from seqzoo.errors import ConfigError


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

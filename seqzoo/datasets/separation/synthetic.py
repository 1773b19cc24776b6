"""Synthetic voiced sources mixed in the WSJ0-2mix layout (``seqzoo data synth separation``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqzoo.datasets.base import atomic_dir, register_synth
from seqzoo.datasets.separation.reader import (
    Utterance,
    _require_soundfile,
    normalise_active,
    write_mixture_split,
)
from seqzoo.errors import ConfigError


# (F1, F2, F3) in Hz of a few vowels (Peterson & Barney 1952, adult male averages).
VOWEL_FORMANTS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
                  (570, 840, 2410), (660, 1720, 2410), (490, 1350, 1690), (440, 1020, 2240))


@register_synth("separation")
def synth_separation(out: str, n_train: int = 200, n_val: int = 20, n_test: int = 20, sample_rate: int = 8000,
                     seconds: float = 2.0, seed: int = 0) -> Path:
    """Synthetic two-speaker mixtures in the WSJ0-2mix layout: voiced harmonic sources.

    A "speaker" is a pitch range, a vocal-tract scale and a speaking rate; an utterance
    is a glottal harmonic series with a gliding f0, shaped by three formant resonances
    moving between vowels, under a syllable envelope with pauses. Every mixture pairs a
    low- and a high-pitched voice; test speakers are disjoint from training/validation
    speakers. Mixed at relative levels in [-5, 5] dB.
    """
    _require_soundfile()
    if min(n_train, n_val, n_test) < 1:
        raise ConfigError("n_train, n_val and n_test must be >= 1")
    rng = np.random.default_rng(seed)
    speakers = [_synth_speaker(i, rng) for i in range(12)]
    seen, unseen = speakers[:8], speakers[8:]
    n = int(seconds * sample_rate)

    def pairs(pool, per_speaker, count):
        """``count`` mixtures of a low- and a high-pitched voice (in random order)."""
        utts = [Utterance(spk["name"], f"u{j}", normalise_active(_synth_utterance(spk, n, sample_rate, rng)))
                for spk in pool for j in range(per_speaker)]
        low = [u for u in utts if int(u.speaker[-2:]) % 2 == 0]
        high = [u for u in utts if int(u.speaker[-2:]) % 2 == 1]
        out = []
        for _ in range(count):
            a, b = low[rng.integers(len(low))], high[rng.integers(len(high))]
            out.append((a, b) if rng.random() < 0.5 else (b, a))
        return [(a, b, float(rng.uniform(-5, 5))) for a, b in out]

    out_path = Path(out)
    with atomic_dir(out_path) as tmp:
        write_mixture_split(tmp, "tr", pairs(seen, max(2, n_train // 8), n_train), sample_rate)
        write_mixture_split(tmp, "cv", pairs(seen, 2, n_val), sample_rate)
        write_mixture_split(tmp, "tt", pairs(unseen, 3, n_test), sample_rate)
    return out_path


def _synth_speaker(i: int, rng: np.random.Generator) -> dict:
    low = i % 2 == 0  # alternate low- and high-pitched voices
    return {"name": f"synth{i:02d}", "f0": rng.uniform(85, 140) if low else rng.uniform(170, 260),
            "tract": rng.uniform(0.75, 0.9) if low else rng.uniform(1.2, 1.4), "rate": rng.uniform(3.0, 5.0)}


def _synth_utterance(spk: dict, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sample_rate
    # f0: slow declination plus a random glide per syllable
    f0 = spk["f0"] * (1.0 - 0.1 * t / t[-1] + 0.06 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    # formant tracks: a random vowel per syllable, smoothed between syllables
    syllable = sample_rate / spk["rate"]
    n_syl = int(np.ceil(n / syllable)) + 1
    targets = np.array([VOWEL_FORMANTS[k] for k in rng.integers(len(VOWEL_FORMANTS), size=n_syl)]) * spk["tract"]
    pos = np.arange(n) / syllable
    formants = np.stack([np.interp(pos, np.arange(n_syl), targets[:, j]) for j in range(3)], axis=1)
    signal = np.zeros(n)
    for h in range(1, int(sample_rate / 2 / f0.min())):
        freq = h * f0
        alive = freq < sample_rate / 2 - 100
        gain = sum(1.0 / (1.0 + ((freq - formants[:, j]) / (60.0 + 30 * j)) ** 2) for j in range(3)) / h**0.5
        signal += alive * gain * np.sin(h * phase)
    # syllable envelope: raised-cosine bumps, some syllables silent (pauses)
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * (pos % 1.0))
    envelope *= (rng.random(n_syl) > 0.2)[np.minimum(pos.astype(int), n_syl - 1)]
    return (signal * envelope + 0.003 * rng.standard_normal(n)).astype(np.float32)

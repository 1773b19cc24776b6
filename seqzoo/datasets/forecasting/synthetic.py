"""Synthetic ETT-like hourly data (``seqzoo data synth forecasting``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqzoo.datasets.base import atomic_dir, register_synth
from seqzoo.errors import ConfigError


ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL")


@register_synth("forecasting")
def synth_forecasting(out: str, n_rows: int = 4000, seed: int = 0, name: str = "ett_synthetic.csv") -> Path:
    """An ETT-like hourly CSV: daily and weekly seasonality, trend, AR(1) noise; ``OT`` is a
    lagged mix of the loads plus its own cycle, so multivariate inputs help."""
    if n_rows < 10:
        raise ConfigError(f"n_rows must be >= 10, got {n_rows}")
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows, dtype=np.float64)
    cols = {}
    for j, col in enumerate(ETT_COLUMNS):
        daily = rng.uniform(1.0, 3.0) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi))
        weekly = rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * t / 168 + rng.uniform(0, 2 * np.pi))
        trend = rng.uniform(-2, 2) * t / n_rows
        noise = _ar1(n_rows, 0.7, 0.3, rng)
        cols[col] = 5 + j + daily + weekly + trend + noise
    loads = np.stack(list(cols.values()), axis=1)
    lagged = np.roll(loads, 3, axis=0)
    lagged[:3] = loads[:3]
    cols["OT"] = (
        20 + lagged @ rng.uniform(0.2, 0.6, size=len(ETT_COLUMNS)) / 2
        + 2.0 * np.sin(2 * np.pi * t / 24 + 1.0)
        + _ar1(n_rows, 0.8, 0.2, rng)
    )
    frame = pd.DataFrame(cols)
    frame.insert(0, "date", pd.date_range("2016-07-01", periods=n_rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"))
    with atomic_dir(out) as tmp:
        frame.to_csv(tmp / name, index=False, float_format="%.4f")
    return Path(out) / name


def _ar1(n: int, phi: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    eps = rng.normal(0, sigma, size=n)
    x = np.empty(n)
    x[0] = eps[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return x

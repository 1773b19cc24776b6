"""Synthetic oriented-bar images (``seqzoo data synth vision``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqzoo.datasets.base import register_synth
from seqzoo.datasets.vision.reader import ImageSet, _write
from seqzoo.errors import ConfigError


BAR_ORIENTATIONS = ("horizontal", "vertical", "diagonal", "antidiagonal")


@register_synth("vision")
def synth_vision(
    out: str,
    n_train: int = 480,
    n_test: int = 160,
    image_size: int = 16,
    n_classes: int = 4,
    channels: int = 3,
    noise: float = 0.15,
    format: str = "cifar",
    seed: int = 0,
) -> Path:
    """Oriented bars: the class is the bar's orientation; position, colour and noise vary."""
    if not 1 <= n_classes <= len(BAR_ORIENTATIONS):
        raise ConfigError(f"n_classes must be in 1..{len(BAR_ORIENTATIONS)}, got {n_classes}")
    if image_size < 4 or channels not in (1, 3) or min(n_train, n_test) < n_classes:
        raise ConfigError("image_size must be >= 4, channels 1 or 3, and each split needs >= n_classes images")
    rng = np.random.default_rng(seed)

    def make(n: int) -> ImageSet:
        labels = np.arange(n) % n_classes
        rng.shuffle(labels)
        yy, xx = np.mgrid[:image_size, :image_size]
        images = np.empty((n, channels, image_size, image_size), dtype=np.uint8)
        for i, label in enumerate(labels):
            offset = rng.integers(-image_size // 3, image_size // 3 + 1)
            coord = {"horizontal": yy, "vertical": xx, "diagonal": xx - yy, "antidiagonal": xx + yy - image_size + 1}
            bar = np.abs(coord[BAR_ORIENTATIONS[label]] - offset) <= 1
            colour = rng.uniform(0.5, 1.0, size=(channels, 1, 1))
            image = bar[None] * colour + rng.normal(0.0, noise, size=(channels, image_size, image_size))
            images[i] = np.clip(image * 255.0, 0, 255).astype(np.uint8)
        return ImageSet(images, labels)

    splits = {"train": make(n_train), "test": make(n_test)}
    return _write(out, splits, list(BAR_ORIENTATIONS[:n_classes]), format, {"source": "seqzoo synthetic bars",
                                                                             "seed": seed})

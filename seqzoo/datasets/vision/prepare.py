"""Real 8x8 digits from scikit-learn (``seqzoo data prepare sklearn-digits``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqzoo.datasets.base import register_prepare
from seqzoo.datasets.vision.reader import ImageSet, SPLITS, _write, stratified_split
from seqzoo.errors import DataError


@register_prepare("sklearn-digits")
def prepare_sklearn_digits(out: str, format: str = "imagefolder", seed: int = 0) -> Path:
    """Real 8x8 handwritten digits shipped in scikit-learn (1,797 images, 10 classes).

    Pixel values 0..16 are scaled to 0..255; the split is stratified 70/10/20 with a
    fixed seed (1,258 / 180 / 359 images).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("sklearn-digits needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    pool = ImageSet(images, digits.target)
    splits = {name: pool.subset(idx) for name, idx in zip(SPLITS, stratified_split(pool.labels, (0.7, 0.1, 0.2), seed))}
    source = {"source": "scikit-learn load_digits (UCI optical recognition of handwritten digits)", "seed": seed}
    return _write(out, splits, [str(d) for d in range(10)], format, source)

"""UEA BasicMotions from aeon in the subject layout (``seqzoo data prepare aeon-basicmotions``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqzoo.datasets.base import atomic_dir, register_prepare
from seqzoo.datasets.pain.reader import SUBJECT_PREFIX
from seqzoo.errors import DataError


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

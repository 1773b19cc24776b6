"""The vision DataModule: normalised train/val/test images."""

from __future__ import annotations

from pathlib import Path
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, class_table
from seqzoo.datasets.vision.reader import (
    Format,
    ImageSet,
    SPLITS,
    detect_format,
    read_cifar_batches,
    read_image_folder,
    resize_images,
    stratified_split,
)
from seqzoo.errors import ConfigError, DataError


class ImageDataset(Dataset):
    """``{"image": float (C, H, W) normalised, "label": int}`` items."""

    def __init__(self, data: ImageSet, mean: np.ndarray, std: np.ndarray) -> None:
        self.images = torch.as_tensor(data.images)
        self.labels = torch.as_tensor(data.labels)
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.images[i].to(torch.float32) / 255.0
        return {"image": (image - self.mean) / self.std, "label": self.labels[i]}


class VisionDataModule(BaseDataModule):
    """Train/val/test images from an ImageFolder tree or CIFAR-style batches.

    Args:
        path: the ImageFolder root or the folder of CIFAR-style batches.
        n_classes: classes in the dataset (class folders / label names); checked in ``setup``.
        image_size: side of the square images the model sees; images of another size are
            resized to it (bilinear, antialiased).
        in_chans: image channels (1 grey, 3 RGB); checked in ``setup``.
        format: ``imagefolder``, ``cifar`` or ``auto`` (from the files present).
        val_fraction: stratified fraction of train held out when there is no validation split on disk.
        split_seed: seed of that hold-out.
        normalise: per-channel mean/std normalisation with training statistics.
        batch_size: training batch size.
        num_workers: DataLoader workers.
        prepare: what writes ``path`` when it is missing (``sklearn-digits``, ``synth:vision``).
    """

    target_key = "label"
    data_name = "image dataset"

    def __init__(
        self,
        path: str,
        n_classes: int,
        image_size: int,
        in_chans: int = 3,
        format: Format = "auto",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        normalise: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        prepare: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare)
        if format not in ("auto", "imagefolder", "cifar"):
            raise ConfigError(f"format must be 'auto', 'imagefolder' or 'cifar', got {format!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if image_size < 1 or n_classes < 2 or in_chans not in (1, 3):
            raise ConfigError(f"need image_size >= 1, n_classes >= 2 and in_chans 1 or 3, got {image_size}, "
                              f"{n_classes} and {in_chans}")
        self.path, self.format, self.image_size = path, format, image_size
        self.n_classes, self.in_chans = n_classes, in_chans
        self.val_fraction, self.split_seed, self.normalise = val_fraction, split_seed, normalise
        self.class_names: list[str] = []
        self.splits: dict[str, ImageSet] = {}
        self.mean = self.std = None

    @property
    def dims(self) -> dict[str, int]:
        return {"n_classes": self.n_classes, "image_size": self.image_size, "in_chans": self.in_chans}

    def data_ready(self) -> bool:
        return Path(self.path).exists()

    def missing_data_hint(self) -> str:
        return ("put an ImageFolder tree (train/<class>/*.png ...) or CIFAR-style batches there, or write one with "
                "`seqzoo data prepare sklearn-digits --out DIR` or `seqzoo data synth vision --out DIR`")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load()
        fitted = self.fitted_transform
        if fitted:  # a trained model's statistics and class names: nothing refitted
            if list(fitted["class_names"]) != list(self.class_names):
                raise DataError(f"{self.path}: classes {self.class_names} differ from the trained model's "
                                f"{fitted['class_names']}")
            self.mean, self.std = np.asarray(fitted["mean"]), np.asarray(fitted["std"])
        elif self.normalise:
            train = self.splits["train"].images.astype(np.float64) / 255.0
            self.mean = train.mean(axis=(0, 2, 3))
            self.std = np.maximum(train.std(axis=(0, 2, 3)), 1e-6)
        else:
            self.mean, self.std = np.zeros(self.in_chans), np.ones(self.in_chans)
        self.datasets = {name: ImageDataset(data, self.mean, self.std) for name, data in self.splits.items()}

    def transform_state(self) -> dict:
        if not self.class_names or getattr(self, "mean", None) is None:
            return dict(self.fitted_transform or {})
        return {"kind": "vision", "class_names": list(self.class_names), "image_size": self.image_size,
                "in_chans": self.in_chans, "mean": np.asarray(self.mean).tolist(), "std": np.asarray(self.std).tolist(),
                "pixels": "uint8 / 255, then (x - mean) / std per channel"}

    def prediction_table(self, predictions) -> pd.DataFrame:
        """One row per test image: its index, the predicted class and probability, the true class,
        and every class's probability."""
        labels = self.datasets["test"].labels.numpy()
        return class_table(predictions, self.class_names, labels, {"image": np.arange(len(labels))})

    def _load(self) -> None:
        if self.splits:
            return
        self.require_data()
        root = Path(self.path)
        kind = detect_format(root) if self.format == "auto" else self.format
        if kind == "cifar":
            splits, names = read_cifar_batches(root)
            splits = {k: ImageSet(resize_images(v.images, self.image_size), v.labels) for k, v in splits.items()}
        else:
            splits, names = read_image_folder(root, image_size=self.image_size)
        if "val" not in splits:
            train_idx, val_idx = stratified_split(splits["train"].labels, (1 - self.val_fraction, self.val_fraction),
                                                  self.split_seed)
            splits["val"] = splits["train"].subset(val_idx)
            splits["train"] = splits["train"].subset(train_idx)
        for name in SPLITS:
            if len(splits[name]) == 0:
                raise DataError(f"{root}: the {name} split is empty")
        channels = splits["train"].images.shape[1]
        if channels != self.in_chans:
            raise DataError(f"{root}: images have {channels} channel(s), but data.in_chans is {self.in_chans}")
        if len(names) != self.n_classes:
            raise DataError(f"{root}: has {len(names)} classes ({', '.join(names[:10])}{'...' if len(names) > 10 else ''}), "
                            f"but data.n_classes is {self.n_classes}; set data.n_classes: {len(names)}")
        self.splits, self.class_names = splits, names

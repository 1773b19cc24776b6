"""The vision DataModule: normalised train/val/test images."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, SplitLoaders, materialise, require_path
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


class VisionDataModule(SplitLoaders, BaseDataModule):
    """Train/val/test images from an ImageFolder tree or CIFAR-style batches."""

    dim_names: ClassVar[tuple[str, ...]] = ("n_classes", "image_size", "in_chans")

    def __init__(
        self,
        path: str,
        format: Format = "auto",
        image_size: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        normalize: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        prepare: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if format not in ("auto", "imagefolder", "cifar"):
            raise ConfigError(f"format must be 'auto', 'imagefolder' or 'cifar', got {format!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if image_size is not None and image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {image_size}")
        self.path, self.format, self.image_size = path, format, image_size
        self.val_fraction, self.split_seed, self.normalize = val_fraction, split_seed, normalize
        self.prepare = prepare
        self.class_names: list[str] = []
        self.splits: dict[str, ImageSet] = {}
        self.mean = self.std = None
        self.datasets: dict[str, ImageDataset] = {}

    @property
    def dims(self) -> dict[str, int]:
        self._load()
        _, channels, height, width = self.splits["train"].images.shape
        return {"n_classes": len(self.class_names), "image_size": height, "in_chans": channels}

    def prepare_data(self) -> None:
        self._ensure_data()

    def setup(self, stage: str | None = None) -> None:
        self._load()
        if self.datasets:
            return
        if self.normalize:
            train = self.splits["train"].images.astype(np.float64) / 255.0
            self.mean = train.mean(axis=(0, 2, 3))
            self.std = np.maximum(train.std(axis=(0, 2, 3)), 1e-6)
        else:
            channels = self.splits["train"].images.shape[1]
            self.mean, self.std = np.zeros(channels), np.ones(channels)
        self.datasets = {name: ImageDataset(data, self.mean, self.std) for name, data in self.splits.items()}

    # -- reading ----------------------------------------------------------------------
    def _ensure_data(self) -> Path:
        root = Path(self.path)
        if root.exists():
            return root
        if self.prepare:
            materialise(self.prepare, root)
            return require_path(root, "image dataset", f"data source {self.prepare!r} did not write it")
        raise DataError(
            f"image dataset not found: {root} -- put an ImageFolder tree (train/<class>/*.png ...) or CIFAR-style "
            "batches there, or write one with `seqzoo data prepare sklearn-digits --out DIR` or "
            "`seqzoo data synth vision --out DIR`"
        )

    def _load(self) -> None:
        if self.splits:
            return
        root = self._ensure_data()
        kind = detect_format(root) if self.format == "auto" else self.format
        if kind == "cifar":
            splits, names = read_cifar_batches(root)
        else:
            splits, names = read_image_folder(root, image_size=self.image_size)
        if self.image_size is not None and kind == "cifar":
            splits = {k: ImageSet(resize_images(v.images, self.image_size), v.labels) for k, v in splits.items()}
        if "val" not in splits:
            train_idx, val_idx = stratified_split(splits["train"].labels, (1 - self.val_fraction, self.val_fraction),
                                                  self.split_seed)
            splits["val"] = splits["train"].subset(val_idx)
            splits["train"] = splits["train"].subset(train_idx)
        for name in SPLITS:
            if len(splits[name]) == 0:
                raise DataError(f"{root}: the {name} split is empty")
        height, width = splits["train"].images.shape[2:]
        if height != width:
            raise DataError(f"{root}: images are {height}x{width}; the patch embedding needs square images -- "
                            "set data.image_size to resize them")
        self.splits, self.class_names = splits, names

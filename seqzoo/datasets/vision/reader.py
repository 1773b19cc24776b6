"""The ImageFolder and CIFAR-batch layouts: readers, writers, stratified splits, resizing."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from seqzoo.datasets.base import atomic_dir, require_path
from seqzoo.errors import ConfigError, DataError


SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
Format = Literal["auto", "imagefolder", "cifar"]


class ImageSet:
    """Images as uint8 (N, C, H, W) with integer labels (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels.astype(np.int64)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index])

    def __len__(self) -> int:
        return len(self.labels)


def detect_format(root: Path) -> str:
    """'cifar' when pickled batches are there, else 'imagefolder'."""
    root = _cifar_root(root)
    if any((root / name).is_file() for name in ("batches.meta", "meta", "data_batch_1", "test_batch")):
        return "cifar"
    return "imagefolder"




def read_image_folder(root: str | Path, image_size: int | None = None) -> tuple[dict[str, ImageSet], list[str]]:
    """Images under ``root/{train,val,test}/<class>/`` (or ``root/<class>/``, split 70/10/20 here)."""
    root = require_path(root, "ImageFolder root")
    if (root / "train").is_dir():
        if not (root / "test").is_dir():
            raise DataError(f"{root}: has train/ but no test/ folder (expected train/, optional val/, test/)")
        names = _class_folders(root / "train")
        splits = {name: _read_split(root / name, names, image_size) for name in SPLITS if (root / name).is_dir()}
        _check_every_class(splits["train"], names, root / "train")
    else:
        names = _class_folders(root)
        pool = _read_split(root, names, image_size)
        _check_every_class(pool, names, root)
        parts = stratified_split(pool.labels, (0.7, 0.1, 0.2), seed=0)
        splits = {name: pool.subset(idx) for name, idx in zip(SPLITS, parts)}
    shapes = {name: s.images.shape[1:] for name, s in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{root}: image shapes differ between splits: {shapes}; set data.image_size to resize")
    return splits, names


def _check_every_class(data: ImageSet, names: list[str], folder: Path) -> None:
    counts = np.bincount(data.labels, minlength=len(names))
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{folder}: class folder(s) {empty} hold no images")


def _class_folders(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class name>/<images>)")
    return names


def _read_split(folder: Path, names: list[str], image_size: int | None) -> ImageSet:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    expected = None
    for label, name in enumerate(names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for file in files:
            try:
                with Image.open(file) as img:
                    img.load()
                    array = _to_array(img, image_size)
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"{file}: cannot be read as an image: {err}") from None
            if expected is None:
                expected = array.shape
            elif array.shape != expected:
                raise DataError(f"{file}: image is {_describe(array.shape)}, but earlier images are "
                                f"{_describe(expected)}; set data.image_size to resize them")
            images.append(array)
            labels.append(label)
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in names and not p.name.startswith("."))
    if unknown:
        raise DataError(f"{folder}: class folder(s) {unknown} do not exist in the training split ({names})")
    if not images:
        raise DataError(f"{folder}: no images found (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return ImageSet(np.stack(images), np.asarray(labels))


def _to_array(img, image_size: int | None) -> np.ndarray:
    """uint8 (C, H, W): greyscale stays one channel, everything else becomes RGB."""
    img = img.convert("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB")
    if image_size is not None and img.size != (image_size, image_size):
        from PIL import Image

        img = img.resize((image_size, image_size), Image.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _describe(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]} with {shape[0]} channel(s)"


def write_image_folder(out: Path, splits: dict[str, ImageSet], names: list[str]) -> None:
    from PIL import Image

    for split, data in splits.items():
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            folder = out / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(array).save(folder / f"{i:05d}.png")



CIFAR_FILES = {"train": ("data_batch_*", "train"), "val": ("val_batch",), "test": ("test_batch", "test")}


def read_cifar_batches(root: str | Path) -> tuple[dict[str, ImageSet], list[str]]:
    root = _cifar_root(require_path(root, "CIFAR batches folder"))
    meta_file = next((root / n for n in ("batches.meta", "meta") if (root / n).is_file()), None)
    meta = _unpickle(meta_file) if meta_file else {}
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in meta.get(b"label_names", meta.get(b"fine_label_names", []))]
    splits = {}
    for split, patterns in CIFAR_FILES.items():
        files = sorted({f for p in patterns for f in root.glob(p) if f.is_file()})
        if not files:
            if split == "val":
                continue
            raise DataError(f"{root}: no {split} batches (expected {' or '.join(patterns)})")
        parts = [_read_batch(f, meta) for f in files]
        splits[split] = ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    n_classes = int(max(int(s.labels.max()) for s in splits.values())) + 1
    if not names:
        names = [str(i) for i in range(n_classes)]
    elif n_classes > len(names):
        raise DataError(f"{meta_file}: {len(names)} label names, but the batches use label {n_classes - 1}")
    return splits, names


def _cifar_root(root: Path) -> Path:
    nested = root / "cifar-10-batches-py"
    return nested if nested.is_dir() else root


def _read_batch(path: Path, meta: dict) -> ImageSet:
    batch = _unpickle(path)
    data = batch.get(b"data")
    labels = batch.get(b"labels", batch.get(b"fine_labels"))
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        raise DataError(f"{path}: b'data' must be a 2-D uint8 array (N, C*H*W), got {type(data).__name__}"
                        + (f" of shape {data.shape}" if isinstance(data, np.ndarray) else ""))
    if labels is None:
        raise DataError(f"{path}: no b'labels' (or b'fine_labels') entry")
    labels = np.asarray(labels)
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {labels.size} labels")
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0):
        raise DataError(f"{path}: labels must be non-negative integers")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: b'data' must be uint8 pixel values, got {data.dtype}")
    shape = _cifar_shape(data.shape[1], meta, path)
    return ImageSet(data.reshape(len(data), *shape), labels)


def _cifar_shape(n_values: int, meta: dict, path: Path) -> tuple[int, int, int]:
    if b"image_shape" in meta:
        shape = tuple(int(x) for x in meta[b"image_shape"])
        if math.prod(shape) != n_values:
            raise DataError(f"{path}: rows have {n_values} values, but the meta's image_shape is {shape}")
        return shape
    if n_values == 3 * 32 * 32:
        return (3, 32, 32)
    for channels in (1, 3):
        side = math.isqrt(n_values // channels)
        if channels * side * side == n_values:
            return (channels, side, side)
    raise DataError(f"{path}: cannot infer the image shape of rows with {n_values} values; add image_shape "
                    "(C, H, W) to batches.meta")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only (a CIFAR batch holds nothing else)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data batch")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a CIFAR-style pickled batch: {err}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a CIFAR-style batch is a pickled dict, got {type(obj).__name__}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def write_cifar_batches(out: Path, splits: dict[str, ImageSet], names: list[str]) -> None:
    files = {"train": "data_batch_1", "val": "val_batch", "test": "test_batch"}
    shape = next(iter(splits.values())).images.shape[1:]
    for split, data in splits.items():
        batch = {b"batch_label": f"{split} batch".encode(), b"labels": [int(x) for x in data.labels],
                 b"data": data.images.reshape(len(data), -1).astype(np.uint8)}
        (out / files[split]).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [n.encode() for n in names], b"num_vis": int(np.prod(shape)),
            b"image_shape": [int(x) for x in shape]}
    (out / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))




def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Index arrays, one per fraction, with every class split in those proportions (fixed seed)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions) / np.sum(fractions)
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.round(bounds * len(idx)).astype(int)
        for part, lo, hi in zip(parts, np.concatenate([[0], cuts[:-1]]), cuts):
            part.append(idx[lo:hi])
    return [np.sort(np.concatenate(p)) for p in parts]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[2:] == (size, size):
        return images
    resized = torch.nn.functional.interpolate(torch.as_tensor(images, dtype=torch.float32), size=(size, size),
                                              mode="bilinear", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8).numpy()


def _write(out: str, splits: dict[str, ImageSet], names: list[str], format: str, source: dict) -> Path:
    if format not in ("imagefolder", "cifar"):
        raise ConfigError(f"format must be 'imagefolder' or 'cifar', got {format!r}")
    with atomic_dir(out) as tmp:
        (write_image_folder if format == "imagefolder" else write_cifar_batches)(tmp, splits, names)
        counts = {name: len(data) for name, data in splits.items()}
        (tmp / "dataset.json").write_text(json.dumps({**source, "format": format, "splits": counts}, indent=2) + "\n")
    return Path(out)

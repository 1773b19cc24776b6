"""Image classification data in the two public layouts vision papers use.

* **ImageFolder** (torchvision's layout): ``root/{train,val,test}/<class>/<image>``, or a
  single pool ``root/<class>/<image>`` that is split here. Class indices follow the sorted
  class folder names of the training split.
* **CIFAR-style pickled batches**: ``data_batch_*`` (or ``train``) and ``test_batch`` (or
  ``test``), each a pickle of ``{b"data": uint8 (N, C*H*W) channels-first rows,
  b"labels" | b"fine_labels": [N ints]}``, plus ``batches.meta`` (or ``meta``) with the
  label names. A ``val_batch`` is used when present. ``cifar-10-batches-py/`` inside
  ``root`` is found too. The image shape is (3, 32, 32) for 3,072 values, else read from
  the meta's ``image_shape`` or inferred as a square grey or RGB image.

Splits: a validation split missing on disk is carved from train, stratified by class with
a fixed seed; a single ImageFolder pool is split 70/10/20 the same way. Images are scaled
to [0, 1] and normalised per channel with the training split's mean and std.

``seqzoo data prepare sklearn-digits`` writes the real 1,797 8x8 handwritten digits that
ship with scikit-learn into ImageFolder PNGs with a fixed stratified 70/10/20 split;
``seqzoo data synth vision`` writes oriented-bar images (the class is the bar's
orientation; position, colour and noise vary) as CIFAR-style batches.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from seqzoo.datasets.base import (
    BaseDataModule,
    SplitLoaders,
    atomic_dir,
    materialise,
    register_prepare,
    register_synth,
    require_path,
)
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


def detect_format(root: Path) -> str:
    """'cifar' when pickled batches are there, else 'imagefolder'."""
    root = _cifar_root(root)
    if any((root / name).is_file() for name in ("batches.meta", "meta", "data_batch_1", "test_batch")):
        return "cifar"
    return "imagefolder"


# ---------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# CIFAR-style pickled batches
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# splits, resizing
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# real digits from scikit-learn, synthetic oriented bars
# ---------------------------------------------------------------------------------------


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

"""Vision data: both public layouts, the real digits, the synthetic bars, fixed stratified
splits, train-only normalisation, and clear errors for bad trees and batches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from seqzoo import DataError
from seqzoo.datasets.vision import (
    VisionDataModule,
    prepare_sklearn_digits,
    read_cifar_batches,
    read_image_folder,
    stratified_split,
    synth_vision,
)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return prepare_sklearn_digits(out=str(tmp_path_factory.mktemp("digits")))


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    return synth_vision(out=str(tmp_path_factory.mktemp("bars")), n_train=120, n_test=40, image_size=8)


def test_digits_are_written_as_an_image_folder_with_a_fixed_stratified_split(digits, tmp_path):
    splits, names = read_image_folder(digits)
    assert names == [str(d) for d in range(10)]
    assert {k: len(v) for k, v in splits.items()} == {"train": 1258, "val": 180, "test": 359}
    assert splits["train"].images.shape[1:] == (1, 8, 8) and splits["train"].images.dtype == np.uint8
    for data in splits.values():  # every class in every split, in proportion
        counts = np.bincount(data.labels, minlength=10) / len(data)
        assert counts.min() > 0.07 and counts.max() < 0.13
    again = prepare_sklearn_digits(out=str(tmp_path / "again"), format="cifar")
    cifar, cifar_names = read_cifar_batches(again)
    assert cifar_names == names
    for split in ("train", "val", "test"):  # same split, same pixels, in either layout
        np.testing.assert_array_equal(np.sort(cifar[split].labels), np.sort(splits[split].labels))
        assert cifar[split].images.sum() == splits[split].images.sum()


def test_data_module_dims_normalisation_and_batches(digits):
    dm = VisionDataModule(str(digits), n_classes=10, image_size=8, in_chans=1, batch_size=32)
    assert dm.dims == {"n_classes": 10, "image_size": 8, "in_chans": 1}
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (32, 1, 8, 8) and batch["label"].dtype.is_floating_point is False
    train = dm.datasets["train"]
    pixels = np.stack([train[i]["image"].numpy() for i in range(len(train))])
    assert abs(pixels.mean()) < 1e-4 and abs(pixels.std() - 1) < 1e-3, "normalised with train statistics"
    assert sum(len(b["label"]) for b in dm.test_dataloader()) == 359, "test keeps the last partial batch"


def test_synthetic_bars_are_cifar_batches_and_val_is_carved_from_train(bars):
    dm = VisionDataModule(str(bars), n_classes=4, image_size=8, val_fraction=0.25)
    assert dm.dims == {"n_classes": 4, "image_size": 8, "in_chans": 3}
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 88, "val": 32, "test": 40}
    assert np.bincount(dm.splits["val"].labels).tolist() == [8, 8, 8, 8], "stratified: 30 per class, a quarter each"
    again = VisionDataModule(str(bars), n_classes=4, image_size=8, val_fraction=0.25)
    again.setup()
    np.testing.assert_array_equal(again.splits["val"].images, dm.splits["val"].images), "fixed seed"


def test_bars_have_structure_a_nearest_mean_classifier_finds(bars):
    splits, _ = read_cifar_batches(bars)
    train, test = splits["train"], splits["test"]
    flat = lambda x: x.images.reshape(len(x), -1).astype(float)  # noqa: E731
    means = np.stack([flat(train)[train.labels == c].mean(0) for c in range(4)])
    pred = np.argmin(((flat(test)[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == test.labels).mean() > 0.5, "labels are learnable from pixels (chance is 0.25)"


def test_single_pool_image_folder_is_split_70_10_20(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            Image.fromarray(np.full((4, 4, 3), i * 10 + (label == "dog"), np.uint8)).save(tmp_path / label / f"{i}.png")
    splits, names = read_image_folder(tmp_path)
    assert names == ["cat", "dog"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 14, "val": 2, "test": 4}
    assert splits["train"].images.shape[1:] == (3, 4, 4)


def test_stratified_split_is_disjoint_and_complete():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    parts = stratified_split(labels, (0.7, 0.1, 0.2), seed=1)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(60))
    assert [len(p) for p in parts] == [42, 6, 12]


def _tree(root, sizes=((4, 4),), classes=("a", "b")):
    for split in ("train", "test"):
        for label in classes:
            (root / split / label).mkdir(parents=True)
            for i, size in enumerate(sizes):
                Image.fromarray(np.zeros(size, np.uint8)).save(root / split / label / f"{i}.png")
    return root


def test_image_folder_errors_name_the_file(tmp_path):
    root = _tree(tmp_path / "bad_image")
    (root / "train" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot be read as an image"):
        read_image_folder(root)
    root = _tree(tmp_path / "sizes", sizes=((4, 4), (5, 5)))
    with pytest.raises(DataError, match=r"1\.png: image is 5x5 .* set data.image_size"):
        read_image_folder(root)
    assert read_image_folder(root, image_size=6)[0]["train"].images.shape[1:] == (1, 6, 6)
    root = _tree(tmp_path / "unknown")
    (root / "test" / "zebra").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['zebra'\] do not exist in the training split"):
        read_image_folder(root)
    root = _tree(tmp_path / "empty")
    (root / "train" / "c").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['c'\] hold no images"):
        read_image_folder(root)
    (tmp_path / "no_test" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="has train/ but no test/"):
        read_image_folder(tmp_path / "no_test")


def test_cifar_errors_name_the_batch(tmp_path, bars):
    def batch_dir(name, entries=None):
        root = tmp_path / name
        root.mkdir()
        good = {b"data": np.zeros((4, 48), np.uint8), b"labels": [0, 1, 0, 1]}
        (root / "test_batch").write_bytes(pickle.dumps(good))
        (root / "data_batch_1").write_bytes(pickle.dumps({**good, **(entries or {})}))
        return root

    with pytest.raises(DataError, match=r"data_batch_1: 4 images but 3 labels"):
        read_cifar_batches(batch_dir("labels", {b"labels": [0, 1, 0]}))
    with pytest.raises(DataError, match=r"data_batch_1: b'data' must be uint8"):
        read_cifar_batches(batch_dir("dtype", {b"data": np.zeros((4, 48), np.float32)}))
    with pytest.raises(DataError, match="cannot infer the image shape of rows with 50 values"):
        read_cifar_batches(batch_dir("shape", {b"data": np.zeros((4, 50), np.uint8)}))
    evil = batch_dir("evil")
    (evil / "data_batch_1").write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        read_cifar_batches(evil)
    (bars / "test_batch").rename(bars / "kept")
    try:
        with pytest.raises(DataError, match="no test batches"):
            read_cifar_batches(bars)
    finally:
        (bars / "kept").rename(bars / "test_batch")


def test_nested_cifar_folder_and_missing_data_message(tmp_path, bars):
    nested = tmp_path / "cifar"
    (nested / "cifar-10-batches-py").mkdir(parents=True)
    for f in bars.iterdir():
        (nested / "cifar-10-batches-py" / f.name).write_bytes(f.read_bytes())
    dm = VisionDataModule(str(nested), n_classes=4, image_size=8)
    dm.setup()
    assert dm.class_names == ["horizontal", "vertical", "diagonal", "antidiagonal"]
    with pytest.raises(DataError, match="image dataset not found.*seqzoo data prepare sklearn-digits"):
        VisionDataModule(str(tmp_path / "missing"), n_classes=4, image_size=8).setup()


def test_declared_sizes_are_checked_and_images_resized_to_image_size(bars):
    with pytest.raises(DataError, match=r"has 4 classes .*but data.n_classes is 10; set data.n_classes: 4"):
        VisionDataModule(str(bars), n_classes=10, image_size=8).setup()
    with pytest.raises(DataError, match=r"images have 3 channel\(s\), but data.in_chans is 1"):
        VisionDataModule(str(bars), n_classes=4, image_size=8, in_chans=1).setup()
    dm = VisionDataModule(str(bars), n_classes=4, image_size=4)
    dm.setup()
    assert dm.datasets["train"][0]["image"].shape == (3, 4, 4)

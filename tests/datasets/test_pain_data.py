"""Pain (EmoPain layout) reader: windows inside exercises, subject splits, clear errors; BasicMotions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqzoo import ConfigError, DataError
from seqzoo.datasets import get_synth
from seqzoo.datasets.pain import PainDataModule, segment_windows


@pytest.fixture(scope="module")
def pain_dir(tmp_path_factory) -> Path:
    return get_synth("pain")(out=str(tmp_path_factory.mktemp("pain")), n_subjects=5, minutes=0.5, seed=2)


def _subject(root: Path, sid: str, n: int = 12, channels=("a", "b"), exercise=None, labels=None) -> Path:
    frame = pd.DataFrame({c: np.arange(n, dtype=float) + k for k, c in enumerate(channels)})
    frame["exercise"] = exercise if exercise is not None else ["sit"] * n
    frame["protective"] = labels if labels is not None else [0] * n
    path = root / f"subject_{sid}.csv"
    root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def test_windows_stay_inside_exercise_segments_with_majority_labels():
    exercise = np.array(["a"] * 7 + ["b"] * 5)
    labels = np.array([0, 0, 1, 1, 1, 0, 0] + [1, 1, 0, 0, 1])
    starts, window_labels = segment_windows(exercise, labels, window=4, stride=2)
    assert starts.tolist() == [0, 2, 7]  # [0,4) [2,6) in a; [7,11) in b; none crosses row 7
    assert window_labels.tolist() == [1, 1, 1]  # 2 of 4 (a tie -> protective), 3 of 4, 2 of 4


def test_loso_folds_hold_out_one_subject_and_are_disjoint(pain_dir):
    ids = [f"S{k:02d}" for k in range(1, 6)]
    for fold in range(5):
        dm = PainDataModule(str(pain_dir), n_channels=16, fold=fold, loso_val_subjects=1)
        dm.setup()
        s = dm.subjects
        assert s["test"] == [ids[fold]] and s["val"] == [ids[(fold + 1) % 5]]
        assert sorted(s["train"] + s["val"] + s["test"]) == ids
        for split, ds in dm.datasets.items():  # windows come only from that split's subjects
            assert set(ds.subjects) == set(s[split])
    assert dm.dims == {"n_channels": 16, "seq_len": 180, "n_classes": 2}


def test_fixed_split_from_subjects_csv_and_from_lists(pain_dir):
    dm = PainDataModule(str(pain_dir), n_channels=16, split="fixed")
    table = pd.read_csv(pain_dir / "subjects.csv")
    assert dm.subject_split([f"S{k:02d}" for k in range(1, 6)]) == {
        s: table.loc[table["split"] == s, "subject_id"].tolist() for s in ("train", "val", "test")}
    dm = PainDataModule(str(pain_dir), n_channels=16, split="fixed", train_subjects=["S01", "S02"], val_subjects=["S03"],
                        test_subjects=["S05"])
    dm.setup()
    assert len(dm.datasets["test"]) > 0 and set(dm.datasets["test"].subjects) == {"S05"}
    with pytest.raises(ConfigError, match="subject 'S02' is in both the train and the test split"):
        PainDataModule(str(pain_dir), n_channels=16, split="fixed", train_subjects=["S01", "S02"], val_subjects=["S03"],
                       test_subjects=["S02"]).setup()
    with pytest.raises(DataError, match=r"test subject\(s\) \['S09'\] have no subject_<id>.csv"):
        PainDataModule(str(pain_dir), n_channels=16, split="fixed", train_subjects=["S01"], val_subjects=["S03"],
                       test_subjects=["S09"]).setup()
    with pytest.raises(ConfigError, match="data.fold 7 is out of range: 5 subjects"):
        PainDataModule(str(pain_dir), n_channels=16, fold=7).setup()


def test_scaler_fitted_on_training_subjects_only(pain_dir):
    dm = PainDataModule(str(pain_dir), n_channels=16, fold=0)
    dm.setup()
    frames = [pd.read_csv(pain_dir / f"subject_{s}.csv") for s in dm.subjects["train"]]
    rows = pd.concat(frames)[dm.channels].to_numpy()
    np.testing.assert_allclose(dm.scaler.mean_, rows.mean(axis=0), rtol=1e-6)


def test_synthetic_set_is_imbalanced_with_protective_episodes(pain_dir):
    frame = pd.read_csv(pain_dir / "subject_S01.csv")
    assert {"exercise", "protective", "angle_1", "energy_1", "emg_1"} <= set(frame.columns)
    assert 0.1 < frame["protective"].mean() < 0.5
    dm = PainDataModule(str(pain_dir), n_channels=16, fold=0)
    counts = np.bincount(dm.train_targets().numpy())
    assert counts[0] > counts[1] > 0
    # guarding raises the sEMG envelope: the cue a model can learn
    emg = frame.filter(like="emg_").mean(axis=1)
    assert emg[frame["protective"] == 1].mean() > emg[frame["protective"] == 0].mean() + 0.2


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda r: _subject(r, "A").write_text("a,b,protective\n1,2,0\n"), r"subject_A.csv: missing column\(s\) 'exercise'"),
        (lambda r: _subject(r, "A").write_text("a,exercise,protective\nx,sit,0\n"),
         r"subject_A.csv, line 2, column 'a': expected a number, got 'x'"),
        (lambda r: _subject(r, "A").write_text("a,exercise,protective\n1,sit,0\n,sit,0\n"),
         r"subject_A.csv, line 3, column 'a': missing value \(NaN\)"),
        (lambda r: _subject(r, "A", labels=[0] * 11 + [-1]), r"subject_A.csv, line 13, column 'protective': expected a "
                                                            r"non-negative integer label, got -1"),
        (lambda r: _subject(r, "A", labels=[0] * 11 + [0.5]), r"line 13, column 'protective': .* got 0.5"),
        (lambda r: _subject(r, "B", channels=("a", "c")), r"subject_B.csv: channels \['a', 'c'\] differ from .*subject_A.csv's"),
        (lambda r: (r / "subjects.csv").write_text("subject_id,split\nA,train\nB,dev\n"),
         r"subjects.csv, line 3, column 'split': expected one of train, val, test, got 'dev'"),
    ],
)
def test_malformed_subject_files_name_file_and_row(tmp_path, make, match):
    root = tmp_path / "p"
    for sid in "ABC":
        _subject(root, sid)
    make(root)
    if "subjects.csv" in match:
        dm = PainDataModule(str(root), n_channels=2, split="fixed")
    else:
        dm = PainDataModule(str(root), n_channels=2, split="fixed", train_subjects=["A"], val_subjects=["B"],
                            test_subjects=["C"])
    with pytest.raises(DataError, match=match):
        dm.setup()


def test_no_subject_files_points_to_synth(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no subject_<id>.csv files -- .*seqzoo data synth pain"):
        PainDataModule(str(tmp_path / "empty"), n_channels=2).setup()
    with pytest.raises(ConfigError, match="set data.n_channels"):
        PainDataModule(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="data.synth was removed: .*data.prepare: synth:pain"):
        PainDataModule(str(tmp_path / "empty"), n_channels=2, synth=True)


def test_channel_and_class_counts_are_checked_against_the_files(tmp_path):
    root = tmp_path / "p"
    for sid in "ABC":
        _subject(root, sid, labels=[0] * 6 + [2] * 6)
    split = dict(split="fixed", train_subjects=["A"], val_subjects=["B"], test_subjects=["C"])
    with pytest.raises(DataError, match=r"subject_A.csv: has 2 channel columns, but data.n_channels is 3"):
        PainDataModule(str(root), n_channels=3, n_classes=3, **split).setup()
    with pytest.raises(DataError, match=r"label 2 does not fit data.n_classes = 2"):
        PainDataModule(str(root), n_channels=2, **split).setup()


def test_basicmotions_prepared_in_the_subject_layout(basicmotions_dir):
    root = basicmotions_dir
    assert len(list(root.glob("subject_*.csv"))) == 80
    classes = pd.read_csv(root / "classes.csv")
    assert classes["activity"].tolist() == ["badminton", "running", "standing", "walking"]
    dm = PainDataModule(str(root), n_channels=6, n_classes=4, split="fixed", label_column="activity", sample_rate=10,
                        window_seconds=10,
                        stride_seconds=10)
    assert dm.dims == {"n_channels": 6, "seq_len": 100, "n_classes": 4}
    dm.setup()
    sizes = {s: len(ds) for s, ds in dm.datasets.items()}
    assert sizes == {"train": 32, "val": 8, "test": 40}
    assert np.bincount(dm.datasets["val"].y.numpy()).tolist() == [2, 2, 2, 2]
    assert all(s.startswith("te") for s in dm.subjects["test"]), "aeon's own test split is the test split"

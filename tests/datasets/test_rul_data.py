"""RUL readers (laser, C-MAPSS): valid files, clear errors, labels, unit-disjoint splits, scaling."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqzoo import ConfigError, DataError
from seqzoo.datasets import get_synth
from seqzoo.datasets.rul import CMAPSS_INFORMATIVE, RULDataModule, read_cmapss, read_laser, rul_labels


@pytest.fixture(scope="module")
def laser_dir(tmp_path_factory) -> Path:
    return get_synth("rul-laser")(out=str(tmp_path_factory.mktemp("laser")), n_devices=10, test_hours=3000.0,
                                  min_life_hours=1200.0, seed=1)


@pytest.fixture(scope="module")
def cmapss_dir(tmp_path_factory) -> Path:
    return get_synth("rul-cmapss")(out=str(tmp_path_factory.mktemp("cmapss")), n_train_units=10, n_test_units=5,
                                   max_life=200, seed=1)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


# -- labels -------------------------------------------------------------------------------


def test_rul_labels_cap_and_anomaly_for_failed_and_censored_units():
    time = np.array([0.0, 10, 20, 30, 40])
    rul, anomaly = rul_labels(time, 0.0, cap=25, anomaly_rul=15)  # failed at t = 40
    np.testing.assert_array_equal(rul, [25, 25, 20, 10, 0])
    np.testing.assert_array_equal(anomaly, [0, 0, 0, 1, 1])
    rul, anomaly = rul_labels(time, 7.0, cap=25, anomaly_rul=15)  # C-MAPSS test unit: 7 left after t = 40
    np.testing.assert_array_equal(rul, [25, 25, 25, 17, 7])
    np.testing.assert_array_equal(anomaly, [0, 0, 0, 0, 1])
    rul, anomaly = rul_labels(time, None, cap=25, anomaly_rul=15)  # still running: RUL > t_last - t
    np.testing.assert_array_equal(rul, [25, 25, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(anomaly, [0, 0, 0, -1, -1])


# -- synthetic data -----------------------------------------------------------------------


def test_synthetic_lasers_rise_as_a_power_law_and_fail_at_plus_20_percent(laser_dir):
    units, columns = read_laser(laser_dir)
    assert columns == ["power_mW", "temp_C", "current_mA"]
    index = pd.read_csv(laser_dir / "devices.csv")
    assert set(index["split"]) == {"train", "val", "test"} and set(index["failed"]) == {0, 1}
    lives = []
    for unit in units:
        raw = pd.read_csv(laser_dir / f"{unit.unit_id}.csv")
        rise = raw["current_mA"].to_numpy() / raw["current_mA"].iloc[:5].mean() - 1
        assert np.all(np.diff(raw["time_h"]) > 0)
        if unit.end_rul == 0.0:  # failed: stops at the first sample over +20 %
            assert rise[-1] >= 0.19 and np.all(rise[:-1] < 0.2 + 0.01)
            lives.append(raw["time_h"].iloc[-1])
        else:
            assert raw["time_h"].iloc[-1] == pytest.approx(3000.0) and rise[-3:].mean() < 0.15
        assert np.corrcoef(raw["time_h"], rise)[0, 1] > 0.5, "the current rises with age"
    assert len(set(lives)) == len(lives) >= 3, "failing devices have different lifetimes"


def test_synthetic_cmapss_units_drift_and_rul_file_matches(cmapss_dir):
    train, test, _ = read_cmapss(cmapss_dir)
    assert len(train) == 10 and len(test) == 5
    assert len({len(u.time) for u in train}) > 5, "different lifetimes"
    s2 = np.concatenate([u.values[:, 4] for u in train])  # columns op1..op3, s1, s2, ...: s2 rises with wear
    age = np.concatenate([u.time / u.time[-1] for u in train])
    assert np.corrcoef(age, s2)[0, 1] > 0.5
    ruls = np.loadtxt(cmapss_dir / "RUL_FD001.txt")
    assert [u.end_rul for u in test] == list(ruls) and all(len(u.time) >= 31 for u in test)


# -- data module --------------------------------------------------------------------------


def test_laser_splits_are_device_disjoint_and_follow_devices_csv(laser_dir):
    dm = RULDataModule(str(laser_dir), format="laser", stage="rul", lookback=8, rul_cap=300, rul_eval="all")
    dm.setup()
    index = pd.read_csv(laser_dir / "devices.csv", dtype={"device_id": str})
    for split in ("train", "val", "test"):
        assert sorted(u.unit_id for u in dm.units[split]) == sorted(index.loc[index["split"] == split, "device_id"])
    ids = [{u.unit_id for u in dm.units[s]} for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert dm.dims == {"n_channels": 3, "n_targets": 1, "lookback": 8, "horizon": 1, "rul_cap": 300}


def test_cmapss_validation_units_come_from_the_train_file_by_unit(cmapss_dir):
    dm = RULDataModule(str(cmapss_dir), format="cmapss", lookback=30, val_fraction=0.3)
    dm.setup()
    train, val = {u.unit_id for u in dm.units["train"]}, {u.unit_id for u in dm.units["val"]}
    assert len(val) == 3 and len(train) == 7 and not train & val
    assert len(dm.units["test"]) == 5
    # every window lies inside one unit: (unit, end) pairs with end < that unit's length
    for split, ds in dm.datasets.items():
        assert all(0 <= e < len(dm.units[split][u].time) for u, e in ds.ends)


def test_cmapss_scaler_fitted_on_training_units_only(cmapss_dir):
    dm = RULDataModule(str(cmapss_dir), format="cmapss", lookback=30, channels=["s2", "s3", "s4"])
    dm.setup()
    train, _, _ = read_cmapss(cmapss_dir)
    kept = [u for u in train if u.unit_id in {p.unit_id for p in dm.units["train"]}]
    rows = np.concatenate([u.values[:, [4, 5, 6]] for u in kept])  # s2, s3, s4
    np.testing.assert_allclose(dm.scaler.data_min_, rows.min(axis=0))
    np.testing.assert_allclose(dm.scaler.data_max_, rows.max(axis=0))
    feats = np.concatenate([u.features for u in dm.units["train"]])
    assert feats.min() == pytest.approx(0.0, abs=1e-6) and feats.max() == pytest.approx(1.0, abs=1e-6)


def test_cmapss_default_channels_are_the_informative_sensors_and_tests_at_the_last_cycle(cmapss_dir):
    dm = RULDataModule(str(cmapss_dir), format="cmapss", lookback=40, rul_cap=125)
    assert dm.channels == list(CMAPSS_INFORMATIVE) and dm.dims["n_channels"] == 14
    assert not {"op3", "s1", "s5", "s10", "s16", "s18", "s19"} & set(dm.channels), "constant in FD001"
    dm.setup()
    test = dm.datasets["test"]
    assert len(test) == 5 and [e for _, e in test.ends] == [len(u.time) - 1 for u in dm.units["test"]]
    ruls = np.loadtxt(cmapss_dir / "RUL_FD001.txt")
    got = np.array([float(test[i]["rul"]) * 125 for i in range(5)])
    np.testing.assert_allclose(got, np.minimum(ruls, 125), rtol=1e-6)
    short = min(range(5), key=lambda k: len(dm.units["test"][k].time))
    x = test[short]["x"]
    assert x.shape == (40, len(dm.channels))  # short units are edge-padded to the lookback


def test_cmapss_test_units_shorter_than_the_window_are_padded_dropped_or_refused(cmapss_dir, caplog):
    probe = RULDataModule(str(cmapss_dir), format="cmapss", lookback=1)
    probe.setup()
    lengths = sorted(len(u.time) for u in probe.units["test"])
    lookback = lengths[1] + 1  # longer than the two shortest test units, shorter than the rest
    n_short = sum(n < lookback for n in lengths)
    assert 0 < n_short < len(lengths)
    with caplog.at_level("WARNING"):
        padded = RULDataModule(str(cmapss_dir), format="cmapss", lookback=lookback)
        padded.setup()
    assert len(padded.datasets["test"]) == len(lengths)
    assert f"{n_short} test unit(s) have fewer than lookback={lookback}" in caplog.text and "edge padding" in caplog.text
    dropped = RULDataModule(str(cmapss_dir), format="cmapss", lookback=lookback, short_units="drop")
    dropped.setup()
    assert len(dropped.datasets["test"]) == len(lengths) - n_short
    with pytest.raises(DataError, match=f"{n_short} test unit.*lookback={lookback}.*short_units"):
        RULDataModule(str(cmapss_dir), format="cmapss", lookback=lookback, short_units="error").setup()
    with pytest.raises(ConfigError, match="short_units"):
        RULDataModule(str(cmapss_dir), format="cmapss", short_units="cut")


def test_stage_windows(laser_dir):
    fc = RULDataModule(str(laser_dir), format="laser", stage="forecast", lookback=8, horizon=3)
    fc.setup()
    assert fc.dims == {"n_channels": 3, "n_targets": 1, "lookback": 8, "horizon": 3, "rul_cap": 125}
    ds = fc.datasets["train"]
    item, later = ds[0], ds[3]
    assert item["x"].shape == (8, 3) and item["y"].shape == (3, 1)
    np.testing.assert_allclose(item["y"][:, 0], later["x"][-3:, -1])  # y continues the current channel
    det = RULDataModule(str(laser_dir), format="laser", stage="detect", lookback=8, rul_cap=300)
    det.setup()
    assert det.dims == {"n_channels": 3, "n_targets": 1, "lookback": 8, "horizon": 1, "rul_cap": 300}
    assert det.datasets["train"][0]["x"].shape == (8, 1), "the detector reads the n_targets target channels"
    assert det.train_targets().max() == 0, "the autoencoder trains on normal windows only"
    val_labels = [int(det.datasets["val"][i]["label"]) for i in range(len(det.datasets["val"]))]
    assert 0 < np.mean(val_labels) < 1


def test_missing_data_points_to_synth_and_prepare_writes_it_once(tmp_path):
    with pytest.raises(DataError, match=r"missing train_FD001.txt.*seqzoo data synth rul-cmapss"):
        RULDataModule(str(tmp_path / "none"), format="cmapss").prepare_data()
    dm = RULDataModule(str(tmp_path / "made"), format="laser", stage="rul", lookback=8, prepare="synth:rul-laser")
    assert dm.dims["n_channels"] == 3 and not (tmp_path / "made").exists(), "dims never write"
    dm.prepare_data()
    assert (tmp_path / "made" / "devices.csv").exists()
    dm.setup()
    assert len(dm.datasets["train"]) > 0
    fd3 = RULDataModule(str(tmp_path / "fd3"), format="cmapss", subset="FD003", prepare="synth:rul-cmapss")
    fd3.prepare_data()
    assert (tmp_path / "fd3" / "train_FD003.txt").exists(), "the subset reaches the generator"
    with pytest.raises(ConfigError, match=r"data.synth was removed: .*data.prepare: synth:rul-laser"):
        RULDataModule(str(tmp_path / "made"), format="laser", synth=True)


def test_bad_options_are_config_errors(laser_dir):
    with pytest.raises(ConfigError, match="unknown channel"):
        RULDataModule(str(laser_dir), format="laser", channels=["nope"])
    with pytest.raises(ConfigError, match="stage must be"):
        RULDataModule(str(laser_dir), stage="train")


# -- malformed files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "device_text,index_text,match",
    [
        (None, "device_id,split,failed\nL001,train,1\nL001,val,0\n", r"devices.csv, line 3: device 'L001' is listed twice"),
        (None, "device_id,split,failed\nL001,training,1\n", r"devices.csv, line 2, column 'split': expected one of"),
        (None, "device_id,split,failed\nL001,train,2\n", r"devices.csv, line 2, column 'failed': expected 0 or 1"),
        (None, "device_id,split,failed\nX999,train,1\n", r"device file not found: .*X999.csv .*line 2"),
        (None, "device_id,split\nL001,train\n", r"devices.csv: missing column\(s\) 'failed'"),
        ("time_h,current_mA\n0,50\n10,50,3\n", None, r"L\d+.csv: cannot be read as CSV: .*line 3"),
        ("time_h,current_mA,power_mW,temp_C\n0,50,5,25\n10,abc,5,25\n", None,
          r"L\d+.csv, line 3, column 'current_mA': expected a number, got 'abc'"),
        ("time_h,current_mA,power_mW,temp_C\n0,50,5,25\n10,,5,25\n", None,
          r"L\d+.csv, line 3, column 'current_mA': missing value \(NaN\)"),
        ("time_h,current_mA,power_mW,temp_C\n0,50,5,25\n0,51,5,25\n", None,
         r"L\d+.csv, line 3, column 'time_h': must increase"),
        ("time_h,current_mA,voltage\n0,50,1\n10,51,1\n", None, r"L\d+.csv: unexpected column\(s\) 'voltage'"),
        ("time_h,current_mA,power_mW,temp_C\n0,50,5,25\n10,-1,5,25\n", None,
         r"L\d+.csv, line 3, column 'current_mA': drive current must be positive"),
        ("time_h,current_mA\n0,50\n10,51\n", None,
         r"L\d+.csv: has channels \['current_mA'\] but .*L\d+.csv has \['power_mW', 'temp_C', 'current_mA'\]"),
    ],
)
def test_malformed_laser_files_name_file_and_row(laser_dir, tmp_path, device_text, index_text, match):
    root = _copy(laser_dir, tmp_path)
    if index_text is not None:
        (root / "devices.csv").write_text(index_text)
    if device_text is not None:  # the second device: the first one sets the expected channels
        second = pd.read_csv(root / "devices.csv", dtype=str)["device_id"].iloc[1]
        (root / f"{second}.csv").write_text(device_text)
    with pytest.raises(DataError, match=match):
        read_laser(root)


def _cmapss_line(unit: int, cycle: int, n: int = 26, bad: str | None = None) -> str:
    fields = [str(unit), str(cycle)] + ["1.0"] * (n - 2)
    if bad is not None:
        fields[5] = bad
    return " ".join(fields)


@pytest.mark.parametrize(
    "train,test,rul,match",
    [
        ([_cmapss_line(1, 1), _cmapss_line(1, 2, n=25)], None, None,
         r"train_FD001.txt, line 2: expected 26 whitespace-separated columns .* found 25"),
        ([_cmapss_line(1, 1), _cmapss_line(1, 2, bad="x")], None, None,
         r"train_FD001.txt, line 2, column 's1': expected a number, got 'x'"),
        ([_cmapss_line(1, 1), _cmapss_line(1, 2, bad="nan")], None, None,
         r"train_FD001.txt, line 2, column 's1': missing or non-finite value 'nan'"),
        ([_cmapss_line(1, 1), _cmapss_line(1, 1)], None, None, r"train_FD001.txt, line 2, column 'cycle': must increase"),
        ([_cmapss_line(1, 1), _cmapss_line(2, 1), _cmapss_line(1, 2)], None, None,
         r"train_FD001.txt, line 3: rows of unit 1 are not contiguous"),
        ([_cmapss_line(1, 1), "1.5 2" + " 1.0" * 24], None, None,
         r"train_FD001.txt, line 2, column 'unit': expected a positive integer"),
        (None, None, "12\n7\n", r"RUL file has 2 values but .*test_FD001.txt has 3 units"),
        (None, None, "12\nseven\n5\n", r"RUL_FD001.txt, line 2: expected one non-negative integer"),
    ],
)
def test_malformed_cmapss_files_name_file_and_line(tmp_path, train, test, rul, match):
    good_train = [_cmapss_line(u, c) for u in (1, 2) for c in (1, 2, 3)]
    good_test = [_cmapss_line(u, c) for u in (1, 2, 3) for c in (1, 2)]
    (tmp_path / "train_FD001.txt").write_text("\n".join(train or good_train) + "\n")
    (tmp_path / "test_FD001.txt").write_text("\n".join(test or good_test) + "\n")
    (tmp_path / "RUL_FD001.txt").write_text(rul or "12\n7\n5\n")
    with pytest.raises(DataError, match=match):
        read_cmapss(tmp_path)


def test_missing_rul_file_is_named(tmp_path):
    (tmp_path / "train_FD001.txt").write_text(_cmapss_line(1, 1) + "\n")
    with pytest.raises(DataError, match=r"C-MAPSS RUL file not found: .*RUL_FD001.txt"):
        read_cmapss(tmp_path)


# -- C-MAPSS files with the sensors the user has (a header line) -------------------------------


def _write_cmapss_with_header(root: Path, columns: list[str], test_columns: list[str] | None = None,
                              sep: str = " ", constant: tuple[str, ...] = ()) -> Path:
    """Three training engines (12 cycles) and two test engines (8 cycles) with the named columns;
    a sensor's value is 100 * (its rank among the sensors' names + 1) + cycle / 10 + unit / 100, those
    in ``constant`` fixed at 100 * (rank + 1)."""
    root.mkdir(parents=True, exist_ok=True)

    def value(name: str, unit: int, cycle: int) -> str:
        if name == "unit":
            return str(unit)
        if name == "cycle":
            return str(cycle)
        sensors = sorted({*columns, *(test_columns or ())} - {"unit", "cycle"})
        base = 100.0 * (sensors.index(name) + 1)
        return f"{base:.2f}" if name in constant else f"{base + cycle / 10 + unit / 100:.2f}"

    for kind, names, n_units, n_cycles in (("train", columns, 3, 12), ("test", test_columns or columns, 2, 8)):
        lines = [sep.join(names)] + [sep.join(value(c, u, k) for c in names)
                                     for u in range(1, n_units + 1) for k in range(1, n_cycles + 1)]
        (root / f"{kind}_FD001.txt").write_text("\n".join(lines) + "\n")
    (root / "RUL_FD001.txt").write_text("20\n30\n")
    return root


def _module(root: Path, **kw) -> RULDataModule:
    return RULDataModule(str(root), format="cmapss", lookback=5, val_fraction=0.34, rul_cap=50, **kw)


@pytest.mark.parametrize("sep", [" ", ","])
def test_cmapss_file_with_a_header_and_a_subset_of_sensors(tmp_path, sep):
    root = _write_cmapss_with_header(tmp_path / "d", ["unit", "cycle", "op1", "s2", "s3", "s7"], sep=sep)
    train, test, channels = read_cmapss(root)
    assert channels == ["op1", "s2", "s3", "s7"] and len(train) == 3 and len(test) == 2
    dm = _module(root, channels=["s2", "s7"])
    dm.setup()
    assert dm.dims["n_channels"] == 2
    x = dm.datasets["test"][0]["x"]
    assert x.shape == (5, 2)
    # the columns fed are s2 and s7: the last row of test unit 1 (cycle 8) back in the file's units
    raw = dm.unscale(x.numpy(), ["s2", "s7"])
    np.testing.assert_allclose(raw[-1], [200 + 0.8 + 0.01, 400 + 0.8 + 0.01], atol=1e-3)


def test_cmapss_test_file_may_order_its_columns_differently(tmp_path):
    root = _write_cmapss_with_header(tmp_path / "d", ["unit", "cycle", "s2", "s3"],
                                     test_columns=["s3", "cycle", "unit", "s2"])
    train, test, channels = read_cmapss(root)
    assert channels == ["s2", "s3"]
    np.testing.assert_allclose(test[0].values[0], [100 + 0.1 + 0.01, 200 + 0.1 + 0.01])
    np.testing.assert_array_equal(test[1].time, np.arange(1, 9))


@pytest.mark.parametrize("columns, test_columns, match", [
    (["cycle", "s2", "s3"], None, r"train_FD001.txt: line 1 is a header without the required column\(s\) unit "
                                  r"\(it names cycle, s2, s3\)"),
    (["unit", "s2"], None, r"train_FD001.txt: line 1 is a header without the required column\(s\) cycle"),
    (["unit", "cycle", "s2", "s2"], None, r"train_FD001.txt: the header line names s2 more than once"),
    (["unit", "cycle", "s2", "s3"], ["unit", "cycle", "s2", "s4"],
     r"test_FD001.txt and .*train_FD001.txt have different columns; only in train_FD001.txt: \['s3'\]; "
     r"only in test_FD001.txt: \['s4'\]"),
])
def test_cmapss_header_errors_name_the_file_and_the_columns(tmp_path, columns, test_columns, match):
    root = _write_cmapss_with_header(tmp_path / "d", columns, test_columns=test_columns)
    with pytest.raises(DataError, match=match):
        read_cmapss(root)


def test_cmapss_header_row_length_is_checked(tmp_path):
    root = _write_cmapss_with_header(tmp_path / "d", ["unit", "cycle", "s2"])
    with open(root / "train_FD001.txt", "a") as f:
        f.write("1 13 200.0 7\n")
    with pytest.raises(DataError, match=r"train_FD001.txt, line 38: expected 3 columns \(the header's unit, cycle, "
                                         r"s2\), found 4"):
        read_cmapss(root)


def test_default_sensors_missing_from_the_file_say_which_to_choose(tmp_path):
    root = _write_cmapss_with_header(tmp_path / "d", ["unit", "cycle", "s2", "s3"])
    dm = _module(root)  # the 14 informative sensors by default
    with pytest.raises(DataError, match=r"has no channel\(s\) \['s4', .*\(it has \['s2', 's3'\]\); "
                                        r"set data.channels to the ones to use"):
        dm.setup()


def test_constant_sensors_are_named_and_kept_or_refused(tmp_path, caplog):
    root = _write_cmapss_with_header(tmp_path / "d", ["unit", "cycle", "s2", "s5", "s7"], constant=("s5",))
    with caplog.at_level("WARNING", logger="seqzoo.datasets.rul.datamodule"):
        kept = _module(root, channels=["s2", "s5", "s7"])
        kept.setup()
    assert kept.dims["n_channels"] == 3
    [record] = [r for r in caplog.records if "constant" in r.getMessage()]
    assert "channel(s) s5 are constant over the training units" in record.getMessage()
    assert "data.channels: [s2, s7] leaves them out" in record.getMessage()
    with pytest.raises(DataError, match=r"channel\(s\) s5 are constant .*data.channels: \[s2, s7\] leaves them out"):
        _module(root, channels=["s2", "s5", "s7"], constant_channels="error").setup()
    with pytest.raises(DataError, match="every channel is constant"):
        _module(root, channels=["s5"]).setup()
    caplog.clear()
    with caplog.at_level("WARNING", logger="seqzoo.datasets.rul.datamodule"):
        _module(root, channels=["s2", "s7"]).setup()
    assert not [r for r in caplog.records if "constant" in r.getMessage()], "nothing said when none is constant"
    with pytest.raises(ConfigError, match="constant_channels must be"):
        _module(root, constant_channels="drop")

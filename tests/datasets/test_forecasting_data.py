"""The ETT-format reader: splits, scaling, windows, and clear errors on bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqzoo import DataError
from seqzoo.datasets import get_prepare, get_synth
from seqzoo.datasets.forecasting import ForecastingDataModule, load_forecasting_csv, split_bounds


def test_ratio_splits_are_time_ordered_and_lookback_early():
    b = split_bounds(1000, 48, None, (0.7, 0.1, 0.2))
    assert b == {"train": (0, 700), "val": (652, 800), "test": (752, 1000)}


def test_ett_borders_and_short_file_error():
    b = split_bounds(14400, 96, [8640, 11520, 14400], (0.7, 0.1, 0.2))
    assert b["val"] == (8640 - 96, 11520) and b["test"] == (11520 - 96, 14400)
    with pytest.raises(DataError, match="has 14000 rows but the configured borders need 14400"):
        split_bounds(14000, 96, [8640, 11520, 14400], (0.7, 0.1, 0.2))


@pytest.mark.parametrize("features,n_in,n_out", [("M", 7, 7), ("S", 1, 1), ("MS", 7, 1)])
def test_features_modes_and_windows(ett_csv, features, n_in, n_out):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12, features=features, batch_size=64)
    assert dm.dims == {"n_channels": n_in, "n_targets": n_out, "lookback": 48, "horizon": 12, "n_time_features": 4}
    dm.setup()
    n_test_rows = 1200 - (int(1200 * 0.7) + 1200 - int(1200 * 0.7) - int(1200 * 0.2)) + 48
    assert len(dm.datasets["test"]) == n_test_rows - 48 - 12 + 1  # stride 1
    seen = sum(b["x"].shape[0] for b in dm.test_dataloader())
    assert seen == len(dm.datasets["test"]), "the test loader must not drop the last partial batch"
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (64, 48, n_in) and batch["y"].shape == (64, 12, n_out)
    assert batch["x_mark"].shape == (64, 48, 4)
    # y follows x: with M, the window's targets are the next rows of the same series
    ds = dm.datasets["train"]
    item, nxt = ds[5], ds[5 + 48]
    assert np.allclose(item["y"][0].numpy(), nxt["x"][0][-n_out:].numpy())


def test_scaler_fitted_on_train_only(ett_csv):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    dm.setup()
    raw = pd.read_csv(ett_csv)
    train = raw.iloc[:840, 1:].to_numpy()
    np.testing.assert_allclose(dm.scaler.mean_, train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(dm.scaler.scale_, train.std(axis=0), rtol=1e-6)


def test_target_moved_last(tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"date": pd.date_range("2020", periods=300, freq="h").astype(str), "OT": np.arange(300.0),
                  "a": np.ones(300)}).to_csv(csv, index=False)
    dm = ForecastingDataModule(str(csv), n_variates=2, lookback=10, horizon=5, features="MS", scale=False)
    dm.setup()
    assert dm.columns == ["a", "OT"]
    assert float(dm.datasets["train"][0]["y"][0, 0]) == 10.0
    with pytest.raises(DataError, match=r"t.csv: has 2 variate columns \(a, OT\), but data.n_variates is 7"):
        ForecastingDataModule(str(csv), lookback=10, horizon=5).setup()


def _write(tmp_path, text: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,match",
    [
        ("date,a,OT\n2020-01-01 00:00,1,2\n2020-01-01 01:00,x,3\n", r"line 3, column 'a': expected a number, got 'x'"),
        ("date,a,OT\n2020-01-01 00:00,1,2\n2020-01-01 01:00,,3\n", r"line 3, column 'a': missing value \(NaN\)"),
        ("date,a,OT\n2020-01-01 00:00,1,2\nnot a date,1,3\n", r"line 3, column 'date': cannot parse 'not a date'"),
        ("date,a\n2020-01-01 00:00,1\n", r"missing column\(s\) 'OT'; found: date, a"),
        ("a,date,OT\n1,2020-01-01 00:00,2\n", r"first column must be 'date'"),
        ("date,a,OT\n2020-01-02 00:00,1,2\n2020-01-01 01:00,1,3\n", r"line 3: dates must increase"),
        ("", r"the file is empty"),
    ],
)
def test_malformed_files_name_file_row_column(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=match) as info:
        load_forecasting_csv(path)
    assert str(path) in str(info.value)


def test_missing_file_and_short_split(tmp_path, ett_csv):
    missing = ForecastingDataModule(str(tmp_path / "nope.csv"))
    assert missing.dims["n_channels"] == 7, "dims are metadata: no file needed"
    for step in (missing.prepare_data, missing.setup):
        with pytest.raises(DataError, match="forecasting CSV not found: .*nope.csv -- .*seqzoo data synth forecasting"):
            step()
    dm = ForecastingDataModule(str(ett_csv), lookback=96, horizon=200)
    with pytest.raises(DataError, match="the val split has .* rows, fewer than lookback \\+ horizon = 296"):
        dm.setup()


def test_synth_writes_ett_format(tmp_path):
    path = get_synth("forecasting")(out=str(tmp_path / "s"), n_rows=500, seed=3)
    frame = load_forecasting_csv(path)
    assert list(frame.columns) == ["date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert len(frame) == 500
    # daily seasonality: the load's autocorrelation at lag 24 is strong
    x = frame["HUFL"].to_numpy()
    assert np.corrcoef(x[:-24], x[24:])[0, 1] > 0.5
    assert not list((tmp_path).glob(".s.partial-*")), "no temporary folder left behind"


def test_prepare_pvlib_weather(tmp_path):
    pytest.importorskip("pvlib")
    path = get_prepare("pvlib-tmy3")(out=str(tmp_path / "w"))
    frame = load_forecasting_csv(path)
    assert len(frame) == 8760 and frame.columns[0] == "date" and frame.columns[-1] == "OT"
    assert len(frame.columns) == 14  # date + 12 channels + OT
    assert frame["OT"].between(-40, 50).all()
    assert (frame.drop(columns="date").std() > 0).all(), "no constant columns"


def test_auto_prepare_when_file_missing(tmp_path):
    pytest.importorskip("pvlib")
    path = tmp_path / "weather" / "weather.csv"
    dm = ForecastingDataModule(str(path), n_variates=13, prepare="pvlib-tmy3", lookback=24, horizon=24)
    assert dm.dims["n_channels"] == 13 and not path.exists(), "dims never write"
    with pytest.raises(DataError, match="written by prepare_data"):
        dm.setup()
    dm.prepare_data()
    dm.setup()
    assert path.exists() and dm.columns[-1] == "OT" and len(dm.columns) == 13

"""The ETT-format reader: splits, scaling, windows, and clear errors on bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from seqzoo import ConfigError, DataError
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


# -- bring your own data: columns, frequency, gaps, booleans, timezones ---------------------


def _series_csv(tmp_path, dates, name="own.csv", **columns):
    """A small CSV: ``date`` (strings as given), the columns, a smooth target ``OT``."""
    n = len(dates)
    frame = pd.DataFrame({"date": list(dates), **columns,
                          "OT": np.sin(np.arange(n) / 3.0) + np.arange(n) / n})
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _hours(n, start="2021-03-01", freq="h"):
    return pd.date_range(start, periods=n, freq=freq).strftime("%Y-%m-%d %H:%M:%S")


def test_columns_and_drop_select_channels_and_name_unknown_ones(tmp_path):
    n = 200
    path = _series_csv(tmp_path, _hours(n), station=["north"] * n, a=np.arange(n) % 5, b=np.arange(n) % 7)
    with pytest.raises(DataError, match=r"line 2, column 'station': expected a number, got 'north' "
                                        r"\(a column that is not a channel can be left out with data.drop\)"):
        ForecastingDataModule(str(path), n_variates=3, lookback=12, horizon=4).setup()
    dm = ForecastingDataModule(str(path), n_variates=3, drop=["station"], lookback=12, horizon=4)
    dm.setup()
    assert dm.columns == ["a", "b", "OT"]
    dm = ForecastingDataModule(str(path), n_variates=2, columns=["b"], lookback=12, horizon=4)
    dm.setup()
    assert dm.columns == ["b", "OT"], "the target is kept without being listed"
    assert dm.datasets["train"][0]["x"].shape == (12, 2)
    with pytest.raises(ConfigError, match=r"data.columns names column\(s\) 'c', 'd' that the file does not have; "
                                          r"its columns: station, a, b, OT"):
        ForecastingDataModule(str(path), columns=["a", "c", "d"], lookback=12, horizon=4).setup()
    with pytest.raises(ConfigError, match=r"data.drop names column\(s\) 'stat' that the file does not have"):
        ForecastingDataModule(str(path), drop=["stat"], lookback=12, horizon=4).setup()
    with pytest.raises(ConfigError, match=r"data.drop lists the target 'OT'"):
        ForecastingDataModule(str(path), drop=["station", "OT"], lookback=12, horizon=4).setup()
    with pytest.raises(ConfigError, match=r"set data.columns .* or data.drop .*, not both"):
        ForecastingDataModule(str(path), columns=["a"], drop=["b"])


def test_freq_is_inferred_and_a_disagreeing_setting_names_both(tmp_path):
    hourly = _series_csv(tmp_path, _hours(200), name="hourly.csv")
    dm = ForecastingDataModule(str(hourly), n_variates=1, lookback=12, horizon=4)
    dm.setup()
    assert str(dm.step) == "1h" and dm.step.freq == "h" and dm.seasonal_period() == 24
    half = _series_csv(tmp_path, _hours(200, freq="30min"), name="half.csv")
    with pytest.raises(ConfigError, match=r"half.csv: data.freq is 'h' \(hourly time features\) but the timestamps "
                                          r"step by 30min \(the median step\), which is freq 't': set data.freq: t"):
        ForecastingDataModule(str(half), n_variates=1, freq="h", lookback=12, horizon=4).setup()
    dm = ForecastingDataModule(str(half), n_variates=1, lookback=12, horizon=4)
    dm.setup()
    assert str(dm.step) == "30min" and dm.seasonal_period() == 48
    marks = dm.datasets["train"][0]["x_mark"]  # rows 0, 1: 00:00 and 00:30
    assert marks.shape == (12, 4) and not torch.equal(marks[0], marks[1]), ":00 and :30 get distinct features"
    assert torch.equal(marks[0], marks[2] - torch.tensor([1 / 23, 0, 0, 0])), "hour of day, minutes as a fraction"
    dm = ForecastingDataModule(str(half), n_variates=1, freq="t", lookback=12, horizon=4)
    dm.setup()
    assert dm.datasets["train"][0]["x_mark"].shape == (12, 5)
    daily = _series_csv(tmp_path, _hours(100, freq="D"), name="daily.csv")
    dm = ForecastingDataModule(str(daily), n_variates=1, freq="d", lookback=12, horizon=4, season_length=14)
    dm.setup()
    assert str(dm.step) == "1d" and dm.step.season_length == 7 and dm.seasonal_period() == 14


@pytest.mark.parametrize("freq,months,season", [("MS", 1, 12), ("ME", 1, 12), ("QS", 3, 4)])
def test_calendar_steps_of_uneven_length_are_not_gaps(tmp_path, freq, months, season):
    path = _series_csv(tmp_path, _hours(60, start="2019-01-01", freq=freq))
    step = load_forecasting_csv(path).attrs["step"]
    assert step.months == months and step.freq == "d" and step.season_length == season


def test_gaps_are_an_error_with_count_and_first_or_a_warning_when_ignored(tmp_path, caplog):
    dates = list(_hours(300))
    del dates[250], dates[100:103]  # rows 100-102 (three steps) and 250 (one step) missing
    path = _series_csv(tmp_path, dates, name="gappy.csv")
    with pytest.raises(DataError, match=r"gappy.csv: the timestamps step by 1h \(the median step\), but 2 step\(s\) "
                                        r"differ \(4 missing timestamp\(s\) in all\); the first, line 102: "
                                        r"2021-03-05 03:00:00 -> 2021-03-05 07:00:00\. .*set data.gaps: ignore"):
        ForecastingDataModule(str(path), n_variates=1, lookback=12, horizon=4).setup()
    assert pd.read_csv(path)["date"].iloc[100] == "2021-03-05 07:00:00", "line 102 is the row after the gap"
    with caplog.at_level("WARNING"):
        dm = ForecastingDataModule(str(path), n_variates=1, gaps="ignore", lookback=12, horizon=4)
        dm.setup()
    assert len(dm.datasets["train"]) > 0
    assert "2 step(s) differ (4 missing timestamp(s) in all)" in caplog.text and "data.gaps is 'ignore'" in caplog.text
    with pytest.raises(ConfigError, match="gaps must be 'error' or 'ignore'"):
        ForecastingDataModule(str(path), gaps="fill")


def test_boolean_columns_become_0_1_and_constant_channels_are_reported(tmp_path, caplog):
    n = 120
    path = _series_csv(tmp_path, _hours(n), holiday=(np.arange(n) % 24 < 8), level=np.full(n, 3.5))
    with caplog.at_level("INFO", logger="seqzoo.datasets.forecasting.reader"):
        frame = load_forecasting_csv(path)
    assert frame["holiday"].dtype == np.float64 and set(frame["holiday"]) == {0.0, 1.0}
    assert frame["holiday"].iloc[0] == 1.0 and frame["holiday"].iloc[10] == 0.0
    assert "boolean column(s) 'holiday' read as 0/1" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "constant channel(s) 'level'" in warnings[0] and "'holiday'" not in warnings[0]


def test_timezones_and_daylight_saving_repeats_say_convert_to_utc(tmp_path):
    local = pd.date_range("2021-03-27 20:00", periods=12, freq="h", tz="Europe/Berlin")  # spans the DST switch
    path = _series_csv(tmp_path, local.strftime("%Y-%m-%d %H:%M:%S%z"), name="berlin.csv")
    with pytest.raises(DataError, match=r"berlin.csv, column 'date': the timestamps carry different UTC offsets "
                                        r".*convert them to UTC"):
        load_forecasting_csv(path)
    utc = _series_csv(tmp_path, local.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ"), name="utc.csv")
    frame = load_forecasting_csv(utc)
    assert frame["date"].dt.tz is None and frame["date"].iloc[0] == pd.Timestamp("2021-03-27 19:00")
    fall = ["2021-10-31 01:00", "2021-10-31 02:00", "2021-10-31 02:00", "2021-10-31 03:00"]  # naive local time
    path = _series_csv(tmp_path, fall, name="fall.csv")
    with pytest.raises(DataError, match=r"fall.csv, line 4, column 'date': timestamp 2021-10-31 02:00:00 repeats the "
                                        r"row before .*daylight saving.*store the timestamps in UTC"):
        load_forecasting_csv(path)

"""The ETT / Time-Series-Library CSV format: reading, split borders, time features."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from seqzoo.datasets.base import check_numeric, read_csv_checked
from seqzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def variate_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """Variate columns in file order with the target moved last (Time-Series-Library)."""
    cols = [c for c in frame.columns if c not in ("date", target)]
    return cols + [target]


def load_forecasting_csv(
    path: str | Path,
    target: str = "OT",
    *,
    columns: Sequence[str] | None = None,
    drop: Sequence[str] | None = None,
    freq: str | None = None,
    gaps: Literal["error", "ignore"] = "error",
) -> pd.DataFrame:
    """Read and validate an ETT-format CSV: a ``date`` column, numeric variates, ordered time.

    Args:
        path: the CSV; its first column is ``date``.
        target: the target column (always kept).
        columns: the variate columns to keep (the target is kept whether listed or not);
            ``None`` keeps them all. Unknown names are a ConfigError.
        drop: columns to leave out (e.g. an id or a text column); unknown names are a ConfigError.
        freq: the time-feature frequency the config asks for (``t``, ``h``, ``d``); a
            ConfigError when the timestamps' step says otherwise. ``None``: not checked.
        gaps: ``error`` (default): a DataError when timestamps are missing (windows across
            a gap would pair rows that are not one step apart); ``ignore``: a logged warning.

    Boolean columns are read as 0/1 (logged); constant columns are reported (a warning).
    Timestamps with one UTC offset are read as written (the offset is dropped); mixed
    offsets (daylight saving) and repeated timestamps are DataErrors that say to convert
    to UTC. The file's step (:class:`TimeStep`) is in ``frame.attrs["step"]``.
    """
    if gaps not in ("error", "ignore"):
        raise ConfigError(f"gaps must be 'error' or 'ignore', got {gaps!r}")
    if freq is not None and freq not in TIME_FEATURES:
        raise ConfigError(f"freq must be one of {sorted(TIME_FEATURES)}, got {freq!r}")
    frame = read_csv_checked(path, required=("date", target), what="forecasting CSV")
    if frame.columns[0] != "date":
        raise DataError(f"{path}: the first column must be 'date', found {frame.columns[0]!r}")
    frame = select_columns(frame, target, columns, drop, path)
    numeric = [c for c in frame.columns if c != "date"]
    booleans = [c for c in numeric if pd.api.types.is_bool_dtype(frame[c])]
    if booleans:
        log.info("%s: boolean column(s) %s read as 0/1", path, ", ".join(map(repr, booleans)))
    try:
        frame[numeric] = check_numeric(frame, numeric, path)
    except DataError as err:
        if "expected a number" not in str(err):
            raise
        raise DataError(f"{err} (a column that is not a channel can be left out with data.drop)") from None
    constant = [c for c in numeric if len(frame) > 1 and frame[c].nunique() == 1]
    if constant:
        log.warning("%s: constant channel(s) %s (one value in every row) carry no information; "
                    "leave them out with data.drop", path, ", ".join(map(repr, constant)))
    dates = parse_dates(frame["date"], path)
    if dates.isna().any():
        i = int(np.argmax(dates.isna().to_numpy()))
        raise DataError(f"{path}, line {i + 2}, column 'date': cannot parse {frame['date'].iloc[i]!r} as a date")
    steps = np.diff(dates.to_numpy())
    if (steps < np.timedelta64(0)).any():
        i = int(np.argmax(steps < np.timedelta64(0)))
        raise DataError(f"{path}, line {i + 3}: dates must increase (row is earlier than the row before)")
    if (steps == np.timedelta64(0)).any():
        i = int(np.argmax(steps == np.timedelta64(0)))
        raise DataError(
            f"{path}, line {i + 3}, column 'date': timestamp {dates.iloc[i + 1]} repeats the row before -- "
            "local time repeats an hour when daylight saving ends: store the timestamps in UTC (e.g. pandas: "
            "pd.to_datetime(df['date']).dt.tz_localize('Europe/Berlin', ambiguous='infer')"
            ".dt.tz_convert('UTC').dt.tz_localize(None), with your timezone), or remove the repeated rows"
        )
    frame["date"] = dates
    step = infer_step(dates, path)
    if freq is not None and freq != step.freq:
        raise ConfigError(
            f"{path}: data.freq is {freq!r} ({FREQ_NAMES[freq]} time features) but the timestamps step by "
            f"{step} (the median step), which is freq {step.freq!r}: set data.freq: {step.freq}, "
            "or leave it unset"
        )
    check_gaps(dates, step, path, gaps)
    frame.attrs["step"] = step
    return frame


def select_columns(
    frame: pd.DataFrame,
    target: str,
    columns: Sequence[str] | None,
    drop: Sequence[str] | None,
    path: str | Path = "<data>",
) -> pd.DataFrame:
    """``date``, the ``columns`` kept (all when None) less those in ``drop``, in file order."""
    available = [c for c in frame.columns if c != "date"]
    for key, names in (("columns", columns), ("drop", drop)):
        unknown = [c for c in names or () if c not in frame.columns]
        if unknown:
            raise ConfigError(f"{path}: data.{key} names column(s) {', '.join(map(repr, unknown))} that the "
                              f"file does not have; its columns: {', '.join(available)}")
    if drop and target in drop:
        raise ConfigError(f"{path}: data.drop lists the target {target!r} (data.target); the target is always kept")
    if drop and "date" in drop:
        raise ConfigError(f"{path}: data.drop lists 'date'; the timestamps are always kept")
    keep = set(available if columns is None else columns) | {target}
    keep -= set(drop or ())
    return frame[["date", *(c for c in available if c in keep)]].copy()


def parse_dates(raw: pd.Series, path: str | Path = "<data>") -> pd.Series:
    """Timestamps, naive; one UTC offset throughout is dropped (the clock as written), mixed
    offsets (a timezone with daylight saving) are a DataError that says to convert to UTC."""
    try:
        dates = pd.to_datetime(raw, errors="coerce")
    except (ValueError, TypeError) as err:
        if "timezone" not in str(err).lower() and "offset" not in str(err).lower():
            raise DataError(f"{path}, column 'date': cannot parse the timestamps: {err}") from None
        raise DataError(
            f"{path}, column 'date': the timestamps carry different UTC offsets (e.g. {raw.iloc[0]!r} and "
            f"{raw.iloc[-1]!r}), as local time does across daylight saving; windows would span repeated or "
            "missing hours: convert them to UTC and write them without an offset (e.g. pandas: "
            "pd.to_datetime(df['date'], utc=True).dt.tz_localize(None))"
        ) from None
    if getattr(dates.dtype, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)
    return dates


@dataclass(frozen=True)
class TimeStep:
    """The regular step of a file's timestamps: a fixed duration, or whole calendar months
    (monthly, quarterly and yearly data, whose steps in days vary)."""

    duration: pd.Timedelta | None = None
    months: int = 0

    def __str__(self) -> str:
        if self.months:
            return f"{self.months} month" + ("s" if self.months > 1 else "")
        return _duration_text(self.duration)

    @property
    def freq(self) -> str:
        """The time-feature set that fits the step: ``t`` below an hour, ``h`` below a day, else ``d``."""
        if self.months or self.duration >= pd.Timedelta(days=1):
            return "d"
        return "t" if self.duration < pd.Timedelta(hours=1) else "h"

    def after(self, last: pd.Timestamp, n: int) -> pd.DatetimeIndex:
        """The ``n`` timestamps that follow ``last`` at this step (the forecast's dates)."""
        if self.months:
            return pd.DatetimeIndex([last + pd.DateOffset(months=self.months * k) for k in range(1, n + 1)])
        return pd.DatetimeIndex(last + self.duration * np.arange(1, n + 1))

    def to_dict(self) -> dict:
        return {"months": self.months} if self.months else {"duration": str(self.duration)}

    @classmethod
    def from_dict(cls, record: dict) -> TimeStep:
        if record.get("months"):
            return cls(months=int(record["months"]))
        return cls(duration=pd.Timedelta(record["duration"]))

    @property
    def season_length(self) -> int | None:
        """Steps per season: a day for sub-daily steps that divide it (hourly 24, half-hourly 48),
        a week for daily data, a year for weekly (52), monthly (12) and quarterly (4) data;
        None when no season fits."""
        if self.months:
            return 12 // self.months if 12 % self.months == 0 and self.months < 12 else None
        day, week = pd.Timedelta(days=1), pd.Timedelta(days=7)
        if self.duration < day:
            return int(day / self.duration) if day % self.duration == pd.Timedelta(0) else None
        if self.duration == day:
            return 7
        return 52 if self.duration == week else None


def infer_step(dates: pd.Series, path: str | Path = "<data>") -> TimeStep:
    """The median step of increasing timestamps (in months when it is a month or longer)."""
    if len(dates) < 2:
        raise DataError(f"{path}: one data row; a forecasting file needs many")
    median = pd.Timedelta(np.median(np.diff(dates.to_numpy())))
    if median >= pd.Timedelta(days=28):
        months = np.diff(_month_numbers(dates))
        return TimeStep(months=max(1, int(np.median(months))))
    return TimeStep(duration=median)


def check_gaps(dates: pd.Series, step: TimeStep, path: str | Path, gaps: str = "error") -> None:
    """Steps other than ``step`` (missing or irregular timestamps): a DataError naming their count
    and the first, or with ``gaps='ignore'`` a logged warning."""
    if step.months:
        diffs = np.diff(_month_numbers(dates)).astype(np.float64) / step.months
        # a calendar step keeps the day of the month (or stays on month ends)
        days, ends = dates.dt.day.to_numpy(), dates.dt.is_month_end.to_numpy()
        diffs[(days[1:] != days[:-1]) & ~(ends[1:] & ends[:-1])] = np.nan
    else:
        diffs = np.diff(dates.to_numpy()) / step.duration.to_timedelta64()
    uneven = ~np.isclose(diffs, 1.0)
    if not uneven.any():
        return
    longer = np.nan_to_num(diffs[uneven], nan=1.0)
    missing = int(np.sum(np.maximum(np.round(longer) - 1, 0)))
    i = int(np.argmax(uneven))
    first = f"line {i + 3}: {dates.iloc[i]} -> {dates.iloc[i + 1]}"
    message = (f"{path}: the timestamps step by {step} (the median step), but {int(uneven.sum())} step(s) differ "
               f"({missing} missing timestamp(s) in all); the first, {first}")
    if gaps == "ignore":
        log.warning("%s; data.gaps is 'ignore': windows across a gap treat its rows as one step apart", message)
        return
    every = f"'{_duration_text(step.duration)}'" if step.duration is not None else f"'{step.months}MS'"
    raise DataError(f"{message}. Windows across a gap would treat its rows as one step apart: fill the gaps "
                    f"(e.g. pandas: df.set_index('date').asfreq({every}).interpolate()) or set data.gaps: ignore")


def _month_numbers(dates: pd.Series) -> np.ndarray:
    return (dates.dt.year * 12 + dates.dt.month).to_numpy()


def _duration_text(duration: pd.Timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return str(duration)


def split_bounds(
    n_rows: int,
    lookback: int,
    borders: list[int] | None,
    ratios: tuple[float, float, float],
    path: str | Path = "<data>",
) -> dict[str, tuple[int, int]]:
    """Row ranges [lo, hi) per split; val and test start ``lookback`` rows early."""
    if borders is not None:
        train_end, val_end, test_end = borders
        if n_rows < test_end:
            raise DataError(
                f"{path}: the file has {n_rows} rows but the configured borders need {test_end} "
                f"(borders={list(borders)})"
            )
    else:
        train_end = int(n_rows * ratios[0])
        test_len = int(n_rows * ratios[2])
        val_end = n_rows - test_len
        test_end = n_rows
    bounds = {
        "train": (0, train_end),
        "val": (max(0, train_end - lookback), val_end),
        "test": (max(0, val_end - lookback), test_end),
    }
    return bounds



TIME_FEATURES: dict[str, tuple[str, ...]] = {
    "t": ("minute", "hour", "dayofweek", "day", "dayofyear"),
    "h": ("hour", "dayofweek", "day", "dayofyear"),
    "d": ("dayofweek", "day", "dayofyear"),
}
FREQ_NAMES = {"t": "minutely", "h": "hourly", "d": "daily"}


def time_features(dates: pd.DatetimeIndex, freq: str | None) -> np.ndarray:
    """Calendar features in [-0.5, 0.5] (Time-Series-Library's ``timeenc=1``), one column per
    name in ``TIME_FEATURES[freq]`` (``None``: the hourly set). In the hourly set the hour
    counts minutes as a fraction, so half-hourly steps differ at :00 and :30 (on whole hours
    it equals Time-Series-Library's hour of day)."""
    freq = "h" if freq is None else freq
    if freq not in TIME_FEATURES:
        raise ConfigError(f"freq must be one of {sorted(TIME_FEATURES)}, got {freq!r}")
    hour = dates.hour if freq == "t" else dates.hour + dates.minute / 60.0
    scaled = {
        "minute": dates.minute / 59.0 - 0.5,
        "hour": hour / 23.0 - 0.5,
        "dayofweek": dates.dayofweek / 6.0 - 0.5,
        "day": (dates.day - 1) / 30.0 - 0.5,
        "dayofyear": (dates.dayofyear - 1) / 365.0 - 0.5,
    }
    return np.stack([np.asarray(scaled[name], dtype=np.float32) for name in TIME_FEATURES[freq]], axis=1)

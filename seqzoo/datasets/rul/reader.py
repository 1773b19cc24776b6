"""Readers of the laser aging-test folder and the NASA C-MAPSS text files, and per-row RUL labels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import check_numeric, read_csv_checked, require_path
from seqzoo.errors import DataError


SPLITS = ("train", "val", "test")
LASER_REQUIRED = ("time_h", "current_mA")
LASER_OPTIONAL = ("power_mW", "temp_C")
CMAPSS_COLUMNS = ("unit", "cycle", "op1", "op2", "op3", *(f"s{i}" for i in range(1, 22)))
# The 14 sensors that vary in FD001 (the usual input set of the C-MAPSS literature).
CMAPSS_INFORMATIVE = ("s2", "s3", "s4", "s7", "s8", "s9", "s11", "s12", "s13", "s14", "s15", "s17", "s20", "s21")


@dataclass
class Unit:
    """One device or engine as read from disk (raw values, file order of rows)."""

    unit_id: str
    split: str
    time: np.ndarray  # (T,) hours or cycles, strictly increasing
    values: np.ndarray  # (T, F) raw channel values
    end_rul: float | None  # true RUL at the last row; None = still running (censored)


@dataclass
class PreparedUnit:
    """A unit ready for windows: scaled features (targets last) and per-row labels."""

    unit_id: str
    time: np.ndarray  # (T,)
    features: np.ndarray  # (T, C) float32, scaled
    rul: np.ndarray  # (T,) capped RUL, NaN where unknown
    anomaly: np.ndarray  # (T,) 1 degrading, 0 normal, -1 unknown


def rul_labels(time: np.ndarray, end_rul: float | None, cap: float, anomaly_rul: float) -> tuple[np.ndarray, np.ndarray]:
    """Capped RUL and anomaly label per row: RUL_t = end_rul + (t_last - t), capped.

    A censored unit (``end_rul=None``) has true RUL > t_last - t: its capped label is
    known (= cap) where that bound reaches the cap, and it is normal where the bound
    reaches ``anomaly_rul``; elsewhere the labels are unknown (NaN, -1).
    """
    remaining = time[-1] - time
    if end_rul is None:
        capped = np.where(remaining >= cap, float(cap), np.nan)
        anomaly = np.where(remaining >= anomaly_rul, 0, -1)
    else:
        true = remaining + end_rul
        capped = np.minimum(true, float(cap))
        anomaly = (true < anomaly_rul).astype(np.int64)
    return capped.astype(np.float64), anomaly.astype(np.int64)




def read_laser(root: str | os.PathLike) -> tuple[list[Unit], list[str]]:
    """Devices of a laser aging test and the channel names (``current_mA`` last)."""
    root = Path(root)
    index_path = require_path(root / "devices.csv", "laser device list",
                              hint="write one with `seqzoo data synth rul-laser --out DIR`")
    index = read_csv_checked(index_path, required=("device_id", "split", "failed"), what="laser device list",
                             dtype={"device_id": str, "split": str})
    failed = check_numeric(index, ["failed"], index_path)["failed"].to_numpy()
    seen: dict[str, int] = {}
    units: list[Unit] = []
    columns: list[str] | None = None
    first_file = None
    for i, row in enumerate(index.itertuples(index=False)):
        line = i + 2
        device = str(row.device_id).strip()
        if not device or device.lower() == "nan":
            raise DataError(f"{index_path}, line {line}, column 'device_id': empty device id")
        if device in seen:
            raise DataError(f"{index_path}, line {line}: device {device!r} is listed twice (first on line {seen[device]})")
        seen[device] = line
        split = str(row.split).strip()
        if split not in SPLITS:
            raise DataError(f"{index_path}, line {line}, column 'split': expected one of {', '.join(SPLITS)}, got {split!r}")
        if failed[i] not in (0, 1):
            raise DataError(f"{index_path}, line {line}, column 'failed': expected 0 or 1, got {failed[i]:g}")
        path = root / f"{device}.csv"
        if not path.exists():
            raise DataError(f"device file not found: {path} (device {device!r}, {index_path} line {line})")
        frame = read_csv_checked(path, required=LASER_REQUIRED, what="laser device file")
        extra = [c for c in frame.columns if c not in LASER_REQUIRED + LASER_OPTIONAL]
        if extra:
            raise DataError(f"{path}: unexpected column(s) {', '.join(map(repr, extra))}; expected "
                            f"time_h, current_mA[, power_mW, temp_C]")
        cols = [c for c in LASER_OPTIONAL if c in frame.columns] + ["current_mA"]
        if columns is None:
            columns, first_file = cols, path
        elif cols != columns:
            raise DataError(f"{path}: has channels {cols} but {first_file} has {columns}; every device needs the same columns")
        numeric = check_numeric(frame, ["time_h", *cols], path)
        time = numeric["time_h"].to_numpy()
        _check_increasing(time, path, "time_h")
        current = numeric["current_mA"].to_numpy()
        if (current <= 0).any():
            j = int(np.argmax(current <= 0))
            raise DataError(f"{path}, line {j + 2}, column 'current_mA': drive current must be positive, got {current[j]:g}")
        if len(frame) < 2:
            raise DataError(f"{path}: a device needs at least 2 rows, found {len(frame)}")
        units.append(Unit(device, split, time, numeric[cols].to_numpy(np.float64), 0.0 if failed[i] == 1 else None))
    return units, columns


def _check_increasing(time: np.ndarray, path: Path, column: str, line_of=lambda i: i + 2) -> None:
    bad = np.diff(time) <= 0
    if bad.any():
        i = int(np.argmax(bad)) + 1
        raise DataError(f"{path}, line {line_of(i)}, column {column!r}: must increase "
                        f"({time[i]:g} follows {time[i - 1]:g})")


def read_cmapss_table(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of a C-MAPSS file: (line numbers, values (N, K), the K column names, ``unit`` and ``cycle``
    first), checked field by field.

    Without a header the file has NASA's 26 columns (:data:`CMAPSS_COLUMNS`). A first line of
    names instead (``unit cycle op1 s2 s3 ...``, whitespace- or comma-separated, data lines alike)
    declares the file's own columns: ``unit`` and ``cycle`` are required, every other column is
    a channel (settings and the sensors the user has, by any name).
    """
    path = require_path(path, "C-MAPSS file")
    rows, lines = [], []
    columns: list[str] | None = None
    split = str.split
    with open(path) as f:
        for n, text in enumerate(f, 1):
            if columns is None and text.strip():
                split = (lambda t: [v.strip() for v in t.split(",")]) if "," in text else str.split
                fields = split(text)
                if all(_is_float(v) for v in fields):
                    columns = list(CMAPSS_COLUMNS)
                else:
                    columns = _header_columns(fields, path)
                    continue
            fields = split(text) if text.strip() else []
            if not fields:
                continue
            if len(fields) != len(columns):
                what = ("whitespace-separated columns (unit, cycle, op1..op3, s1..s21; a file with other columns "
                        "starts with a header line naming them)" if columns == list(CMAPSS_COLUMNS)
                        else f"columns (the header's {', '.join(columns)})")
                raise DataError(f"{path}, line {n}: expected {len(columns)} {what}, found {len(fields)}")
            try:
                values = [float(v) for v in fields]
            except ValueError:
                j = next(k for k, v in enumerate(fields) if not _is_float(v))
                raise DataError(f"{path}, line {n}, column {columns[j]!r}: expected a number, got {fields[j]!r}") from None
            if not all(np.isfinite(values)):
                j = int(np.argmax(~np.isfinite(values)))
                raise DataError(f"{path}, line {n}, column {columns[j]!r}: missing or non-finite value {fields[j]!r}")
            rows.append(values)
            lines.append(n)
    if not rows:
        raise DataError(f"{path}: no data rows")
    order = [columns.index("unit"), columns.index("cycle")]
    order += [j for j in range(len(columns)) if j not in order]
    table, columns = np.asarray(rows)[:, order], [columns[j] for j in order]
    for j, name in ((0, "unit"), (1, "cycle")):
        bad = (table[:, j] != np.round(table[:, j])) | (table[:, j] < 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}, line {lines[i]}, column {name!r}: expected a positive integer, got {table[i, j]:g}")
    return np.asarray(lines), table, columns


def _header_columns(names: list[str], path: Path) -> list[str]:
    """A header's column names, checked: ``unit`` and ``cycle`` present, no name twice or empty."""
    missing = [c for c in ("unit", "cycle") if c not in names]
    if missing:
        raise DataError(f"{path}: line 1 is a header without the required column(s) {', '.join(missing)} "
                        f"(it names {', '.join(names)}); a C-MAPSS file needs unit and cycle, then any settings "
                        "and sensors")
    if not all(names):
        raise DataError(f"{path}: the header line has an empty column name ({', '.join(names)})")
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise DataError(f"{path}: the header line names {', '.join(twice)} more than once")
    return names


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def cmapss_units(path: str | os.PathLike, split: str, end_ruls: np.ndarray | None = None
                 ) -> tuple[list[Unit], list[str]]:
    """Units of a C-MAPSS file and its channel names (the columns after unit and cycle); rows
    of a unit are contiguous with increasing cycles.

    ``end_ruls`` (test files) gives each unit's RUL after its last row, in unit order;
    training units run to failure (end RUL 0).
    """
    lines, table, columns = read_cmapss_table(path)
    unit_col = table[:, 0].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, unit_col[1:] != unit_col[:-1]])
    ids = unit_col[starts]
    if len(np.unique(ids)) != len(ids):
        dup = next(u for k, u in enumerate(ids) if u in ids[:k])
        second = starts[[k for k, u in enumerate(ids) if u == dup][1]]
        raise DataError(f"{path}, line {lines[second]}: rows of unit {dup} are not contiguous (the file must be "
                        "sorted by unit, then cycle)")
    if end_ruls is not None and len(end_ruls) != len(ids):
        raise DataError(f"RUL file has {len(end_ruls)} values but {path} has {len(ids)} units; "
                        "the RUL file needs one integer per test unit, in unit order")
    units = []
    bounds = [*starts, len(table)]
    for k, unit in enumerate(ids):
        block = table[bounds[k] : bounds[k + 1]]
        _check_increasing(block[:, 1], Path(path), "cycle", line_of=lambda i, o=bounds[k]: lines[o + i])
        units.append(Unit(str(unit), split, block[:, 1], block[:, 2:], 0.0 if end_ruls is None else float(end_ruls[k])))
    return units, columns[2:]


def read_rul_file(path: str | os.PathLike) -> np.ndarray:
    """``RUL_FDxxx.txt``: one non-negative integer per line (blank lines ignored)."""
    path = require_path(path, "C-MAPSS RUL file")
    values = []
    with open(path) as f:
        for n, text in enumerate(f, 1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) != 1 or not fields[0].isdigit():
                raise DataError(f"{path}, line {n}: expected one non-negative integer (the unit's remaining cycles), "
                                f"got {text.strip()!r}")
            values.append(int(fields[0]))
    if not values:
        raise DataError(f"{path}: no values")
    return np.asarray(values, dtype=np.float64)


def read_cmapss(root: str | os.PathLike, subset: str = "FD001") -> tuple[list[Unit], list[Unit], list[str]]:
    """Training units (run to failure), test units (truncated, RUL from the RUL file) and the
    channel names (test columns put in the training file's order; both files need the same ones)."""
    root = Path(root)
    train_path, test_path = root / f"train_{subset}.txt", root / f"test_{subset}.txt"
    train, channels = cmapss_units(train_path, "train")
    end_ruls = read_rul_file(root / f"RUL_{subset}.txt")
    test, test_channels = cmapss_units(test_path, "test", end_ruls)
    if test_channels != channels:
        if sorted(test_channels) != sorted(channels):
            only_train = [c for c in channels if c not in test_channels]
            only_test = [c for c in test_channels if c not in channels]
            raise DataError(f"{test_path} and {train_path} have different columns"
                            + (f"; only in {train_path.name}: {only_train}" if only_train else "")
                            + (f"; only in {test_path.name}: {only_test}" if only_test else "")
                            + " -- both files need the same ones")
        order = [test_channels.index(c) for c in channels]
        test = [Unit(u.unit_id, u.split, u.time, u.values[:, order], u.end_rul) for u in test]
    return train, test, channels

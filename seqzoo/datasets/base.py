"""What every domain's data code shares.

* registries behind ``seqzoo data synth <domain>`` and ``seqzoo data prepare <source>``;
* :func:`read_csv_checked`: a CSV reader whose errors name the file, the row and
  the column (a :class:`~seqzoo.errors.DataError`), never a numpy traceback;
* :func:`atomic_dir`: write a dataset into a temporary folder and move it into
  place only when complete, so a failure leaves nothing half-written;
* :class:`BaseDataModule`: batch size, workers and ``dims`` -- the sizes (channels,
  lengths, classes, vocabulary...) that reach the task through the CLI's links.

Readers never download anything; optional packages are imported inside functions.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from seqzoo.errors import ConfigError, DataError

# Sizes a data module can hand to its task. The CLI links each of these from
# ``data.dims`` to the model's init argument of the same name (when the task has one).
DIM_NAMES: tuple[str, ...] = (
    "n_channels",
    "n_targets",
    "lookback",
    "horizon",
    "n_time_features",
    "n_classes",
    "vocab_size",
    "seq_len",
    "image_size",
    "in_chans",
    "rul_cap",
    "n_sources",
    "alphabet",
)

# ---------------------------------------------------------------------------------------
# synth / prepare registries
# ---------------------------------------------------------------------------------------

_SYNTH: dict[str, Callable[..., Path]] = {}
_PREPARE: dict[str, Callable[..., Path]] = {}


def register_synth(domain: str):
    """Register ``fn(out: str, ...) -> Path`` as ``seqzoo data synth <domain>``."""

    def decorator(fn):
        _check_out_param(fn)
        _SYNTH[domain] = fn
        return fn

    return decorator


def register_prepare(source: str):
    """Register ``fn(out: str, ...) -> Path`` as ``seqzoo data prepare <source>``."""

    def decorator(fn):
        _check_out_param(fn)
        _PREPARE[source] = fn
        return fn

    return decorator


def _check_out_param(fn) -> None:
    if "out" not in inspect.signature(fn).parameters:
        raise TypeError(f"{fn.__qualname__} must take an 'out' argument (the output folder)")


def synth_generators() -> dict[str, Callable[..., Path]]:
    _load_modules()
    return dict(sorted(_SYNTH.items()))


def prepare_sources() -> dict[str, Callable[..., Path]]:
    _load_modules()
    return dict(sorted(_PREPARE.items()))


def get_synth(domain: str) -> Callable[..., Path]:
    gens = synth_generators()
    if domain not in gens:
        raise ConfigError(f"no synthetic generator for domain {domain!r}; known: {', '.join(gens)}")
    return gens[domain]


def get_prepare(source: str) -> Callable[..., Path]:
    sources = prepare_sources()
    if source not in sources:
        raise ConfigError(f"unknown data source {source!r}; known: {', '.join(sources)}")
    return sources[source]


def materialise(source: str, out: str | os.PathLike) -> Path:
    """Write data for a data module's ``prepare`` hook: ``synth:<domain>`` runs that
    synthetic generator, any other name the ``seqzoo data prepare`` source of that name."""
    if source.startswith("synth:"):
        return get_synth(source.split(":", 1)[1])(out=str(out))
    return get_prepare(source)(out=str(out))


def _load_modules() -> None:
    import seqzoo.datasets  # noqa: F401  (importing the package registers its modules)


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------


def require_path(path: str | os.PathLike, what: str = "data file", hint: str = "") -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: {p}" + (f" -- {hint}" if hint else ""))
    return p


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success its files move into ``out``.

    Files already in ``out`` that the writer also wrote are replaced; on failure
    ``out`` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.rglob("*")):
            if item.is_file():
                target = out / item.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_csv_checked(
    path: str | os.PathLike,
    *,
    required: Sequence[str] = (),
    numeric: Sequence[str] | None = None,
    what: str = "CSV file",
    **read_kwargs: Any,
) -> pd.DataFrame:
    """Read a CSV, checking columns and values; errors name file, row and column.

    ``numeric`` lists the columns that must hold finite numbers (default: all
    columns but the ``required`` non-numeric ones are left alone). Row numbers in
    messages are file line numbers (the header is line 1).
    """
    path = require_path(path, what)
    try:
        frame = pd.read_csv(path, **read_kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as CSV: {err}") from None
    _check_unique_header(path, read_kwargs)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; found: {', '.join(frame.columns)}"
        )
    if numeric:
        frame[list(numeric)] = check_numeric(frame, numeric, path)
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    return frame


def _check_unique_header(path: Path, read_kwargs: dict) -> None:
    """pandas silently renames a repeated column ``x`` to ``x.1``; a repeated name is a DataError."""
    if read_kwargs.get("header", "infer") not in ("infer", 0) or read_kwargs.get("sep", ",") != ",":
        return
    import csv

    with open(path, newline="", encoding=read_kwargs.get("encoding")) as f:
        names = [str(c).strip() for c in next(csv.reader(f), [])]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}, line 1: column name(s) {', '.join(map(repr, repeated))} appear more than once")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_numeric(frame: pd.DataFrame, columns: Sequence[str], path: str | os.PathLike) -> pd.DataFrame:
    """Columns as float64; the first non-numeric, NaN or infinite value is a DataError, and so is a
    value beyond the float32 range (the models compute in float32, and such a value makes the
    scaler's mean and variance overflow)."""
    out = {}
    for col in columns:
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        with np.errstate(invalid="ignore"):
            huge = np.abs(values.to_numpy()) > FLOAT32_MAX
        if huge.any():
            i = int(np.argmax(huge))
            shown = raw.iloc[i] if isinstance(raw.iloc[i], str) else f"{float(raw.iloc[i]):g}"
            raise DataError(f"{path}, line {i + 2}, column {col!r}: value {shown} is beyond the float32 "
                            f"range (|x| <= {FLOAT32_MAX:.3g}); it would overflow once scaled")
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            i = int(np.argmax(bad))
            original = raw.iloc[i]
            line = i + 2  # header is line 1
            if pd.isna(original) or (isinstance(original, str) and original.strip().lower() in ("", "nan")):
                problem = "missing value (NaN)"
            elif isinstance(original, str) and pd.isna(pd.to_numeric(original, errors="coerce")):
                problem = f"expected a number, got {original!r}"
            else:
                problem = f"non-finite value {original!r}"
            raise DataError(f"{path}, line {line}, column {col!r}: {problem}")
        out[col] = values
    return pd.DataFrame(out, index=frame.index)


# ---------------------------------------------------------------------------------------
# data modules
# ---------------------------------------------------------------------------------------


class BaseDataModule(L.LightningDataModule):
    """Batch size, workers, and the sizes (``dims``) the task is built with."""

    dim_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers

    @property
    def dims(self) -> dict[str, int]:
        """Sizes for the task, keyed by names in :data:`DIM_NAMES`."""
        raise TypeError(f"{type(self).__name__} must define the dims property")

    def loader_kwargs(self) -> dict[str, Any]:
        return dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class SplitLoaders:
    """Loaders over ``self.datasets`` (``train``, ``val``, ``test``) for a BaseDataModule.

    Training shuffles and drops a last partial batch when there is more than one batch;
    validation and test keep every sample in order.
    """

    datasets: dict

    def train_dataloader(self) -> DataLoader:
        drop = len(self.datasets["train"]) > self.batch_size
        return DataLoader(self.datasets["train"], shuffle=True, drop_last=drop, **self.loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["val"], shuffle=False, **self.loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["test"], shuffle=False, drop_last=False, **self.loader_kwargs())

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

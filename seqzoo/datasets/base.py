"""What every domain's data code shares, and the data-module contract.

* registries behind ``seqzoo data synth <domain>`` and ``seqzoo data prepare <source>``;
* :func:`read_csv_checked`: a CSV reader whose errors name the file, the row and
  the column (a :class:`~seqzoo.errors.DataError`), never a numpy traceback;
* :func:`atomic_dir`: write a dataset into a temporary folder and move it into
  place only when complete, so a failure leaves nothing half-written;
* :class:`BaseDataModule`: the contract below, the loaders and the write-once rule.

The data-module contract (every ``seqzoo/datasets/<domain>/datamodule.py``):

``dims`` -- metadata only. The sizes the task is built with (keys from
  :data:`DIM_NAMES`: channels, lengths, classes, alphabet...), computed from init
  arguments alone: it never reads or writes a file. The CLI reads it while it
  instantiates the classes (on every DDP rank, before ``prepare_data``) and links each
  size to the task's init argument of the same name; the run records it in every
  checkpoint. A size that is a property of the files (columns, classes, image side) is
  therefore an init argument that ``setup`` checks against the data (a
  :class:`~seqzoo.errors.DataError` naming both when they differ). ``dims`` does not
  depend on anything but the data: a task takes the sizes it needs.
``prepare_data()`` -- write once. Lightning calls it on one process per node before
  ``setup``. When :meth:`BaseDataModule.data_ready` is false, the ``prepare`` init
  argument names what writes the data: ``"synth:<domain>"`` a registered synthetic
  generator, any other name a ``seqzoo data prepare`` source; the data is written into
  :meth:`BaseDataModule.prepare_target` (atomically, by the generator). Without
  ``prepare`` a missing dataset is a DataError that says how to bring one. Data that
  is there is never rewritten.
``setup(stage)`` -- read only. Reads the files (a DataError when they are missing:
  ``setup`` never writes) and fills ``self.datasets`` (``train``, ``val``, ``test``).
Batches -- :class:`BaseDataModule` provides the loaders: training shuffles and drops
  a last partial batch when there is more than one batch; validation, test and predict
  keep every item, in order, with ``eval_batch_size``; ``collate_fn`` pads variable
  lengths where a domain needs it.
``train_targets()`` -- the one hook for baselines and class statistics: the training
  split's targets (the items' ``target_key`` entries, flattened and concatenated).
  Tasks see data only through ``dims``, batches and this hook.

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
import torch
from torch import Tensor
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
    "action_dim",
    "n_node_features",
    "n_edge_features",
    "level",
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


def check_prepare_source(source: str) -> None:
    """A ConfigError unless ``source`` is ``synth:<registered domain>`` or a registered prepare source."""
    if not isinstance(source, str) or not source:
        raise ConfigError(f"data.prepare must be 'synth:<domain>' or a data source name, got {source!r}")
    if source.startswith("synth:"):
        get_synth(source.split(":", 1)[1])
    else:
        get_prepare(source)


def materialise(source: str, out: str | os.PathLike, **options: Any) -> Path:
    """Write data for a data module's ``prepare`` argument: ``synth:<domain>`` runs that
    synthetic generator, any other name the ``seqzoo data prepare`` source of that name."""
    if source.startswith("synth:"):
        return get_synth(source.split(":", 1)[1])(out=str(out), **options)
    return get_prepare(source)(out=str(out), **options)


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


def fitted_scaler(mean: Sequence[float], scale: Sequence[float]):
    """A StandardScaler with a saved mean and scale (nothing refitted)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_, scaler.scale_ = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
    scaler.var_, scaler.n_features_in_ = scaler.scale_**2, len(scaler.mean_)
    return scaler


def prediction_items(predictions: Any) -> list[Any]:
    """``seqzoo predict``'s outputs as one list of items in data order: the per-batch tuples
    (texts, audio of different lengths) of one process flattened, the items gathered from
    several processes kept as they are."""
    return [item for batch in predictions for item in (batch if isinstance(batch, (list, tuple)) else [batch])]


def class_table(probabilities: Any, class_names: Sequence[str], labels: Any = None,
                extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """A classifier's predictions as a table: one row per item with ``extra`` columns first, the
    predicted class name and its probability, the true class (where ``labels`` are given) and
    ``p_<class>`` for every class."""
    probs = torch.as_tensor(probabilities).detach().double().cpu().numpy()
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(f"expected probabilities (items, {len(class_names)}), got {probs.shape}")
    names = np.asarray([str(c) for c in class_names], dtype=object)
    table = pd.DataFrame(extra or {})
    table["predicted"] = names[probs.argmax(1)]
    table["probability"] = probs.max(1)
    if labels is not None:
        table["true"] = names[np.asarray(labels, dtype=np.int64)]
    for k, name in enumerate(names):
        table[f"p_{name}"] = probs[:, k]
    return table


# ---------------------------------------------------------------------------------------
# data modules
# ---------------------------------------------------------------------------------------


class BaseDataModule(L.LightningDataModule):
    """Batch sizes, workers, write-once preparation, loaders and ``dims`` (see the module docstring).

    Subclasses set ``self.path`` and define ``dims``, :meth:`data_ready` and ``setup``
    (filling ``self.datasets``); they may set ``collate_fn`` and ``target_key``.
    """

    collate_fn: ClassVar[Callable | None] = None
    target_key: ClassVar[str | None] = None
    data_name: ClassVar[str] = "data"  # what is missing, in errors ("forecasting CSV", ...)

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        prepare: str | None = None,
        eval_batch_size: int | None = None,
    ) -> None:
        """
        Args:
            batch_size: training batch size (and evaluation batch size unless ``eval_batch_size``).
            num_workers: DataLoader worker processes.
            prepare: what writes the data when it is missing: ``"synth:<domain>"`` or a
                ``seqzoo data prepare`` source name; ``None``: the data must be there.
            eval_batch_size: batch size of validation, test and predict (default ``batch_size``).
        """
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if prepare is not None:
            check_prepare_source(prepare)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.prepare = prepare
        self.datasets: dict[str, Any] = {}
        self.fitted_transform: dict[str, Any] | None = None  # a checkpoint's, see load_transform

    @property
    def dims(self) -> dict[str, Any]:
        """Sizes for the task, keyed by names in :data:`DIM_NAMES`; from init arguments only."""
        raise TypeError(f"{type(self).__name__} must define the dims property")

    def fold_count(self) -> int | None:
        """How many cross-validation folds (``fold`` values) the data gives, once it is in
        place; None when the data module has no folds (``compare --folds`` needs them)."""
        return None

    # -- write once ---------------------------------------------------------------------
    def data_ready(self) -> bool:
        """Whether the files ``setup`` reads are in place (a cheap existence check)."""
        raise TypeError(f"{type(self).__name__} must define data_ready()")

    def prepare_target(self) -> Path:
        """The folder the ``prepare`` source writes into (default: ``self.path``)."""
        return Path(self.path)

    def prepare_options(self) -> dict[str, Any]:
        """Keyword arguments for the ``prepare`` source besides ``out`` (default: none)."""
        return {}

    def missing_data_hint(self) -> str:
        """How to bring the data (the end of the error when it is missing)."""
        return "bring the data, or set data.prepare (see `seqzoo data list`)"

    def prepare_data(self) -> None:
        """Write the data once, when it is missing and ``prepare`` says how."""
        if self.data_ready():
            return
        if self.prepare is None:
            raise DataError(f"{self.data_name} not found: {self.path} -- {self.missing_data_hint()}")
        materialise(self.prepare, self.prepare_target(), **self.prepare_options())
        if not self.data_ready():
            raise DataError(f"data source {self.prepare!r} wrote {self.prepare_target()} but not the data "
                            f"{type(self).__name__} reads at {self.path}")

    def require_data(self) -> None:
        """For ``setup``: a DataError when the data is missing (setup never writes)."""
        if self.data_ready():
            return
        if self.prepare is not None:
            raise DataError(f"{self.data_name} not found: {self.path} -- it is written by prepare_data() from "
                            f"{self.prepare!r}; a Trainer calls it before setup, call it yourself outside one")
        raise DataError(f"{self.data_name} not found: {self.path} -- {self.missing_data_hint()}")

    # -- batches --------------------------------------------------------------------------
    def loader_kwargs(self) -> dict[str, Any]:
        return dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=type(self).collate_fn,
        )

    def split_dataset(self, split: str):
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, "test"))
        if split not in self.datasets:
            raise TypeError(f"{type(self).__name__}.setup did not fill datasets[{split!r}]")
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        dataset = self.split_dataset("train")
        drop = len(dataset) > self.batch_size
        return DataLoader(dataset, shuffle=True, drop_last=drop, **self.loader_kwargs())

    def eval_dataloader(self, split: str) -> DataLoader:
        kwargs = {**self.loader_kwargs(), "batch_size": self.eval_batch_size}
        return DataLoader(self.split_dataset(split), shuffle=False, drop_last=False, **kwargs)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    # -- the fitted transform (saved in checkpoints, reused for prediction) ---------------
    def transform_state(self) -> dict[str, Any]:
        """What this module fitted or read from the training data and a trained model needs
        again to take new data in the user's units (scaler, column names and order, class
        names...), as plain JSON-able values; ``{}`` when there is nothing. Saved in every
        checkpoint (``ckpt["seqzoo"]["transform"]``) and handed back through
        :meth:`load_transform` when a trained model predicts, so nothing is refitted."""
        return {}

    def load_transform(self, state: dict[str, Any] | None) -> None:
        """Use a checkpoint's :meth:`transform_state` instead of fitting one (before ``setup``)."""
        self.fitted_transform = dict(state) if state else None

    def prediction_table(self, predictions: Any) -> pd.DataFrame | None:
        """``seqzoo predict``'s readable output: the predictions of :meth:`predict_dataloader`
        (concatenated, in its order) as a table in the user's units; None when the domain has
        no table form (the raw ``predictions.pt`` is still written)."""
        return None

    # -- the baseline hook --------------------------------------------------------------
    def train_targets(self) -> Tensor:
        """The training split's targets, flattened and concatenated (one value per item for
        scalar targets): what trivial baselines and class weights are computed from."""
        if self.target_key is None:
            raise TypeError(f"{type(self).__name__} has no training targets (no target_key)")
        dataset = self.split_dataset("train")
        return torch.cat([torch.as_tensor(dataset[i][self.target_key]).reshape(-1) for i in range(len(dataset))])


class SplitLoaders:
    """Kept for data modules written before the loaders moved into :class:`BaseDataModule`
    (a no-op mixin: ``class M(SplitLoaders, BaseDataModule)`` still works)."""

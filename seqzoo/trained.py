"""Trained models after training: load one in one call, predict on new data in the user's units.

    >>> import seqzoo
    >>> task = seqzoo.load("runs/weather/gru/seed0")           # the run's best checkpoint
    >>> table = seqzoo.predict("runs/weather/gru/seed0", "new.csv", windows="last")

:func:`load` rebuilds the task from the checkpoint alone (the resolved config and data sizes
seqzoo stores in every checkpoint; no data is read), loads the weights, switches to eval mode
and attaches the data transform the training data module fitted (``task.data_transform``: the
scaler, column names...). :func:`predict` builds the run's data module on a file, hands it that
transform -- nothing is refitted on the new file -- and returns the domain's prediction table
(forecasting: one row per origin and step ahead, in the file's units).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from seqzoo.checkpoints import CHECKPOINT_KEY, build_datamodule, build_task, config_of, load_checkpoint
from seqzoo.errors import ConfigError


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    p = Path(path)
    if p.is_dir():
        for folder in (p / "checkpoints", p):
            for name in ("best.ckpt", "last.ckpt"):
                if (folder / name).is_file():
                    return folder / name
        raise ConfigError(f"{p}: no checkpoints/best.ckpt or last.ckpt in this folder (has the run been trained?)")
    if not p.exists():
        raise ConfigError(f"checkpoint not found: {p} (no such file or run folder)")
    return p


def load(path: str | os.PathLike):
    """The trained task of a run folder or checkpoint file, in eval mode on the CPU, with
    ``task.data_transform`` (dict, ``{}`` for checkpoints written before transforms were saved),
    ``task.seqzoo_config`` (the resolved config), ``task.seqzoo_dims`` (the data sizes) and
    ``task.checkpoint_path``."""
    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    config = config_of(ckpt, ckpt_path)
    if config is None:
        raise ConfigError(f"{ckpt_path}: no seqzoo config inside and no config.yaml beside it "
                          "(a checkpoint written by seqzoo fit/compare rebuilds its model)")
    record = ckpt.get(CHECKPOINT_KEY) or {}
    dims = record.get("dims") or build_datamodule(config).dims
    task = build_task(config, dims)
    task.load_state_dict(ckpt["state_dict"])
    task.eval()
    task.data_transform = dict(record.get("transform") or {})
    task.seqzoo_config, task.seqzoo_dims = config, dict(dims)
    task.checkpoint_path = ckpt_path
    return task


def datamodule_for(task, path: str | os.PathLike | None = None, **data_overrides: Any):
    """The trained run's data module with the trained transform, on ``path`` (default: the
    training data) and any data settings overridden (``predict_windows``, ``batch_size``...)."""
    config = copy.deepcopy(task.seqzoo_config)
    data = config.setdefault("data", {}).setdefault("init_args", {})
    if path is not None:
        if not Path(path).exists():
            raise ConfigError(f"no such data file: {path}")
        data["path"], data["prepare"] = str(path), None
    data.update(data_overrides)
    dm = build_datamodule(config)
    dm.load_transform(task.data_transform)
    return dm


def predict(run: str | os.PathLike, path: str | os.PathLike | None = None, windows: str | None = None,
            batch_size: int | None = None):
    """Predictions of a trained run on ``path`` (default: the training data's test split) as the
    domain's table in the user's units (a pandas DataFrame), else the raw predictions tensor.

    ``windows`` (forecasting): ``test``, ``all`` or ``last`` (see
    :class:`seqzoo.datasets.forecasting.ForecastingDataModule` ``predict_windows``)."""
    import torch

    task = run if hasattr(run, "seqzoo_config") else load(run)  # a loaded task, or where to load one
    overrides: dict[str, Any] = {}
    if windows is not None:
        overrides["predict_windows"] = windows
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    dm = datamodule_for(task, path, **overrides)
    if path is None:
        dm.prepare_data()
    dm.setup("predict")
    with torch.no_grad():
        outputs = [task.predict_step(batch, i) for i, batch in enumerate(dm.predict_dataloader())]
    predictions = torch.cat(outputs) if outputs and isinstance(outputs[0], torch.Tensor) else outputs
    table = dm.prediction_table(predictions)
    return predictions if table is None else table

"""Checkpoints as seqzoo writes them, and rebuilding a trained task from one.

Every checkpoint a run writes carries, beside Lightning's own state, a ``"seqzoo"``
record (:data:`CHECKPOINT_KEY`): the resolved config (YAML text) and the data sizes
(``dims``). So a checkpoint alone rebuilds its model -- no data is read:
:func:`read_checkpoint_record` -> :func:`build_task` -> ``load_state_dict``.

Used by ``seqzoo export``, the laser pipeline and the CLI's ``--ckpt_path`` checks; it
imports only the config readers, so none of those import each other through it.
"""

from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path

import yaml

from seqzoo.errors import ConfigError
from seqzoo.run_config import import_class, rewrite_backbone_names

CHECKPOINT_KEY = "seqzoo"


def load_checkpoint(ckpt_path: str | os.PathLike) -> dict:
    """The raw checkpoint dict; ConfigError naming the file when missing, truncated or not a checkpoint."""
    import torch

    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path}: cannot be read as a checkpoint (truncated or not a torch file: {reason})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def config_of(ckpt: dict, path: str | os.PathLike) -> dict | None:
    """The resolved config stored in a checkpoint, else the run's ``config.yaml`` beside it, else None."""
    path = Path(path)
    config_text = (ckpt.get(CHECKPOINT_KEY) or {}).get("config")
    if config_text is None:
        for candidate in (path.parent / "config.yaml", path.parent.parent / "config.yaml"):
            if candidate.is_file():
                config_text = candidate.read_text()
                break
    return None if config_text is None else yaml.safe_load(config_text)


def read_checkpoint_record(ckpt_path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(config, dims, state_dict) of a seqzoo checkpoint; the config may also come from
    the run's ``config.yaml`` beside the checkpoint folder."""
    ckpt = load_checkpoint(ckpt_path)
    config = config_of(ckpt, ckpt_path)
    if config is None:
        raise ConfigError(f"{ckpt_path}: no seqzoo config inside and no config.yaml beside it")
    dims = (ckpt.get(CHECKPOINT_KEY) or {}).get("dims") or {}
    return config, dims, ckpt["state_dict"]


def build_task(config: dict, dims: dict):
    """Instantiate the task of a resolved config with the given data sizes (no data read)."""
    from jsonargparse import ArgumentParser

    model_cfg = copy.deepcopy(config.get("model"))
    if not isinstance(model_cfg, dict) or "class_path" not in model_cfg:
        raise ConfigError("config has no model.class_path")
    rewrite_backbone_names({"model": model_cfg})
    task_cls = import_class(model_cfg["class_path"])
    accepted = inspect.signature(task_cls.__init__).parameters
    init = model_cfg.setdefault("init_args", {})
    for old, new in getattr(task_cls, "moved_options", {}).items():  # a checkpoint saved before a move
        if old in init and old not in accepted:
            group, key = new.split(".", 1)
            init[group] = {**(init.get(group) or {}), key: init.pop(old)}
    for key, value in dims.items():
        if key in accepted:
            init[key] = value
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(task_cls, "model", required=True)  # the task's own class: no import of the tasks' base
    namespace = parser.parse_object({"model": model_cfg})
    return parser.instantiate_classes(namespace).model


def build_datamodule(config: dict):
    """Instantiate the data module of a resolved config (nothing is read or written)."""
    from jsonargparse import ArgumentParser

    from seqzoo.datasets.base import BaseDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(BaseDataModule, "data", required=True)
    namespace = parser.parse_object({"data": copy.deepcopy(config.get("data"))})
    return parser.instantiate_classes(namespace).data


def check_fits(ckpt_path: str | os.PathLike, model, ckpt: dict | None = None) -> None:
    """ConfigError (one line, naming the file) unless the checkpoint's weights load into ``model``.

    Compares the task class and every tensor's name and shape, so a gru checkpoint given to an
    lstm run, or a forecasting checkpoint to a vision run, is refused before Lightning loads it.
    """
    ckpt = load_checkpoint(ckpt_path) if ckpt is None else ckpt
    config = config_of(ckpt, ckpt_path) or {}
    saved_task = (config.get("model") or {}).get("class_path") if isinstance(config.get("model"), dict) else None
    want_task = f"{type(model).__module__}.{type(model).__qualname__}"
    if saved_task and saved_task != want_task:
        raise ConfigError(f"{ckpt_path}: holds a {saved_task.rsplit('.', 1)[-1]}, this run trains a "
                          f"{type(model).__name__}")
    saved, want = ckpt["state_dict"], model.state_dict()
    missing = [k for k in want if k not in saved]
    unexpected = [k for k in saved if k not in want]
    wrong = [k for k in want if k in saved and tuple(saved[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or wrong:
        backbone = _backbone_of(config)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} tensors of another shape (e.g. {k}: {tuple(saved[k].shape)} saved, "
                         f"{tuple(want[k].shape)} here)")
        trained = f" (trained with backbone {backbone})" if backbone else ""
        raise ConfigError(f"{ckpt_path}: does not fit this model{trained}: {'; '.join(parts)}")


def _backbone_of(config: dict) -> str | None:
    model = config.get("model") if isinstance(config, dict) else None
    init = (model or {}).get("init_args") if isinstance(model, dict) else None
    value = (init or {}).get("backbone") if isinstance(init, dict) else None
    path = value.get("class_path") if isinstance(value, dict) else value
    return path.rsplit(".", 1)[-1].lower() if isinstance(path, str) else None

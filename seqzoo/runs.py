"""Run bookkeeping shared by the CLI verbs, ``compare`` and ``export``.

* Backbone registry names in configs and on the command line (``backbone: mamba``,
  ``--model.backbone mamba``) become class paths before jsonargparse sees them.
* Each run lives in ``runs/<config name>/<backbone>/seed<k>/``: resolved config,
  CSV metrics, TensorBoard logs, checkpoints in a pinned ``checkpoints/`` folder
  (so ``--ckpt_path last`` resumes), and ``status.json``.
* :class:`RunRecorder` writes that status, stores the resolved config and the data
  sizes in every checkpoint (so a checkpoint alone rebuilds its model), and removes
  a run folder that failed before it saved anything.
"""

from __future__ import annotations

import copy
import csv
import importlib
import inspect
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from seqzoo.backbones.base import Backbone, get_backbone_class
from seqzoo.errors import ConfigError

RUNS_ROOT = "runs"
CHECKPOINT_KEY = "seqzoo"


# ---------------------------------------------------------------------------------------
# registry names -> class paths
# ---------------------------------------------------------------------------------------


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def resolve_backbone_value(value: str) -> str:
    """A registry name becomes its class path; class paths, JSON and YAML pass through."""
    v = value.strip()
    if not v or "." in v or v[0] in "{[" or ":" in v:
        return value
    return class_path(get_backbone_class(v))


def _backbone_holder(config: dict) -> dict | None:
    model = config.get("model")
    if not isinstance(model, dict):
        return None
    init = model.get("init_args")
    if isinstance(init, dict) and "backbone" in init:
        return init
    return model if "backbone" in model else None


def rewrite_backbone_names(config: dict) -> bool:
    """Rewrite a registry name at ``model[.init_args].backbone`` in place; True if changed."""
    holder = _backbone_holder(config)
    if holder is None:
        return False
    value = holder["backbone"]
    if isinstance(value, str):
        new = resolve_backbone_value(value)
        if new != value:
            holder["backbone"] = {"class_path": new}
            return True
    elif isinstance(value, dict) and isinstance(value.get("class_path"), str):
        new = resolve_backbone_value(value["class_path"])
        if new != value["class_path"]:
            value["class_path"] = new
            return True
    return False


_BACKBONE_FLAGS = (
    "--model.backbone",
    "--model.init_args.backbone",
    "--model.backbone.class_path",
    "--model.init_args.backbone.class_path",
)


def load_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a YAML mapping (model:, data:, trainer: ...)")
    return data


def rewrite_args(args: list[str]) -> tuple[list[str], str]:
    """Rewrite registry names in ``--config`` files and backbone flags.

    Returns the new argument list and the config name (stem of the last config file).
    A config that needs rewriting is passed on as YAML text.
    """
    out: list[str] = []
    config_name = "default"
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, inline = arg.partition("=")
        takes_value = key in ("--config", "-c") or key in _BACKBONE_FLAGS
        if takes_value and not eq and i + 1 >= len(args):
            raise ConfigError(f"{key} needs a value")
        if takes_value:
            value = inline if eq else args[i + 1]
            i += 1 if eq else 2
            if key in ("--config", "-c"):
                config = load_yaml(value)
                config_name = Path(value).stem
                if rewrite_backbone_names(config):
                    value = yaml.safe_dump(config, sort_keys=False)
            else:
                value = resolve_backbone_value(value)
            out += [key, value]
            continue
        out.append(arg)
        i += 1
    return out, config_name


# ---------------------------------------------------------------------------------------
# run directories
# ---------------------------------------------------------------------------------------


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"cannot import class {path!r}") from None


def backbone_name_of(class_path_: str) -> str:
    cls = import_class(class_path_)
    return getattr(cls, "name", "") or cls.__name__.lower()


def default_run_dir(config_name: str, backbone: str, seed: Any) -> Path:
    return Path(RUNS_ROOT) / config_name / backbone / f"seed{seed}"


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    tmp = run_dir / "status.json.partial"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, run_dir / "status.json")


class RunRecorder(Callback):
    """Status file, config-in-checkpoint, and cleanup of runs that failed before saving."""

    def __init__(self, run_dir: Path, existed: bool, config_yaml: str, dims: dict | None, verb: str) -> None:
        self.run_dir = Path(run_dir)
        self.existed = existed
        self.config_yaml = config_yaml
        self.dims = dims
        self.verb = verb

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            write_status(self.run_dir, "running", verb=self.verb)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.interrupted:
            write_status(self.run_dir, "completed", verb=self.verb, epochs=trainer.current_epoch,
                         global_step=trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"config": self.config_yaml, "dims": self.dims}

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        saved = any((self.run_dir / "checkpoints").glob("*.ckpt"))
        if not self.existed and not saved and self.verb == "fit":
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        interrupted = isinstance(exception, KeyboardInterrupt)
        write_status(self.run_dir, "interrupted" if interrupted else "failed", verb=self.verb,
                     error=f"{type(exception).__name__}: {exception}"[:2000],
                     resume="seqzoo fit ... --ckpt_path last" if saved else None)


class PredictionWriter(BasePredictionWriter):
    """``seqzoo predict`` writes its outputs to ``<run dir>/predictions.pt``: a dict with the
    concatenated predictions (``"predictions"``) and the number of batches."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        super().__init__(write_interval="epoch")
        self.path = Path(run_dir) / "predictions.pt"

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        import torch

        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        tensors = [p for p in outputs if isinstance(p, torch.Tensor)]
        record = {"predictions": torch.cat(tensors) if tensors else outputs, "batches": len(outputs)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".partial")
        torch.save(record, tmp)
        os.replace(tmp, self.path)
        print(f"wrote {self.path}")


class RunCSVLogger(CSVLogger):
    """CSVLogger that appends to the run's ``metrics.csv``.

    Lightning's own deletes the file when its folder is not empty, which would wipe
    the history of a resumed run or of a fit followed by ``seqzoo test``.
    """

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = [k for k in header if k]

    def _check_log_dir_exists(self) -> None:
        """Keep earlier metrics (the parent deletes them)."""


# ---------------------------------------------------------------------------------------
# rebuilding a task from a saved config
# ---------------------------------------------------------------------------------------


def read_checkpoint_record(ckpt_path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(config, dims, state_dict) of a seqzoo checkpoint; the config may also come from
    the run's ``config.yaml`` beside the checkpoint folder."""
    import torch

    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(f"{path}: cannot be read as a checkpoint: {err}") from None
    record = ckpt.get(CHECKPOINT_KEY) or {}
    config_text = record.get("config")
    if config_text is None:
        for candidate in (path.parent / "config.yaml", path.parent.parent / "config.yaml"):
            if candidate.is_file():
                config_text = candidate.read_text()
                break
    if config_text is None:
        raise ConfigError(f"{path}: no seqzoo config inside and no config.yaml beside it")
    config = yaml.safe_load(config_text)
    dims = record.get("dims") or {}
    if "state_dict" not in ckpt:
        raise ConfigError(f"{path}: no state_dict in the checkpoint")
    return config, dims, ckpt["state_dict"]


def build_task(config: dict, dims: dict):
    """Instantiate the task of a resolved config with the given data sizes (no data read)."""
    from jsonargparse import ArgumentParser

    from seqzoo.domains.base import BaseTask

    model_cfg = copy.deepcopy(config.get("model"))
    if not isinstance(model_cfg, dict) or "class_path" not in model_cfg:
        raise ConfigError("config has no model.class_path")
    rewrite_backbone_names({"model": model_cfg})
    task_cls = import_class(model_cfg["class_path"])
    accepted = inspect.signature(task_cls.__init__).parameters
    init = model_cfg.setdefault("init_args", {})
    for key, value in dims.items():
        if key in accepted:
            init[key] = value
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(BaseTask, "model", required=True)
    namespace = parser.parse_object({"model": model_cfg})
    return parser.instantiate_classes(namespace).model


def build_datamodule(config: dict):
    from jsonargparse import ArgumentParser

    from seqzoo.datasets.base import BaseDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(BaseDataModule, "data", required=True)
    namespace = parser.parse_object({"data": copy.deepcopy(config.get("data"))})
    return parser.instantiate_classes(namespace).data


def task_class_of(config: dict) -> type:
    model = config.get("model") or {}
    if not isinstance(model, dict) or "class_path" not in model:
        raise ConfigError("config has no model.class_path")
    return import_class(model["class_path"])


def backbone_class_of(config: dict) -> type[Backbone]:
    holder = _backbone_holder(config)
    if holder is None:
        raise ConfigError("config has no model.init_args.backbone")
    value = holder["backbone"]
    path = value if isinstance(value, str) else value.get("class_path", "")
    return import_class(resolve_backbone_value(path))

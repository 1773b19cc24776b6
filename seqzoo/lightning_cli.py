"""seqzoo's LightningCLI: the parser and the run wiring behind ``fit|validate|test|predict``
and behind each ``compare`` run.

:func:`make_cli` builds ``SeqzooCLI`` (LightningCLI in subclass mode, jsonargparse): unknown
keys and wrong types are rejected before training, naming the key; the data module's
``dims`` reach the task through links; the run folder, its loggers, checkpoints and
:class:`seqzoo.runs.RunRecorder` are set up before the trainer starts.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any


@functools.cache
def quiet_lightning() -> None:
    """Drop Lightning's advertising tip and a deprecation warning from its own internals."""
    import logging
    import warnings

    class _NoTip(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in str(record.msg)

    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTip())
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # make_cli passes the arguments explicitly and keeps sys.argv for DDP's relaunch
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended to run from within Python.*")


def make_cli(args: list[str] | dict, config_name: str = "default", run: bool = True, **kwargs: Any):
    """The LightningCLI of seqzoo (also used by ``compare``'s runs).

    ``sys.argv`` is left as it is: Lightning's DDP launcher starts the other ranks by running
    the same command line again, so it must be the user's command (``seqzoo fit ...``).
    """
    from lightning.pytorch.cli import LightningCLI

    from seqzoo import checkpoints, resumable_data
    from seqzoo.checkpointing import RunCheckpoints
    from seqzoo.datasets.base import DIM_NAMES, BaseDataModule
    from seqzoo.domains.base import BaseTask
    from seqzoo.errors import ConfigError
    from seqzoo.run_config import backbone_name_of, import_class
    from seqzoo.runs import HparamsLogger, PredictionWriter, RunRecorder, run_hparams
    from seqzoo.status import default_run_dir, run_status

    class SeqzooCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--run_dir",
                type=str | None,
                default=None,
                help="Run folder (default: runs/<config name>/<backbone>/seed<k>)",
            )
            parser.add_argument("--checkpointing.every_n_train_steps", type=int | None, default=None,
                                help="also write last.ckpt every this many optimiser steps")
            parser.add_argument("--checkpointing.every_n_minutes", type=float | None, default=5.0,
                                help="also write last.ckpt after this many minutes of training (null: never)")
            for name in DIM_NAMES:
                parser.link_arguments(
                    "data", f"model.init_args.{name}", compute_fn=functools.partial(_dim, name), apply_on="instantiate"
                )

        def _cfg(self):
            return self.config[self.config.subcommand] if self.config.get("subcommand") else self.config

        def _run_dir(self, cfg) -> Path:
            backbone = backbone_name_of(cfg.model.init_args.backbone.class_path)
            return Path(cfg.run_dir or default_run_dir(config_name, backbone, cfg.seed_everything))

        def _parse_ckpt_path(self) -> None:
            """``--ckpt_path last|best|FILE``: resolved in this run's folder and read once, so a missing,
            truncated or foreign file is one clear error before anything is built. (Lightning's own
            version re-reads saved hyperparameters, which seqzoo tasks do not save.)"""
            self._ckpt = None
            cfg = self._cfg()
            path = cfg.get("ckpt_path")
            if not path and self.config.get("subcommand") == "predict":  # never predict with untrained weights
                folder = self._run_dir(cfg) / "checkpoints"
                found = [name for name in ("best", "last") if (folder / f"{name}.ckpt").is_file()]
                if not found:
                    raise ConfigError(f"seqzoo predict needs a trained model: no {folder}/best.ckpt or last.ckpt; "
                                      "pass --ckpt_path FILE (or --run_dir / --seed_everything of the trained run)")
                path = found[0]
            if not path:
                return
            if path in ("last", "best"):
                resolved = self._run_dir(cfg) / "checkpoints" / f"{path}.ckpt"
                if not resolved.is_file():
                    raise ConfigError(f"--ckpt_path {path}: no {resolved} (has this run folder been trained? "
                                      "--run_dir or --seed_everything choose the folder)")
                cfg.ckpt_path = path = str(resolved)
            self._ckpt = (path, checkpoints.load_checkpoint(path))

        def _check_ckpt(self) -> None:
            ckpt, self._ckpt = getattr(self, "_ckpt", None), None
            if ckpt is not None:
                checkpoints.check_fits(ckpt[0], self.model, ckpt[1])
                if self.subcommand != "fit":  # evaluate/predict with the trained scaler, never a refitted one
                    transform = (ckpt[1].get(checkpoints.CHECKPOINT_KEY) or {}).get("transform")
                    if transform:
                        self.datamodule.load_transform(transform)

        before_fit = before_validate = before_test = before_predict = _check_ckpt

        def before_instantiate_classes(self) -> None:
            cfg = self._cfg()
            run_dir = self._run_dir(cfg)
            if self.subcommand == "fit" and not cfg.get("ckpt_path"):
                run_dir = _fresh_run_dir(run_dir)
            cfg.run_dir = str(run_dir)
            _retarget_frozen_paths(cfg.trainer, run_dir)
            self.run_dir, self.run_dir_existed = run_dir, run_dir.exists()
            if self.run_dir_existed:
                _report_previous_run(run_status(run_dir), run_dir)
            trainer = cfg.trainer
            trainer.default_root_dir = str(run_dir)
            if trainer.logger in (None, True):
                trainer.logger = [
                    {"class_path": "seqzoo.runs.RunCSVLogger",
                     "init_args": {"save_dir": str(run_dir), "name": "", "version": ""}},
                    {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                     "init_args": {"save_dir": str(run_dir), "name": "tensorboard", "version": ""}},
                ]
            callbacks = list(trainer.callbacks or [])
            fitting = self.subcommand in (None, "fit")
            self.logging = trainer.logger not in (None, False, []) and trainer.logger != {}
            if fitting and self.logging and not any("LearningRateMonitor" in str(getattr(c, "class_path", c))
                                                    for c in callbacks):
                callbacks.append({"class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
                                  "init_args": {"logging_interval": "step"}})
            has_checkpoint = any("ModelCheckpoint" in str(getattr(c, "class_path", c)) for c in callbacks)
            self.checkpointing = fitting and trainer.enable_checkpointing is not False
            if self.checkpointing and not has_checkpoint:
                task_cls = import_class(cfg.model.class_path)
                callbacks.append({
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(run_dir / "checkpoints"),
                        "filename": "best",
                        "monitor": task_cls.monitor,
                        "mode": task_cls.monitor_mode,
                        "save_top_k": 1,
                        "save_last": False,  # last.ckpt is RunCheckpoints': the latest state, always
                        "enable_version_counter": False,
                    },
                })
            trainer.callbacks = callbacks
            self._hparams = run_hparams(cfg.as_dict())
            self._schedule = cfg.checkpointing
            if self.subcommand not in (None, "fit") and (run_dir / "config.yaml").exists():
                self.save_config_callback = None  # evaluating a trained run never rewrites its config
            self._config_yaml = self._parser(self.subcommand).dump(cfg)

        def instantiate_trainer(self, **kw: Any):
            trainer = super().instantiate_trainer(**kw)
            dims = getattr(self.datamodule, "dims", None)
            trainer.callbacks.append(
                RunRecorder(self.run_dir, self.run_dir_existed, self._config_yaml, dims, self.subcommand or "fit",
                            self.datamodule)
            )
            if self.checkpointing:
                logs_csv = any(type(lg).__name__ == "RunCSVLogger" for lg in trainer.loggers)
                trainer.callbacks.append(RunCheckpoints(
                    self.run_dir / "checkpoints", every_n_train_steps=self._schedule.every_n_train_steps,
                    every_n_minutes=self._schedule.every_n_minutes,
                    metrics_file=self.run_dir / "metrics.csv" if logs_csv else None, run_dir=self.run_dir))
            if self.subcommand in (None, "fit") and any(type(lg).__name__ == "TensorBoardLogger"
                                                        for lg in trainer.loggers):
                trainer.callbacks.append(HparamsLogger(self._hparams))
            if self.subcommand == "predict":
                trainer.callbacks.append(PredictionWriter(self.run_dir))
            resumable_data.install(self.datamodule, trainer, seed=torch_seed())
            return trainer

    quiet_lightning()
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    kwargs.setdefault("parser_kwargs", {"prog": "seqzoo", "exit_on_error": False})
    return SeqzooCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        args=args,
        run=run,
        **kwargs,
    )


def expand_help_names(args: list[str]) -> list[str]:
    """``--model.help ForecastingTask`` -> ``--model.help seqzoo.domains.forecasting.ForecastingTask``.

    jsonargparse's ``--<key>.help`` takes a class path; a short class name of a seqzoo task,
    data module or backbone (or a backbone registry name) becomes its path here. Other values
    pass through; a short name under ``--model.``/``--data.`` that names no seqzoo class is a
    ConfigError with the closest names.
    """
    out, i = [], 0
    while i < len(args):
        key, eq, value = args[i].partition("=")
        if not key.endswith(".help") or not key.startswith("--") or (not eq and i + 1 >= len(args)):
            out.append(args[i])
            i += 1
            continue
        value = value if eq else args[i + 1]
        if "." not in value and not value.startswith("-"):
            value = _help_class_path(key, value)
        out += [f"{key}={value}"] if eq else [key, value]
        i += 1 if eq else 2
    return out


def _help_class_path(key: str, name: str) -> str:
    import difflib

    known = seqzoo_classes()
    if name in known:
        return known[name]
    if not key.startswith(("--model.", "--data.")):
        return name  # e.g. --trainer.callbacks.help ModelCheckpoint: jsonargparse's own lookup
    from seqzoo.errors import ConfigError

    close = difflib.get_close_matches(name, list(known), n=4, cutoff=0.6)
    raise ConfigError(f"{key} {name}: no seqzoo task, data module or backbone of that name"
                      + (f"; closest: {', '.join(close)}" if close else "") + " (a dotted class path also works)")


@functools.cache
def seqzoo_classes() -> dict[str, str]:
    """Short name -> class path of every seqzoo task, data module and backbone (backbones also
    by registry name), as ``--model.help NAME`` accepts them."""
    import importlib
    import pkgutil

    import seqzoo.datasets
    import seqzoo.domains
    from seqzoo.backbones import get_backbone_class, list_backbones
    from seqzoo.datasets.base import BaseDataModule
    from seqzoo.domains.base import BaseTask
    from seqzoo.run_config import class_path

    for module in pkgutil.iter_modules(seqzoo.domains.__path__):
        importlib.import_module(f"seqzoo.domains.{module.name}")
    found: dict[str, str] = {}
    for base in (BaseTask, BaseDataModule):
        todo = list(base.__subclasses__())
        while todo:
            cls = todo.pop()
            todo += cls.__subclasses__()
            if cls.__module__.startswith("seqzoo.") and not cls.__name__.startswith("_"):
                found.setdefault(cls.__name__, class_path(cls))
    for name in list_backbones():
        cls = get_backbone_class(name)
        found.setdefault(cls.__name__, class_path(cls))
        found.setdefault(name, class_path(cls))
    return found


def torch_seed() -> int:
    """The seed ``seed_everything`` gave torch in this process (the shuffle order's base seed)."""
    import torch

    return int(torch.initial_seed() % 2**31)


def _retarget_frozen_paths(trainer_cfg: Any, run_dir: Path) -> None:
    """A run's saved ``config.yaml`` names its own folder in the loggers' ``save_dir`` and the
    checkpoint callback's ``dirpath``; pointed at another run folder (a new fit from it, or
    ``--run_dir``), those paths move to ``run_dir`` so nothing is written into the old run."""
    entries = []
    for key in ("logger", "callbacks"):
        value = trainer_cfg.get(key) if hasattr(trainer_cfg, "get") else None
        if isinstance(value, (list, tuple)):
            entries += list(value)
        elif value not in (None, True, False):
            entries.append(value)
    for entry in entries:
        init = entry.get("init_args") if hasattr(entry, "get") else None
        if init is None or not hasattr(init, "get"):
            continue
        for key in ("save_dir", "dirpath"):
            value = init.get(key)
            if not value:
                continue
            path = Path(str(value))
            folder = path.parent if path.name == "checkpoints" else path
            is_run = (folder / "config.yaml").exists() or (folder / "status.json").exists()
            if is_run and folder.resolve() != run_dir.resolve():
                init[key] = str(run_dir / "checkpoints" if path.name == "checkpoints" else run_dir)


def _fresh_run_dir(run_dir: Path) -> Path:
    """A new ``fit`` never overwrites a trained run: when ``run_dir`` already holds checkpoints
    (re-running a command, or a run's own saved ``config.yaml``, whose paths are frozen), the
    run goes to the next free ``<run_dir>-2``, ``-3``... and says so. ``--ckpt_path last``
    continues the old run in its own folder."""
    if not any((run_dir / "checkpoints").glob("*.ckpt")):
        return run_dir
    k = 2
    while (run_dir.parent / f"{run_dir.name}-{k}").exists():
        k += 1
    fresh = run_dir.parent / f"{run_dir.name}-{k}"
    print(f"seqzoo: note: {run_dir} already holds a trained run; this fit goes to {fresh} "
          f"(--ckpt_path last continues the old run, --run_dir chooses another folder)", file=sys.stderr)
    return fresh


def _report_previous_run(record: dict | None, run_dir: Path) -> None:
    if record and record.get("status") == "died":
        last = (record.get("last_checkpoint") or {}).get("path")
        print(f"seqzoo: note: the previous run in {run_dir} (pid {record.get('pid')} on {record.get('host')}) died "
              + (f"after saving {last}; --ckpt_path last resumes it" if last else "before saving a checkpoint"),
              file=sys.stderr)


def _dim(name: str, datamodule) -> Any:
    """Link source: one size from the data module (None when it has no such size)."""
    return datamodule.dims.get(name)

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


def make_cli(args: list[str] | dict, config_name: str = "default", run: bool = True, **kwargs: Any):
    """The LightningCLI of seqzoo (also used by ``compare``'s runs)."""
    from lightning.pytorch.cli import LightningCLI

    from seqzoo.datasets.base import DIM_NAMES, BaseDataModule
    from seqzoo.domains.base import BaseTask
    from seqzoo.run_config import backbone_name_of, import_class
    from seqzoo.runs import PredictionWriter, RunRecorder, default_run_dir

    class SeqzooCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--run_dir",
                type=str | None,
                default=None,
                help="Run folder (default: runs/<config name>/<backbone>/seed<k>)",
            )
            for name in DIM_NAMES:
                parser.link_arguments(
                    "data", f"model.init_args.{name}", compute_fn=functools.partial(_dim, name), apply_on="instantiate"
                )

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            backbone = backbone_name_of(cfg.model.init_args.backbone.class_path)
            run_dir = Path(cfg.run_dir or default_run_dir(config_name, backbone, cfg.seed_everything))
            cfg.run_dir = str(run_dir)
            self.run_dir, self.run_dir_existed = run_dir, run_dir.exists()
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
            has_checkpoint = any("ModelCheckpoint" in str(getattr(c, "class_path", c)) for c in callbacks)
            if self.subcommand in (None, "fit") and trainer.enable_checkpointing is not False and not has_checkpoint:
                task_cls = import_class(cfg.model.class_path)
                callbacks.append({
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(run_dir / "checkpoints"),
                        "filename": "best",
                        "monitor": task_cls.monitor,
                        "mode": task_cls.monitor_mode,
                        "save_top_k": 1,
                        "save_last": True,
                        "enable_version_counter": False,
                    },
                })
                trainer.callbacks = callbacks
            self._config_yaml = self._parser(self.subcommand).dump(cfg)

        def instantiate_trainer(self, **kw: Any):
            trainer = super().instantiate_trainer(**kw)
            dims = getattr(self.datamodule, "dims", None)
            trainer.callbacks.append(
                RunRecorder(self.run_dir, self.run_dir_existed, self._config_yaml, dims, self.subcommand or "fit")
            )
            if self.subcommand == "predict":
                trainer.callbacks.append(PredictionWriter(self.run_dir))
            return trainer

    quiet_lightning()
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    kwargs.setdefault("parser_kwargs", {"prog": "seqzoo"})
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when given args beside sys.argv
    try:
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
    finally:
        sys.argv = argv


def _dim(name: str, datamodule) -> Any:
    """Link source: one size from the data module (None when it has no such size)."""
    return datamodule.dims.get(name)

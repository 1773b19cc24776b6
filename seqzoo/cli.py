"""The ``seqzoo`` command.

    seqzoo fit|validate|test|predict --config CONFIG [--model.backbone NAME] [--any.key value]
    seqzoo compare --config CONFIG --backbones a,b,c|all --seeds 0,1,2 [--max-epochs N] --out DIR
    seqzoo reproduce etth1 --out DIR [--tables a,b] [--horizons 96,336] [--seeds 2021]
    seqzoo export --ckpt CKPT --out model.onnx [--streaming]
    seqzoo backbones
    seqzoo data synth <domain> --out DIR [options] | prepare <source> --out DIR | list
    seqzoo pipeline laser --forecast CKPT --detect CKPT --rul CKPT [--data DIR] [--json OUT]

The Lightning verbs are LightningCLI (jsonargparse) in subclass mode: unknown keys
and wrong types are rejected before training, naming the key. The data module's
``dims`` (channels, lengths, classes...) reach the task through links.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from seqzoo.errors import SeqzooError

USAGE = __doc__.split("\n\n")[1]
LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage:\n" + USAGE)
        return 0
    if argv[0] == "--version":
        from seqzoo import __version__

        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    commands = {"compare": _compare, "reproduce": _reproduce, "export": export_main, "backbones": backbones_main,
                "data": data_main, "pipeline": _pipeline}
    try:
        if verb in LIGHTNING_VERBS:
            run_lightning(verb, rest)
            return 0
        if verb not in commands:
            print(f"seqzoo: unknown command {verb!r}\nusage:\n{USAGE}", file=sys.stderr)
            return 2
        return commands[verb](rest) or 0
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        print(f"seqzoo {verb}: error: {cause}", file=sys.stderr)
        return 2


def _reproduce(rest: list[str]) -> int:
    from seqzoo.reproduce import main as reproduce_main

    return reproduce_main(rest)


def _pipeline(rest: list[str]) -> int:
    from seqzoo.pipelines import main as pipeline_main

    return pipeline_main(rest)


def user_error(err: BaseException) -> SeqzooError | None:
    """The seqzoo error behind ``err`` (jsonargparse and Lightning wrap what they call)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, SeqzooError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _compare(rest: list[str]) -> int:
    from seqzoo.compare import main as compare_main

    return compare_main(rest)


# ---------------------------------------------------------------------------------------
# fit / validate / test / predict
# ---------------------------------------------------------------------------------------


def run_lightning(verb: str, args: list[str]) -> None:
    from seqzoo.runs import rewrite_args

    args, config_name = rewrite_args(args)
    make_cli(args=[verb, *args], config_name=config_name)


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
    from seqzoo.runs import (
        PredictionWriter,
        RunRecorder,
        backbone_name_of,
        default_run_dir,
        import_class,
    )

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


# ---------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------


def export_main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqzoo export", description="Export a trained checkpoint to ONNX, "
                                     "checked against onnxruntime.")
    parser.add_argument("--ckpt", required=True, help="checkpoint written by seqzoo fit/compare")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--streaming", action="store_true",
                        help="also write the one-step stateful graph (OUT with .step.onnx)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |onnxruntime - torch| allowed")
    opts = parser.parse_args(args)
    from seqzoo.export import export_checkpoint

    for report in export_checkpoint(opts.ckpt, opts.out, streaming=opts.streaming, atol=opts.atol):
        print(report.summary())
    return 0


# ---------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------


def backbones_main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqzoo backbones", description="Registered backbone families.")
    parser.add_argument("--d-model", type=int, default=64, help="width for the parameter count")
    parser.add_argument("--n-layers", type=int, default=2, help="depth for the parameter count")
    opts = parser.parse_args(args)
    print(backbones_table(opts.d_model, opts.n_layers))
    return 0


def backbones_table(d_model: int = 64, n_layers: int = 2) -> str:
    from seqzoo.backbones import build_backbone, count_parameters, get_backbone_class, list_backbones

    rows = [("name", "family", "causal", "streaming", "tokens", "export length", f"params (d={d_model}, n={n_layers})",
             "description")]
    for name in list_backbones():
        cls = get_backbone_class(name)
        params = count_parameters(build_backbone(name, d_model=d_model, n_layers=n_layers))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        rows.append((name, cls.family, _yes(cls.causal), _yes(cls.streaming), cls.tokens,
                     "fixed" if cls.export_fixed_length else "dynamic", f"{params:,}", doc))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        if j == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 11)
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


def data_main(args: list[str]) -> int:
    from seqzoo.datasets import get_prepare, get_synth, prepare_sources, synth_generators

    if not args or args[0] in ("-h", "--help", "list"):
        print("usage: seqzoo data synth <domain> --out DIR [options]\n"
              "       seqzoo data prepare <source> --out DIR [options]\n")
        print("synthetic generators (public on-disk format):")
        for name, fn in synth_generators().items():
            print(f"  {name:16s} {_first_line(fn)}")
        print("real data shipped in installed packages:")
        for name, fn in prepare_sources().items():
            print(f"  {name:16s} {_first_line(fn)}")
        return 0
    action = args[0]
    if action not in ("synth", "prepare"):
        print(f"seqzoo data: unknown action {action!r} (synth, prepare, list)", file=sys.stderr)
        return 2
    if len(args) < 2 or args[1].startswith("-"):
        print(f"seqzoo data {action}: name the {'domain' if action == 'synth' else 'source'}; "
              "see `seqzoo data list`", file=sys.stderr)
        return 2
    fn = get_synth(args[1]) if action == "synth" else get_prepare(args[1])
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=f"seqzoo data {action} {args[1]}", description=_first_line(fn))
    parser.add_function_arguments(fn, as_positional=False)
    cfg = parser.parse_args(args[2:])
    path = fn(**cfg.as_dict())
    print(f"wrote {path}")
    return 0


def _first_line(fn) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


if __name__ == "__main__":
    sys.exit(main())

"""The ``seqzoo`` command.

    seqzoo fit|validate|test|predict --config CONFIG [--model.backbone NAME] [--any.key value]
    seqzoo compare --config CONFIG --backbones a,b,c|all --seeds 0,1,2 [--max_epochs N] --out DIR
    seqzoo sweep --config CONFIG --knob data.n_pairs --values 2,4,8 --backbones a,b|all --out DIR
    seqzoo reproduce etth1 --out DIR [--tables a,b] [--horizons 96,336] [--seeds 2021]
    seqzoo export --ckpt CKPT --out model.onnx [--streaming]
    seqzoo status [RUN_DIR ...]   (default: every run under runs/)
    seqzoo backbones [--d_model N] [--n_layers N]
    seqzoo data synth <domain> --out DIR [options] | prepare <source> --out DIR | list
    seqzoo pipeline laser --forecast CKPT --detect CKPT --rul CKPT [--data DIR] [--json OUT]

One option style: ``--section.key value`` for the Lightning verbs (jsonargparse),
``--snake_case`` for the others, which also accept the dashed spelling (``--max-epochs``).
A ``--config`` is a path, or the name of a config shipped in the package
(``forecasting/weather.yaml``; see :func:`seqzoo.run_config.resolve_config_path`).

The Lightning verbs are LightningCLI (jsonargparse) in subclass mode: unknown keys
and wrong types are rejected before training, naming the key. The data module's
``dims`` (channels, lengths, classes...) reach the task through links.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

from seqzoo.cli_args import option
from seqzoo.errors import TrainingError, user_error

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


def __getattr__(name: str):
    """``seqzoo.cli.make_cli`` (the parser behind the Lightning verbs) on first use: the verbs that
    only read files (``--help``, ``status``) do not import Lightning."""
    if name == "make_cli":
        from seqzoo.lightning_cli import make_cli

        return make_cli
    raise AttributeError(f"module 'seqzoo.cli' has no attribute {name!r}")


COMMANDS = {
    "fit": "train a task on a config: --config CONFIG [--section.key value ...] (LightningCLI)",
    "validate": "evaluate a checkpoint (--ckpt_path) on the validation split",
    "test": "evaluate a checkpoint (--ckpt_path) on the test split, with the task's metrics",
    "predict": "write a checkpoint's predictions on the predict split into the run folder",
    "compare": "several backbones x seeds (x folds) on one config -> CSV, table, plot",
    "sweep": "vary one config knob, run compare at each value, draw the curves",
    "reproduce": "a paper's results table with one command, beside the published numbers",
    "export": "export a trained checkpoint to ONNX, checked against onnxruntime",
    "status": "state of runs (default: every run under runs/)",
    "backbones": "the registered backbone families, with their capabilities and parameter counts",
    "data": "write synthetic data, prepare real data shipped in packages, or list both",
    "pipeline": "chain trained checkpoints into one application (laser: forecast -> detect -> RUL)",
}
"""Every verb of ``seqzoo`` with its one-line description (what ``seqzoo --help`` lists)."""


def usage() -> str:
    """``seqzoo --help``: every verb on one line."""
    width = max(map(len, COMMANDS))
    lines = ["usage: seqzoo <command> [options]      (seqzoo <command> --help: the command's options)", "",
             "commands:"]
    lines += [f"  {verb.ljust(width)}  {text}" for verb, text in COMMANDS.items()]
    lines += ["", "CONFIG is a YAML path, or a config shipped with seqzoo, e.g. forecasting/weather.yaml."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one ``seqzoo`` command; the exit status (0 ok, 1 training failed, 2 bad arguments, 130
    interrupted with Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from seqzoo import __version__

        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    commands = {"compare": _compare, "reproduce": _reproduce, "export": export_main, "backbones": backbones_main,
                "data": data_main, "pipeline": _pipeline, "status": status_main,
                "sweep": lambda rest: __import__("seqzoo.sweep", fromlist=["main"]).main(rest)}
    try:
        if verb in LIGHTNING_VERBS:
            run_lightning(verb, rest)
            return 0
        if verb not in commands:
            print(f"seqzoo: unknown command {verb!r}\n{usage()}", file=sys.stderr)
            return 2
        return commands[verb](rest) or 0
    except SystemExit as done:  # argparse/jsonargparse after --help (0) or a usage error (2)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except KeyboardInterrupt:  # Ctrl-C: what finished is written (compare: its table), no traceback
        print(f"\nseqzoo {verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        cause = user_error(err)
        if cause is not None:
            print(f"seqzoo {verb}: error: {cause}", file=sys.stderr)
            return 1 if isinstance(cause, TrainingError) else 2
        message = argument_error(err)
        if message is None:
            raise
        print(f"seqzoo {verb}: error: {message}\n"
              f"usage: seqzoo {verb} --config CONFIG [--section.key value ...]  (all keys: seqzoo {verb} --help)",
              file=sys.stderr)
        return 2


def argument_error(err: BaseException) -> str | None:
    """The first line of a command-line parsing error (jsonargparse's, raised as argparse's), else None."""
    import argparse as _argparse

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, _argparse.ArgumentError) or type(err).__name__ == "ArgumentError":
            text = str(err).strip()
            return _first_error_line(text)
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _first_error_line(text: str) -> str:
    """jsonargparse lists every way a subclass value could have parsed (and the whole value); keep
    the section, the class and what failed in it, e.g. ``data (ForecastingDataModule): Option
    'lookbak' is not accepted``."""
    import re

    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return text
    section = re.match(r'Parser key "([^"]+)":', lines[0])
    for i, line in enumerate(lines):
        problem = re.match(r"- Problem with given class_path '([^']+)':", line)
        if problem:
            detail = []
            for follow in lines[i + 1:]:
                if follow.startswith(("- ", "Given value")):
                    break
                detail.append(follow.rstrip(":"))
            where = f"{section.group(1) if section else 'config'} ({problem.group(1).rsplit('.', 1)[-1]})"
            return f"{where}: {': '.join(detail)}{_moved_hint(problem.group(1), ' '.join(detail))}"
    return " ".join(lines[:2])


def _moved_hint(class_path: str, detail: str) -> str:
    """Where an option of an older config lives now (a class's ``moved_options``), else ''."""
    import re

    option = re.search(r"Option '([^']+)' is not accepted", detail)
    if not option:
        return ""
    try:
        from seqzoo.run_config import import_class

        moved = getattr(import_class(class_path), "moved_options", {})
    except Exception:  # noqa: BLE001 - a hint only
        return ""
    new = moved.get(option.group(1))
    return f" (it moved: write it under {new.rsplit('.', 1)[0]}:, on the command line --model.{new})" if new else ""


def _reproduce(rest: list[str]) -> int:
    from seqzoo.reproduce import main as reproduce_main

    return reproduce_main(rest)


def _pipeline(rest: list[str]) -> int:
    from seqzoo.pipelines import main as pipeline_main

    return pipeline_main(rest)


def _compare(rest: list[str]) -> int:
    from seqzoo.compare import main as compare_main

    return compare_main(rest)


# ---------------------------------------------------------------------------------------
# fit / validate / test / predict
# ---------------------------------------------------------------------------------------


def run_lightning(verb: str, args: list[str]) -> None:
    from seqzoo.lightning_cli import expand_help_names, make_cli
    from seqzoo.run_config import rewrite_args

    args, config_name = rewrite_args(expand_help_names(args))
    make_cli(args=[verb, *args], config_name=config_name)


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
# status
# ---------------------------------------------------------------------------------------


def status_main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqzoo status", description="State of runs (a run whose process is gone "
                                     "on this host is marked died).")
    parser.add_argument("run_dirs", nargs="*", help="run folders (default: every run under runs/)")
    opts = parser.parse_args(args)
    from seqzoo.status import RUNS_ROOT, run_status

    dirs = [Path(d) for d in opts.run_dirs] or sorted(p.parent for p in Path(RUNS_ROOT).rglob("status.json"))
    if not dirs:
        print(f"no runs under {RUNS_ROOT}/")
        return 0
    for run_dir in dirs:
        record = run_status(run_dir)
        if record is None:
            print(f"{run_dir}: no status.json", file=sys.stderr)
            continue
        last = (record.get("last_checkpoint") or {})
        best = record.get("best") or {}
        print(f"{run_dir}: {record['status']} ({record.get('verb', '?')}, pid {record.get('pid')} on "
              f"{record.get('host')}, step {record.get('global_step', '?')})"
              + (f"; last {last.get('path')} (step {last.get('global_step')})" if last else "")
              + (f"; best {best.get('metric')} = {best.get('value'):.4g}" if best.get("value") is not None else "")
              + (f"; error: {record['error']}" if record.get("error") else ""))
    return 0


# ---------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------


def backbones_main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqzoo backbones", description="Registered backbone families.")
    parser.add_argument(*option("d_model"), type=int, default=64, help="width for the parameter count")
    parser.add_argument(*option("n_layers"), type=int, default=2, help="depth for the parameter count")
    opts = parser.parse_args(args)
    print(backbones_table(opts.d_model, opts.n_layers))
    return 0


FIXED_TOKENS_FOR_COUNT = 96
"""Token count at which ``seqzoo backbones`` counts the parameters of a fixed-token family."""


def backbones_table(d_model: int = 64, n_layers: int = 2) -> str:
    from seqzoo.backbones import build_backbone, count_parameters, get_backbone_class, list_backbones

    rows = [("name", "family", "causal", "streaming", "tokens", "export length", f"params (d={d_model}, n={n_layers})",
             "description")]
    for name in list_backbones():
        cls = get_backbone_class(name)
        fixed = {"n_tokens": FIXED_TOKENS_FOR_COUNT} if cls.fixed_tokens else {}
        if cls.tokens == "image":
            fixed["grid_width"] = 8  # a 12 x 8 patch grid
        params = count_parameters(build_backbone(name, d_model=d_model, n_layers=n_layers, **fixed))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        tokens = f"{cls.tokens} (fixed n_tokens; params at {FIXED_TOKENS_FOR_COUNT})" if cls.fixed_tokens else cls.tokens
        rows.append((name, cls.family, _yes(cls.causal), _yes(cls.streaming), tokens,
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

    listings = {"synth": ("synthetic generators (public on-disk format):", synth_generators()),
                "prepare": ("real data shipped in installed packages:", prepare_sources())}
    if not args or args[0] in ("-h", "--help", "list"):
        print("usage: seqzoo data synth <domain> --out DIR [options]\n"
              "       seqzoo data prepare <source> --out DIR [options]\n"
              "       seqzoo data list\n")
        print("\n\n".join(f"{title}\n{_describe(registry)}" for title, registry in listings.values()))
        return 0
    action = args[0]
    if action not in ("synth", "prepare"):
        print(f"seqzoo data: unknown action {action!r} (synth, prepare, list)", file=sys.stderr)
        return 2
    what = "domain" if action == "synth" else "source"
    if len(args) >= 2 and args[1] in ("-h", "--help"):
        title, registry = listings[action]
        print(f"usage: seqzoo data {action} <{what}> --out DIR [options]\n"
              f"       (seqzoo data {action} <{what}> --help: that {what}'s options)\n\n{title}")
        print(_describe(registry))
        return 0
    if len(args) < 2 or args[1].startswith("-"):
        print(f"seqzoo data {action}: name the {what}; see `seqzoo data {action} --help`", file=sys.stderr)
        return 2
    fn = get_synth(args[1]) if action == "synth" else get_prepare(args[1])
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=f"seqzoo data {action} {args[1]}", description=first_sentence(fn.__doc__))
    parser.add_function_arguments(fn, as_positional=False)
    cfg = parser.parse_args(args[2:])
    path = fn(**cfg.as_dict())
    print(f"wrote {path}")
    return 0


def _describe(registry: dict, width: int = 100) -> str:
    """One entry per name: the name, then the whole first sentence of its docstring (wrapped)."""
    lines = []
    for name, fn in registry.items():
        lines += textwrap.wrap(first_sentence(fn.__doc__), width=width, initial_indent=f"  {name:18s} ",
                               subsequent_indent=" " * 21, break_on_hyphens=False) or [f"  {name}"]
    return "\n".join(lines)


_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bvs)[.!?](?=\s+[A-Z(`]|$)")


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, joined onto one line (``literal``
    markup dropped); the whole paragraph when it has no sentence end."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "")
    end = _SENTENCE_END.search(paragraph)
    return paragraph[:end.end()] if end else paragraph


def console() -> int:
    """The ``seqzoo`` executable: :func:`main`, then :func:`quick_exit_gc`."""
    code = main()
    quick_exit_gc()
    return code


def quick_exit_gc() -> None:
    """Leave the objects alive now out of the garbage collections the interpreter makes as it
    ends a process: with torch and Lightning imported there are millions, and those passes
    took ~1.6 s of every ``seqzoo`` process (4.5 -> 6.1 s for one that only imports them).
    Nothing is skipped that a command needs: its files are closed when written, logging and
    the other atexit handlers still run, and objects outside reference cycles are still
    finalised as the modules are cleared. Only for a process about to end (never in a library
    call of ``main``)."""
    import gc

    gc.freeze()


if __name__ == "__main__":
    sys.exit(console())

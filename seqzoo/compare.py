"""``seqzoo compare``: several backbones x seeds on one config -> CSV, table, plot.

Each family is built with the config's shared keywords (d_model, n_layers,
dropout, causal, impl) and its own defaults for the rest, so parameter counts
differ and the table shows them; the config's own family keeps all its keywords. Every (backbone, seed) run is a separate
process (clean peak-memory figures, one failure does not stop the rest; on Linux forked from a
server that imports torch and Lightning once: :mod:`seqzoo.compare_worker`) that
trains, tests the best checkpoint and times inference. Pairs a backbone cannot
serve appear as ``n/a`` with the reason. Outputs in ``--out``:

* ``results.csv`` -- long (tidy) form: one row per (backbone, seed, fold, metric) with its
  value, params and status (test metrics and the speed/memory measurements alike);
* ``results.md``  -- mean +- std (n) per backbone, the trivial baseline, the command;
* ``plot.png``    -- main metric per backbone (mean +- std over the runs), baselines as lines;
* ``best_checkpoint.txt`` -- the best run's checkpoint (for ``seqzoo export``).

Arguments not listed below pass through to every run, e.g.
``--trainer.limit_train_batches 50``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import time
from pathlib import Path
from typing import Any

import yaml

from seqzoo.backbones.base import SHARED_KEYWORDS, get_backbone_class, list_backbones, variant_label
from seqzoo.budget import d_model_for_budget
from seqzoo.cli_args import check_passthrough, int_list, option, sigint_ignored
from seqzoo.compare_worker import Runner
from seqzoo.errors import ConfigError
from seqzoo.results import NOT_RUN, baselines_of, read_results_csv, write_results
from seqzoo.run_config import (
    backbone_holder,
    class_path,
    load_yaml,
    rewrite_args,
    resolve_config_path,
    rewrite_backbone_names,
    task_class_of,
)



def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqzoo compare", description=__doc__.split("\n\n")[0],
                                     epilog="Other --key value arguments pass through to each run.")
    parser.add_argument("--config", "-c", required=True,
                        help="experiment config: a YAML path or a shipped config, e.g. forecasting/weather.yaml")
    parser.add_argument("--backbones", default="all", help="comma-separated registry names, or 'all'")
    parser.add_argument("--seeds", default="0", help="comma-separated integer seeds")
    parser.add_argument(*option("max_epochs"), type=int, default=None, help="override trainer.max_epochs")
    parser.add_argument(*option("max_steps"), type=int, default=None,
                        help="a step budget for every run (trainer.max_steps; training stops at whichever of "
                             "max_epochs and max_steps comes first); the time left is estimated as runs finish")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--folds", default=None,
                        help="cross-validation folds to run for every family and seed: 'all' or e.g. 0,1,2 "
                             "(passed as --data.fold; e.g. the pain domain's leave-one-subject-out)")
    parser.add_argument(*option("shared_heads"), action="store_true",
                        help="give every family the config's embedding and head, also those whose paper defines "
                             "its own (Informer's decoder); such rows are labelled '(shared head)'")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="instead of running: merge the results.csv of earlier compares of this config "
                             "(e.g. families run in parts) into one table, plot and CSV in --out")
    parser.add_argument(*option("param_budget"), type=int, default=None,
                        help="equal parameter budgets: build every family at the d_model (a multiple of 8) whose "
                             "backbone has the parameter count closest to this; rows say the width they got")
    opts, passthrough = parser.parse_known_args(argv)
    check_passthrough("compare", passthrough)
    seeds = int_list(opts.seeds, "--seeds")
    names = list_backbones() if opts.backbones.strip() == "all" else [n.strip() for n in opts.backbones.split(",") if n.strip()]
    for name in names:
        get_backbone_class(name)  # unknown names fail before anything runs
    command = "seqzoo compare " + " ".join(shlex.quote(a) for a in argv)
    if opts.merge:
        merge(opts.config, [Path(d) for d in opts.merge], Path(opts.out), passthrough=passthrough, command=command)
        return 0
    if opts.max_steps is not None and opts.max_steps < 1:
        raise ConfigError(f"--max_steps must be a positive number of optimiser steps, got {opts.max_steps}")
    compare(opts.config, names, seeds, Path(opts.out), max_epochs=opts.max_epochs, max_steps=opts.max_steps,
            passthrough=passthrough,
            command=command, shared_heads=opts.shared_heads, param_budget=opts.param_budget,
            folds=None if opts.folds is None else ("all" if opts.folds.strip() == "all" else int_list(opts.folds, "--folds")))
    return 0


def compare(
    config_path: str,
    names: list[str],
    seeds: list[int],
    out: Path,
    *,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    passthrough: list[str] = (),
    command: str = "",
    shared_heads: bool = False,
    folds: list[int] | str | None = None,
    param_budget: int | None = None,
) -> list[dict[str, Any]]:
    """Train every family in ``names`` for every seed (and every cross-validation fold in
    ``folds``: ``"all"`` or indices, passed as ``--data.fold``; the data module must have
    folds, e.g. the pain domain's leave-one-subject-out); write the table, plot and CSV.
    Each row of the table is the mean ± std over all its runs (seeds x folds). With
    ``param_budget`` every family is built at the width whose backbone has about that many
    parameters (:func:`seqzoo.budget.d_model_for_budget`); its rows say ``d_model=...``."""
    with Runner() as runner:
        return _compare(runner, config_path, names, seeds, out, max_epochs=max_epochs, max_steps=max_steps,
                        passthrough=passthrough, command=command, shared_heads=shared_heads, folds=folds,
                        param_budget=param_budget)


def _compare(runner: Runner, config_path: str, names: list[str], seeds: list[int], out: Path, *, max_epochs,
             max_steps, passthrough, command, shared_heads, folds, param_budget) -> list[dict[str, Any]]:
    config_path = str(resolve_config_path(config_path))
    config = load_yaml(config_path)
    rewrite_backbone_names(config)
    task_cls = task_class_of(config)
    holder = backbone_holder(config)
    if holder is None:
        raise ConfigError(f"{config_path}: no model.init_args.backbone to vary")
    base = holder["backbone"]
    base_args = base.get("init_args", {}) if isinstance(base, dict) else {}
    shared = {k: v for k, v in base_args.items() if k in SHARED_KEYWORDS}
    # built as the runs are (same parser, same overrides); it also checks the data before
    # anything is written
    resolved: dict[str, dict] = {}
    baseline = _baseline(config_path, list(passthrough), resolved)
    fold_list = _fold_list(folds, config_path, list(passthrough))
    if fold_list is not None:  # the baseline too is the mean over the folds
        baseline = _mean_baseline([_baseline(config_path, [*passthrough, "--data.fold", str(k)])
                                   for k in fold_list])
    out.mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    jobs, labels = [], {}
    for name in names:
        cls = get_backbone_class(name)
        reason = task_cls.incompatibility(cls)
        if reason is None and shared.get("causal") and not cls.causal:
            reason = "cannot be built causal"
        own = isinstance(base, dict) and base.get("class_path") == class_path(cls)
        init_args = dict(base_args if own else shared)
        if reason is None and cls.fixed_tokens and "n_tokens" not in init_args:
            # built for the token count this task feeds (MambaMixer: the lookback; ViM2: the patch grid)
            fixed = task_cls.fixed_token_keywords(cls, resolved.get("task_args", {}), resolved.get("dims", {}))
            if fixed:
                init_args.update(fixed)
            else:
                reason = "built for a fixed token count, which this task cannot give: set n_tokens in a config of its own"
        if reason:
            rows.append({"backbone": name, "family": cls.family, "seed": "", "status": "n/a", "reason": reason})
            continue
        run_config = copy.deepcopy(config)
        # the config's own family keeps all its keywords (a paper config's heads, factor...);
        # other families get the shared ones and their own defaults
        if param_budget is not None:
            width, count = d_model_for_budget(name, param_budget, init_args)
            init_args["d_model"] = width
            print(f"{name}: d_model {width} -> {count:,} backbone parameters (budget {param_budget:,})", flush=True)
        backbone_holder(run_config)["backbone"] = {"class_path": class_path(cls), "init_args": init_args}
        labels[name] = variant_label(name, backbone_holder(run_config)["backbone"]["init_args"])
        if param_budget is not None:
            labels[name] = (labels[name][:-1] + f", d_model={width})" if labels[name].endswith(")")
                            else labels[name] + f" (d_model={width})")
        form = task_cls.paper_forms.get(cls.family, {})
        if form and not own:  # a family whose paper defines its own embedding/head runs as the paper's model
            if shared_heads:
                labels[name] += " (shared head)"
            else:
                holder = backbone_holder(run_config)
                for key, value in form.items():  # nested groups (``net``) merge into the config's own
                    holder[key] = {**(holder.get(key) or {}), **value} if isinstance(value, dict) else value
        config_file = out / "configs" / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(run_config, sort_keys=False))
        jobs += [(name, cls, seed, config_file, fold) for seed in seeds for fold in (fold_list or [None])]

    budget = [f"{max_epochs} epochs" if max_epochs else "the config's epochs"]
    if max_steps:
        budget.append(f"at most {max_steps} steps")
    print(f"{len(jobs)} runs ({', '.join(budget)} each, then test and timing)", flush=True)
    started = time.perf_counter()
    before = len(rows)  # the n/a rows
    try:
        for i, (name, cls, seed, config_file, fold) in enumerate(jobs, 1):
            where = "" if fold is None else f" fold {fold}"
            print(f"[{i}/{len(jobs)}] {name} seed {seed}{where} ...", flush=True)
            extra = [] if fold is None else ["--data.fold", str(fold)]
            row = _run_job(name, cls, seed, config_file, out, max_epochs, [*passthrough, *extra],
                           tag=f"seed{seed}" + ("" if fold is None else f"-fold{fold}"), max_steps=max_steps,
                           runner=runner)
            rows.append(_labelled(row, labels[name], fold))
            print(f"      {row['status']}" + (f": {row['reason']}" if row.get("reason") else "")
                  + (f" ({_short_metrics(row)}, {row.get('fit_seconds', 0):.0f} s)" if row["status"] == "ok" else ""),
                  flush=True)
            if i < len(jobs):
                print("      " + _estimate(time.perf_counter() - started, i, len(jobs)), flush=True)
    except KeyboardInterrupt:
        # Ctrl-C: the runs that finished keep their rows, the others are marked "not run", and
        # the table is written before the interrupt goes on (seqzoo exits with 130)
        done = len(rows) - before
        for k, (name, cls, seed, _, fold) in enumerate(jobs[done:]):
            why = "Ctrl-C during this run" if k == 0 else "the compare was interrupted before it"
            rows.append(_labelled({"backbone": name, "family": cls.family, "seed": seed, "status": NOT_RUN,
                                   "reason": why}, labels[name], fold))
        left = len(jobs) - done
        with sigint_ignored():  # a second Ctrl-C does not leave the table half-written
            write_results(out, rows, task_cls, baseline, config_path, command)
        print(f"\nInterrupted after {done} of {len(jobs)} runs: {out / 'results.md'} has the finished ones; "
              + ("the other run is" if left == 1 else f"the other {left} are") + f" marked {NOT_RUN!r}.\n",
              flush=True)
        print((out / "results.md").read_text(), flush=True)
        raise

    write_results(out, rows, task_cls, baseline, config_path, command)
    print((out / "results.md").read_text())
    return rows


def _labelled(row: dict[str, Any], label: str, fold: int | None) -> dict[str, Any]:
    """A run's row as the table shows it: named by its variant ("mamba (bidirectional)"), with its fold."""
    if fold is not None:
        row["fold"] = fold
    row["backbone"] = label
    return row


def merge(config_path: str, dirs: list[Path], out: Path, *, passthrough: list[str] = (),
          command: str = "") -> list[dict[str, Any]]:
    """One table, plot and CSV from the ``results.csv`` of several compares of the same config
    (families run in parts). Runs keep their rows as measured; a (backbone, seed, fold) met
    twice is an error, since the table cannot say which run it shows. A run marked "not run" (an
    interrupted compare) gives way to the same run finished in another folder."""
    config_path = str(resolve_config_path(config_path))
    task_cls = task_class_of(load_yaml(config_path))
    rows: list[dict[str, Any]] = []
    seen: dict[tuple, Path] = {}
    not_run: dict[tuple, dict[str, Any]] = {}
    for d in dirs:
        path = d / "results.csv"
        if not path.is_file():
            raise ConfigError(f"--merge: {path} does not exist (not a compare output folder?)")
        for row in read_results_csv(path):
            key = (row["backbone"], row["seed"], row.get("fold", ""))
            if row["status"] == NOT_RUN:
                not_run.setdefault(key, row)
                continue
            if key in seen:
                raise ConfigError(f"--merge: {row['backbone']} seed {row['seed']} is in both {seen[key]} and {d}")
            seen[key] = d
            rows.append(row)
    rows += [row for key, row in not_run.items() if key not in seen]
    baseline = _baseline(config_path, list(passthrough))
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, rows, task_cls, baseline, config_path, command)
    print((out / "results.md").read_text())
    return rows


def _estimate(elapsed: float, done: int, total: int) -> str:
    """How long the compare has run and, at the mean time per finished run, about how long the
    rest takes (families differ in speed: a rough figure)."""
    left = elapsed / done * (total - done)
    return f"{_duration(elapsed)} so far; about {_duration(left)} left for {total - done} more run(s)"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _run_job(name: str, cls, seed: int, config_file: Path, out: Path, max_epochs, passthrough,
             tag: str | None = None, max_steps: int | None = None, *, runner: Runner) -> dict[str, Any]:
    tag = tag or f"seed{seed}"
    run_dir = out / "runs" / name / tag
    result_file = out / "logs" / f"{name}-{tag}.json"
    log_file = out / "logs" / f"{name}-{tag}.log"
    result_file.unlink(missing_ok=True)
    spec = {"config": str(config_file), "seed": seed, "max_epochs": max_epochs, "max_steps": max_steps,
            "extra": passthrough,
            "run_dir": str(run_dir), "result": str(result_file)}
    code = runner.run(spec, log_file)
    base = {"backbone": name, "family": cls.family, "seed": seed}
    if code != 0 or not result_file.exists():
        tail = log_file.read_text().strip().splitlines()[-1:] or ["(no output)"]
        return {**base, "status": "failed", "reason": f"exit {code}: {tail[0][:300]} (see {log_file})"}
    return {**base, **json.loads(result_file.read_text()), "status": "ok"}


def _short_metrics(row: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in (row.get("metrics") or {}).items())


def build_run(config_path: str, passthrough: list[str]):
    """A run's Lightning CLI, built as the runs build it (same parser, same overrides) but not run:
    the config resolved and checked, the task and the data module made (``dims`` are metadata:
    no data is read), no logger and no checkpoints."""
    from seqzoo.lightning_cli import make_cli

    args, name = rewrite_args(["--config", config_path, *passthrough, "--trainer.logger", "false",
                               "--trainer.enable_checkpointing", "false"])
    return make_cli(args=args, run=False, config_name=name)


def _baseline(config_path: str, passthrough: list[str], resolved: dict | None = None
              ) -> tuple[str, dict[str, float]] | None:
    """The task's trivial baseline on the config's data, through the CLI's own parser with the
    runs' overrides (no logger, no checkpoints). Data missing on first use is written once
    here by ``prepare_data`` (as a Trainer would), before the runs read it. ``resolved``, if
    given, receives the data's ``dims`` and the task's resolved init args."""
    cli = build_run(config_path, passthrough)
    if resolved is not None:
        model = cli.config.get("model")
        init = model.get("init_args") if model is not None else None
        resolved.update(dims=dict(cli.datamodule.dims), task_args=init.as_dict() if init is not None else {})
    cli.datamodule.prepare_data()
    return cli.model.baseline(cli.datamodule)


def _fold_list(folds: list[int] | str | None, config_path: str, passthrough: list[str]) -> list[int] | None:
    """The folds to run: None (no folds), the given indices, or every fold the data has."""
    if folds is None:
        return None
    from seqzoo.lightning_cli import make_cli

    args, name = rewrite_args(["--config", config_path, *passthrough, "--trainer.logger", "false"])
    datamodule = make_cli(args=args, run=False, config_name=name).datamodule
    count = datamodule.fold_count()
    if count is None:
        raise ConfigError(f"--folds: the data module {type(datamodule).__name__} has no cross-validation folds "
                          f"(the pain domain's split: loso has one per subject)")
    if folds == "all":
        return list(range(count))
    bad = [k for k in folds if not 0 <= k < count]
    if bad:
        raise ConfigError(f"--folds {bad}: the data has folds 0..{count - 1}")
    return list(folds)


def _mean_baseline(per_fold: list) -> Any:
    """The baselines of several folds averaged metric by metric (same names in every fold)."""
    if not per_fold or not per_fold[0]:
        return None
    lists = [baselines_of(b) for b in per_fold]
    merged = []
    for i, (name, metrics) in enumerate(lists[0]):
        means = {key: sum(float(fold[i][1][key]) for fold in lists) / len(lists) for key in metrics}
        merged.append((f"{name}, mean over {len(lists)} folds", means))
    return merged

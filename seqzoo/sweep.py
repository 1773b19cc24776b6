"""``seqzoo sweep``: vary one config knob, run ``compare`` at each value, draw the curves.

    seqzoo sweep --config configs/diagnostics/mqar.yaml --knob data.n_pairs --values 2,4,8,16 \\
        --backbones transformer,mamba,gru --seeds 0 --out runs/mqar-pairs

For each value v the command runs :func:`seqzoo.compare.compare` with ``--<knob> v`` added
to every run (same per-run worker process, same outputs in ``OUT/<knob>=<v>/``), then
writes across the values:

* ``curves.csv`` -- one row per (value, backbone, seed): status, params, every reported
  metric, the trivial baseline's main metric at that value;
* ``curves.md``  -- main metric (mean over seeds) per backbone and value, the baseline row,
  and each backbone's *breakdown*: the first value at which the metric falls below
  ``--threshold`` (or "none" if it stays above);
* ``curves.png`` -- main metric against the knob, one line per backbone, baseline dashed.

Arguments not listed below pass through to every run, as for ``compare``.
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
from pathlib import Path
from typing import Any

from seqzoo.backbones.base import get_backbone_class, list_backbones
from seqzoo.cli_args import check_passthrough, int_list, option, sigint_ignored
from seqzoo.compare import build_run, compare
from seqzoo.results import NOT_RUN, mean_std, read_results_csv
from seqzoo.errors import ConfigError, user_error
from seqzoo.plots import figure_title, metric_label, plot_metric
from seqzoo.run_config import load_yaml, resolve_config_path, task_class_of


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqzoo sweep", description=__doc__.split("\n\n")[0],
                                     epilog="Other --key value arguments pass through to each run.")
    parser.add_argument("--config", "-c", required=True,
                        help="experiment config: a YAML path or a shipped config, e.g. forecasting/weather.yaml")
    parser.add_argument("--knob", required=True, help="config key to vary, e.g. data.n_pairs or data.seq_len")
    parser.add_argument("--values", required=True, help="comma-separated values of the knob, e.g. 2,4,8,16")
    parser.add_argument("--backbones", default="all", help="comma-separated registry names, or 'all'")
    parser.add_argument("--seeds", default="0", help="comma-separated integer seeds")
    parser.add_argument(*option("max_epochs"), type=int, default=None, help="override trainer.max_epochs")
    parser.add_argument("--threshold", type=float, default=0.9,
                        help="a backbone breaks down at the first value where its main metric is below this")
    parser.add_argument("--out", required=True, help="output folder")
    opts, passthrough = parser.parse_known_args(argv)
    check_passthrough("sweep", passthrough)
    knob = opts.knob.strip().removeprefix("--")
    if not knob.startswith(("trainer.", "model.", "data.")) or knob.count(".") < 1:
        raise ConfigError(f"--knob must be a config key starting with trainer., model. or data., got {opts.knob!r}")
    if any(a.removeprefix("--") == knob or a.startswith(f"--{knob}=") for a in passthrough):
        raise ConfigError(f"--knob {knob} is also given as a pass-through argument; give its values with --values")
    values = [v.strip() for v in opts.values.split(",") if v.strip()]
    if not values:
        raise ConfigError("--values is empty")
    seeds = int_list(opts.seeds, "--seeds")
    names = list_backbones() if opts.backbones.strip() == "all" else [n.strip() for n in opts.backbones.split(",") if n.strip()]
    for name in names:
        get_backbone_class(name)  # unknown names fail before anything runs
    command = "seqzoo sweep " + " ".join(shlex.quote(a) for a in argv)
    sweep(opts.config, knob, values, names, seeds, Path(opts.out), max_epochs=opts.max_epochs,
          passthrough=passthrough, threshold=opts.threshold, command=command)
    return 0


def sweep(
    config_path: str,
    knob: str,
    values: list[str],
    names: list[str],
    seeds: list[int],
    out: Path,
    *,
    max_epochs: int | None = None,
    passthrough: list[str] = (),
    threshold: float = 0.9,
    command: str = "",
) -> list[dict[str, Any]]:
    """Run ``compare`` at each knob value; write curves.csv/.md/.png; return the rows."""
    config_path = str(resolve_config_path(config_path))
    task_cls = task_class_of(load_yaml(config_path))
    if not task_cls.report_metrics:
        raise ConfigError(f"{task_cls.__name__} reports no test metrics to draw")
    for value in values:  # a value the config cannot take fails before any run, not after the others trained
        _check_value(config_path, knob, value, list(passthrough))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, float] = {}
    label = knob.rsplit(".", 1)[-1]
    title = figure_title(load_yaml(config_path), task_cls)
    for i, value in enumerate(values, 1):
        print(f"== {knob} = {value} ({i}/{len(values)}) ==", flush=True)
        run_out = out / f"{label}={value}"
        try:
            results = compare(config_path, names, seeds, run_out, max_epochs=max_epochs,
                              passthrough=[*passthrough, f"--{knob}", value], command=f"{command}  [{knob}={value}]")
        except KeyboardInterrupt:
            # Ctrl-C: the curves of the values reached, this value's unmade runs marked "not run"
            # as its compare wrote them; the values after it are left out
            if (run_out / "results.csv").is_file():
                rows += [{"value": value, **row} for row in read_results_csv(run_out / "results.csv")]
                _add_baseline(baselines, value, run_out, task_cls)
            with sigint_ignored():
                write_curves(out, rows, task_cls, knob, values[:i], baselines, threshold, command, title=title,
                             interrupted=values[i - 1:])
            print((out / "curves.md").read_text(), flush=True)
            raise
        rows += [{"value": value, **row} for row in results]
        _add_baseline(baselines, value, run_out, task_cls)
    write_curves(out, rows, task_cls, knob, values, baselines, threshold, command, title=title)
    print((out / "curves.md").read_text())
    return rows


def _check_value(config_path: str, knob: str, value: str, passthrough: list[str]) -> None:
    """Build the run with ``--<knob> value`` (:func:`seqzoo.compare.build_run`: no data is read);
    an error names the value."""
    try:
        build_run(config_path, [*passthrough, f"--{knob}", value])
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        raise type(cause)(f"--values {value} ({knob}): {cause}") from err


def _add_baseline(baselines: dict[str, float], value: str, run_out: Path, task_cls) -> None:
    baseline = _read_baseline(run_out, task_cls) if (run_out / "results.md").is_file() else None
    if baseline is not None:
        baselines[value] = baseline


def _read_baseline(run_out: Path, task_cls) -> float | None:
    """The baseline's main metric from a compare results.md (its baseline row)."""
    key = task_cls.report_metrics[0]
    lines = (run_out / "results.md").read_text().splitlines()
    header = next((line for line in lines if line.startswith("| backbone")), None)
    row = next((line for line in lines if "(baseline)" in line), None)
    if header is None or row is None:
        return None
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    try:
        return float(cells[columns.index(key)])
    except (ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------


def curve_table(rows: list[dict], task_cls, values: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """{backbone: {value: (mean, std) of the main metric over successful seeds}}."""
    key = task_cls.report_metrics[0]
    table: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        table.setdefault(row["backbone"], {})
        if row["status"] == "ok" and key in row.get("metrics", {}):
            table[row["backbone"]].setdefault(row["value"], []).append(float(row["metrics"][key]))
    return {name: {v: mean_std(per[v]) for v in values if v in per} for name, per in table.items()}


def breakdown(curve: dict[str, tuple[float, float]], values: list[str], threshold: float, maximise: bool) -> str:
    """The first knob value whose mean is worse than ``threshold`` ("none" if never)."""
    for value in values:
        if value not in curve:
            continue
        mean = curve[value][0]
        if (mean < threshold) if maximise else (mean > threshold):
            return value
    return "none" if curve else "–"


def write_curves(out: Path, rows, task_cls, knob: str, values: list[str], baselines: dict[str, float],
                 threshold: float, command: str, title: str = "", interrupted: list[str] = ()) -> None:
    """curves.csv, curves.md and curves.png over ``values``; ``interrupted``: the values a Ctrl-C
    left unfinished or not begun (said under the table)."""
    metrics = list(task_cls.report_metrics)
    fields = ["knob", "value", "backbone", "family", "seed", "status", "reason", "params", *metrics,
              "baseline_" + metrics[0], "fit_seconds"]
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            flat = {k: row.get(k, "") for k in ("value", "backbone", "family", "seed", "status", "reason", "params",
                                                "fit_seconds")}
            flat["knob"] = knob
            for m in metrics:
                flat[m] = (row.get("metrics") or {}).get(m, "")
            flat["baseline_" + metrics[0]] = baselines.get(row["value"], "")
            writer.writerow(flat)
    maximise = (task_cls.report_modes[:1] or ("min",))[0] == "max"
    table = curve_table(rows, task_cls, values)
    key = metrics[0]
    lines = [f"# {task_cls.__name__}: {key} against {knob}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"Mean over seeds; breakdown = first {knob.rsplit('.', 1)[-1]} with {key} "
              f"{'below' if maximise else 'above'} {threshold:g}.", ""]
    head = ["backbone", "params", *values, "breakdown"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    params = {r["backbone"]: r.get("params") for r in rows if r["status"] == "ok" and r.get("params")}
    for name, curve in table.items():
        reasons = {r.get("reason", "") for r in rows if r["backbone"] == name and r["status"] not in ("ok", NOT_RUN)}
        unmade = {r["value"] for r in rows if r["backbone"] == name and r["status"] == NOT_RUN}
        cells = [name, f"{params[name]:,}" if name in params else ""]
        cells += [_fmt(curve[v]) if v in curve else NOT_RUN if v in unmade else "n/a" if reasons else "–"
                  for v in values]
        cells.append(breakdown(curve, values, threshold, maximise) if curve
                     else f"n/a ({'; '.join(sorted(reasons))})" if reasons else NOT_RUN)
        lines.append("| " + " | ".join(cells) + " |")
    if baselines:
        lines.append("| *best constant / trivial baseline* | – | "
                     + " | ".join(f"{baselines[v]:.3f}" if v in baselines else "" for v in values) + " | – |")
    if interrupted:
        lines += ["", f"Interrupted (Ctrl-C) at {knob} = {interrupted[0]}: its compare's runs that finished are "
                      f"in the table; not run: {', '.join(interrupted[1:]) or 'no further value'}."]
    (out / "curves.md").write_text("\n".join(lines) + "\n")
    plot_curves(table, baselines, values, knob, key, out / "curves.png", title=title or task_cls.__name__,
                ylabel=metric_label(task_cls, key))


def _fmt(mean_std: tuple[float, float]) -> str:
    mean, std = mean_std
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.2f}"


def plot_curves(table, baselines, values, knob, key, path: Path, title: str = "", ylabel: str = ""):
    """Main metric against the knob, one line per backbone (mean ± std over seeds), the
    trivial baseline dashed."""
    return plot_metric(path, title=f"{title}: against {knob.rsplit('.', 1)[-1]}" if title else knob, ylabel=ylabel or key,
                x_values=values, series=table, baselines={"trivial": baselines} if baselines else None,
                xlabel=knob, numeric_x=all(_is_number(v) for v in values))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

"""The results of ``seqzoo compare`` (and of ``sweep``/``reproduce``, which run it): the rows
of ``results.csv`` (one per backbone, seed, fold and metric), their summary (mean +- std per
backbone), the ``results.md`` table beside the trivial baselines, ``plot.png`` and the best run.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from seqzoo.plots import figure_title, metric_label, plot_metric
from seqzoo.run_config import load_yaml

#: results.csv columns: one row per (backbone, seed, fold, metric).
FIELDS = ["backbone", "family", "seed", "fold", "metric", "value", "params", "status", "reason", "device",
          "checkpoint"]
#: what each run measures besides the task's test metrics (rows of results.csv too)
MEASUREMENTS = ("train_samples_per_s", "train_tokens_per_s", "infer_samples_per_s", "infer_tokens_per_s",
                "peak_mem_mb", "fit_seconds", "epochs", "steps")
#: the status of a run an interrupted compare did not finish (its reason says which)
NOT_RUN = "not run"


def write_results(out: Path, rows: list[dict], task_cls, baseline, config_path: str, command: str) -> None:
    write_results_csv(out / "results.csv", rows)
    summary = summarise(rows, task_cls)
    (out / "results.md").write_text(markdown_table(summary, task_cls, baseline, config_path, command, rows))
    folds = {r.get("fold") for r in rows if r.get("fold") not in (None, "")}
    over = "seeds x folds" if folds else "seeds"
    plot(summary, task_cls, baseline, out / "plot.png",
         title=figure_title(load_yaml(config_path), task_cls, folds=len(folds) or None), over=over)
    best = best_run(rows, task_cls)
    if best:
        (out / "best_checkpoint.txt").write_text(best["checkpoint"] + "\n")
    else:
        (out / "best_checkpoint.txt").unlink(missing_ok=True)


def write_results_csv(path: Path, rows: list[dict]) -> None:
    """results.csv in long (tidy) form: one row per (backbone, seed, fold, metric) with its
    value, params and status; a run without values (n/a, failed) is one row with no metric."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            base = {k: row.get(k, "") for k in FIELDS if k not in ("metric", "value")}
            values = [*(row.get("metrics") or {}).items(), *((k, row[k]) for k in MEASUREMENTS if k in row)]
            if not values:
                writer.writerow(base)
            for metric, value in values:
                writer.writerow({**base, "metric": metric, "value": value})


def read_results_csv(path: Path) -> list[dict[str, Any]]:
    """results.csv back as one dict per run (the rows ``compare`` returns): backbone, family,
    seed, fold, params (an int), status, reason, device, checkpoint, ``metrics`` (the test
    metrics) and the measurements, numbers as floats."""
    runs: dict[tuple, dict[str, Any]] = {}
    with open(path, newline="") as f:
        for line in csv.DictReader(f):
            run = runs.setdefault((line["backbone"], line["seed"], line["fold"]), {
                **{k: line[k] for k in FIELDS if k not in ("metric", "value")}, "metrics": {}})
            if run["params"] not in (None, ""):
                run["params"] = int(float(run["params"]))
            if line["metric"]:
                value = float(line["value"])
                if line["metric"] in MEASUREMENTS:
                    run[line["metric"]] = value
                else:
                    run["metrics"][line["metric"]] = value
    return list(runs.values())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN where there are too few values)."""
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(rows: list[dict], task_cls) -> list[dict]:
    """One entry per backbone: status, mean/std of each reported metric and of the speeds."""
    order: list[str] = []
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        if row["backbone"] not in by_name:
            order.append(row["backbone"])
        by_name.setdefault(row["backbone"], []).append(row)
    summary = []
    for name in order:
        group = by_name[name]
        ok = [r for r in group if r["status"] == "ok"]
        entry = {"backbone": name, "n": len(ok), "runs": len(group)}
        if not ok:  # a failure outranks a run that was not made
            first = next((r for r in group if r["status"] != NOT_RUN), group[0])
            entry["status"] = first["status"]
            entry["reason"] = first.get("reason", "")
            summary.append(entry)
            continue
        entry["status"] = "ok"
        entry["failed"] = sum(r["status"] == "failed" for r in group)
        entry["not_run"] = sum(r["status"] == NOT_RUN for r in group)
        for key in task_cls.report_metrics:
            vals = [r["metrics"][key] for r in ok if key in r.get("metrics", {})]
            if vals:
                entry[key] = mean_std(vals)
        for key in ("train_samples_per_s", "infer_samples_per_s", "peak_mem_mb"):
            entry[key] = mean_std([float(r[key]) for r in ok])
        entry["params"] = ok[0]["params"]
        entry["device"] = ok[0]["device"]
        summary.append(entry)
    main_key = task_cls.report_metrics[0] if task_cls.report_metrics else None
    sign = _sign(task_cls)

    def sort_key(e):
        if e["status"] != "ok" or main_key not in e:
            return (1, 0.0)
        return (0, sign * e[main_key][0])

    return sorted(summary, key=sort_key)


def _fmt(mean: float, std: float) -> str:
    """A metric: 4 significant digits, std to 2."""
    if math.isnan(std):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {std:.2g}"


def _fmt_count(mean: float, std: float) -> str:
    """A speed or a size: whole numbers with thousands separators."""
    if math.isnan(mean):
        return "–"
    if math.isnan(std):
        return f"{mean:,.0f}"
    return f"{mean:,.0f} ± {std:,.0f}"


def baselines_of(baseline) -> list[tuple[str, dict[str, float]]]:
    """A task's ``baseline()`` result as a list: None, one (name, metrics) pair, or a list of pairs."""
    if not baseline:
        return []
    if isinstance(baseline, tuple) and len(baseline) == 2 and isinstance(baseline[0], str):
        return [baseline]
    return list(baseline)


def markdown_table(summary, task_cls, baseline, config_path, command, rows) -> str:
    metrics = list(task_cls.report_metrics)
    head = ["backbone", *metrics, "params", "train samples/s", "infer samples/s", "peak mem (MB)", "n"]
    lines = [f"# {task_cls.__name__}: {Path(config_path).stem}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    devices = sorted({e.get("device", "") for e in summary if e.get("device")})
    if devices:
        over = "seeds x folds" if any(r.get("fold") not in (None, "") for r in rows) else "seeds"
        lines += [f"Device: {', '.join(devices)}. Mean ± sample std over {over}; n = successful runs.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best_name = summary[0]["backbone"] if summary and summary[0]["status"] == "ok" else None
    for e in summary:
        if e["status"] != "ok":
            cells = [e["backbone"], f"{e['status']} ({e.get('reason', '')})"] + [""] * (len(head) - 2)
        else:
            name = f"**{e['backbone']}**" if e["backbone"] == best_name else e["backbone"]
            cells = [name]
            cells += [_fmt(*e[m]) if m in e else "" for m in metrics]
            cells += [f"{e['params']:,}", _fmt_count(*e["train_samples_per_s"]),
                      _fmt_count(*e["infer_samples_per_s"]), _fmt_count(*e["peak_mem_mb"]),
                      _count_cell(e)]
        lines.append("| " + " | ".join(cells) + " |")
    for name, values in baselines_of(baseline):
        cells = [f"*{name}* (baseline)"] + [f"{values[m]:.4g}" if m in values else "" for m in metrics]
        lines.append("| " + " | ".join(cells + ["–"] * (len(head) - len(cells))) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {_run_name(r)}: {r['reason']}" for r in failed]
    missing = [r for r in rows if r["status"] == NOT_RUN]
    if missing:
        lines += ["", f"Not run ({len(missing)} of {len(rows)}; the compare was interrupted): rerun them with "
                      "another --out folder, then join the two with `seqzoo compare --config <this config> "
                      "--merge <this folder> <that folder> --out <a third>`:"]
        lines += [f"- {_run_name(r)}: {r['reason']}" for r in missing]
    return "\n".join(lines) + "\n"


def _count_cell(entry: dict) -> str:
    """The n column: successful runs, and the failed and unmade ones of that backbone."""
    others = [f"{entry[key]} {what}" for key, what in (("failed", "failed"), ("not_run", NOT_RUN)) if entry.get(key)]
    return f"{entry['n']}" + (f" ({', '.join(others)})" if others else "")


def _run_name(row: dict) -> str:
    fold = row.get("fold")
    return f"{row['backbone']} seed {row['seed']}" + ("" if fold in (None, "") else f" fold {fold}")


def plot(summary, task_cls, baseline, path: Path, title: str = "", over: str = "seeds") -> None:
    """The main metric of every backbone that ran (best first), mean ± std over its runs,
    with the trivial baselines as named reference lines."""
    if not task_cls.report_metrics:
        return
    key = task_cls.report_metrics[0]
    ok = [e for e in summary if e["status"] == "ok" and key in e]
    plot_metric(path, title=title or task_cls.__name__, ylabel=metric_label(task_cls, key),
                x_values=[e["backbone"] for e in ok], series={"": {e["backbone"]: e[key] for e in ok}},
                baselines={name: values[key] for name, values in baselines_of(baseline) if key in values},
                xlabel=f"backbone (mean ± std over {over})")


def _sign(task_cls) -> int:
    """+1 when the task's main metric is minimised, -1 when maximised (for sorting)."""
    return -1 if (task_cls.report_modes[:1] or ("min",))[0] == "max" else 1


def best_run(rows: list[dict], task_cls) -> dict | None:
    if not task_cls.report_metrics:
        return None
    key = task_cls.report_metrics[0]
    sign = _sign(task_cls)
    ok = [r for r in rows if r["status"] == "ok" and key in r.get("metrics", {}) and r.get("checkpoint")]
    return min(ok, key=lambda r: sign * r["metrics"][key]) if ok else None

"""The figures of ``seqzoo compare`` and ``seqzoo sweep``: one plotting function and the
words on them.

:func:`plot_metric` draws a task's main metric for several backbones -- one point per
backbone (compare) or one line per backbone over a knob (sweep) -- with error bars over
seeds/folds and the trivial baseline as a named reference line. :func:`metric_label` and
:func:`figure_title` say what is drawn: the metric's human name, its units where known and
which direction is better; the domain and the dataset.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: Human names (and units) of the metrics tasks report, by the name after ``test/``.
#: A task may declare its own as ``report_labels = {"test/x": "name [unit]"}``.
METRIC_NAMES: dict[str, str] = {
    "mse": "mean squared error",
    "mae": "mean absolute error",
    "rmse": "root mean squared error",
    "loss": "test loss",
    "acc": "accuracy",
    "accuracy": "accuracy",
    "seq_acc": "sequence accuracy",
    "cer": "character error rate",
    "wer": "word error rate",
    "mcc": "Matthews correlation coefficient",
    "f1": "F1 score",
    "f1_macro": "macro F1",
    "macro_f1": "macro F1",
    "macro_f1_labelwise": "macro F1 (label-wise)",
    "micro_f1": "micro F1",
    "micro_auc": "micro ROC AUC",
    "macro_auc": "macro ROC AUC",
    "precision": "precision",
    "recall": "recall",
    "score": "PHM08 score",
    "si_snri": "SI-SNR improvement [dB]",
    "sdri": "SDR improvement [dB]",
    "si_snr": "SI-SNR [dB]",
    "imag_mse": "imagined-frame MSE",
    "tail_mse": "last imagined-frame MSE",
    "reward_acc": "imagined reward accuracy",
    "tail_reward_acc": "last imagined reward accuracy",
    "recon_mse": "reconstruction MSE",
}


def metric_label(task_cls, key: str) -> str:
    """``"mean squared error (lower is better)"``: the metric's human name, units where
    known, and the direction from the task's ``report_modes``."""
    declared = getattr(task_cls, "report_labels", None) or {}
    short = key.split("/", 1)[-1]
    name = declared.get(key) or METRIC_NAMES.get(short) or short.replace("_", " ")
    modes = dict(zip(task_cls.report_metrics, task_cls.report_modes))
    mode = modes.get(key)
    if mode is None and key.split("/", 1)[-1] == task_cls.monitor.split("/", 1)[-1]:
        mode = task_cls.monitor_mode
    if mode in ("min", "max"):
        name += " (lower is better)" if mode == "min" else " (higher is better)"
    return name


def figure_title(config: dict, task_cls, folds: int | None = None) -> str:
    """``"forecasting: ett_synthetic.csv"``: the domain (the task's module) and the dataset
    (the data's ``dataset``/``name`` keyword, else its file or folder name, else its class),
    then the config's fold, or ``folds`` when the figure averages over that many folds."""
    domain = task_cls.__module__.rsplit(".", 1)[-1]
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    args = data.get("init_args") or {}
    dataset = args.get("dataset") or args.get("name")
    if not dataset and args.get("path"):
        dataset = Path(str(args["path"])).name
    if not dataset:
        dataset = str(data.get("class_path", "")).rsplit(".", 1)[-1]
        dataset = dataset.removesuffix("DataModule") or "data"
    if folds:
        dataset += f", mean over {folds} folds"
    elif args.get("fold") is not None:
        dataset += f", fold {args['fold']}"
    return f"{domain}: {dataset}"


def plot_metric(
    path: Path,
    *,
    title: str,
    ylabel: str,
    x_values: list[str],
    series: dict[str, dict[str, tuple[float, float]]],
    baselines: dict[str, Any] | None = None,
    xlabel: str = "",
    numeric_x: bool = False,
) -> Any:
    """Draw and save one figure; return it (closed) so tests can read its labels.

    Args:
        path: the PNG to write.
        title: the figure title (:func:`figure_title`).
        ylabel: the metric axis label (:func:`metric_label`).
        x_values: the categories along x, in order (backbone labels, or knob values).
        series: ``{name: {x: (mean, std)}}``; a named series is a line with a legend entry,
            the series ``""`` unconnected points (one per category). NaN std draws no error bar.
        baselines: ``{name: value}`` drawn as a horizontal reference line, or
            ``{name: {x: value}}`` drawn as a dashed line over x.
        xlabel: the x axis label.
        numeric_x: place x at its numeric values (log2 when they span 8x or more).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = {v: (float(v) if numeric_x else i) for i, v in enumerate(x_values)}
    width = max(6.4, 0.42 * len(x_values) + 2.0) if not numeric_x else 6.4
    fig, ax = plt.subplots(figsize=(min(width, 16.0), 4.8), dpi=120)
    for name, points in series.items():
        pts = [(xs[v], *points[v]) for v in x_values if v in points]
        if not pts:
            continue
        x, y, std = zip(*pts)
        yerr = [0.0 if math.isnan(s) else s for s in std]
        ax.errorbar(x, y, yerr=yerr if any(yerr) else None, marker="o", capsize=3,
                    linestyle="-" if name and len(pts) > 1 else "none", label=name or None)
    styles = ("--", ":", "-.", (0, (1, 4)))
    for (name, value), style in zip((baselines or {}).items(), styles):
        if isinstance(value, dict):
            pts = [(xs[v], value[v]) for v in x_values if v in value]
            if pts:
                ax.plot(*zip(*pts), linestyle=style, color="grey", label=f"{name} (baseline)")
        elif value is not None and not math.isnan(value):
            ax.axhline(value, linestyle=style, color="grey", label=f"{name} (baseline)")
    values = list(xs.values())
    if numeric_x and len(values) > 2 and min(values) > 0 and max(values) / min(values) >= 8:
        ax.set_xscale("log", base=2)
    # horizontal labels only while they surely fit side by side (about 40 characters in all)
    rotate = not numeric_x and len(x_values) * max((len(v) for v in x_values), default=0) > 40
    ax.set_xticks(values, x_values, rotation=60 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor" if rotate else "default", fontsize=8)
    if not numeric_x:
        ax.set_xlim(-0.6, len(x_values) - 0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fig

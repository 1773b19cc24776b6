"""What a reader gets from a run: the plot's words, the tidy results.csv, TensorBoard's
hparams and learning rate, and where ``seqzoo fit`` put its run."""

from __future__ import annotations

import csv
import math
from pathlib import Path


from seqzoo.cli import main
from seqzoo.results import FIELDS, read_results_csv, write_results
from seqzoo.domains.diagnostics import DiagnosticsTask
from seqzoo.domains.forecasting import ForecastingTask
from seqzoo.domains.separation import SeparationTask
from seqzoo.plots import figure_title, metric_label, plot_metric
from seqzoo.runs import run_hparams
from tests.conftest import forecasting_config


def test_metric_labels_say_name_units_and_direction():
    assert metric_label(ForecastingTask, "test/mse") == "mean squared error (lower is better)"
    assert metric_label(DiagnosticsTask, "test/acc") == "accuracy (higher is better)"
    assert metric_label(SeparationTask, "test/si_snri") == "SI-SNR improvement [dB] (higher is better)"

    class Declared(ForecastingTask):
        report_metrics = ("test/odd_thing", "test/mse")
        report_modes = ("max", "min")
        report_labels = {"test/odd_thing": "odd thing [m/s]"}

    assert metric_label(Declared, "test/odd_thing") == "odd thing [m/s] (higher is better)"
    assert metric_label(ForecastingTask, "test/new_metric") == "new metric", "unknown: its name, no direction"


def test_figure_title_names_domain_and_dataset(ett_csv):
    config = forecasting_config(ett_csv)
    assert figure_title(config, ForecastingTask) == f"forecasting: {ett_csv.name}"
    config["data"]["init_args"] = {"dataset": "weather", "fold": 3}
    assert figure_title(config, ForecastingTask) == "forecasting: weather, fold 3"
    # compare --folds all: the figure averages over every fold, whatever fold the config names
    assert figure_title(config, ForecastingTask, folds=8) == "forecasting: weather, mean over 8 folds"
    config["data"] = {"class_path": "seqzoo.datasets.diagnostics.DiagnosticsDataModule", "init_args": {}}
    assert figure_title(config, DiagnosticsTask) == "diagnostics: Diagnostics"


def test_plot_of_sixteen_families_has_readable_labels_error_bars_and_the_baseline(tmp_path):
    names = [f"family-number-{i}" for i in range(16)]
    series = {"": {n: (1.0 + i / 10, 0.05 if i % 2 else math.nan) for i, n in enumerate(names)}}
    fig = plot_metric(tmp_path / "p.png", title="forecasting: ett.csv", ylabel="mean squared error (lower is better)",
                      x_values=names, series=series, baselines={"repeat last value": 1.7})
    ax = fig.axes[0]
    assert ax.get_title() == "forecasting: ett.csv"
    assert ax.get_ylabel() == "mean squared error (lower is better)"
    ticks = ax.get_xticklabels()
    assert [t.get_text() for t in ticks] == names and all(t.get_rotation() == 60 for t in ticks)
    # rotated labels do not overlap: each starts right of the previous one's start
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ticks]
    assert all(b.x0 > a.x0 and b.x1 > a.x1 for a, b in zip(boxes, boxes[1:]))
    assert ax.get_legend() is not None and [t.get_text() for t in ax.get_legend().get_texts()] == [
        "repeat last value (baseline)"]
    assert any(line.get_ydata()[0] == 1.7 for line in ax.get_lines()), "the baseline is a reference line"
    assert ax.containers and ax.containers[0].has_yerr, "error bars over seeds"
    assert ax.containers[0].lines[0].get_linestyle() == "None", "backbones are categories: points, not a line"
    assert (tmp_path / "p.png").stat().st_size > 10_000
    few = plot_metric(tmp_path / "q.png", title="t", ylabel="y", x_values=["gru", "lstm"], series={"": {"gru": (1, 0)}})
    assert all(t.get_rotation() == 0 for t in few.axes[0].get_xticklabels()), "a few short names stay level"


def test_sweep_curves_say_what_they_show(tmp_path):
    from seqzoo.sweep import plot_curves

    table = {"gru": {"2": (0.9, 0.02), "4": (0.7, math.nan)}, "mamba": {"2": (1.0, 0.0), "8": (0.8, 0.05)}}
    fig = plot_curves(table, {"2": 0.1, "4": 0.05}, ["2", "4", "8"], "data.n_pairs", "test/acc", tmp_path / "c.png",
                      title="diagnostics: mqar", ylabel=metric_label(DiagnosticsTask, "test/acc"))
    ax = fig.axes[0]
    assert ax.get_title() == "diagnostics: mqar: against n_pairs" and ax.get_xlabel() == "data.n_pairs"
    assert ax.get_ylabel() == "accuracy (higher is better)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["trivial (baseline)", "gru", "mamba"]
    assert (tmp_path / "c.png").stat().st_size > 0


def _run(backbone, seed, mse, status="ok", fold=None):
    row = {"backbone": backbone, "family": backbone, "seed": seed, "status": status}
    if fold is not None:
        row["fold"] = fold
    if status != "ok":
        return {**row, "reason": "needs time tokens"}
    return {**row, "params": 123, "device": "cpu", "checkpoint": f"/ck/{backbone}{seed}.ckpt",
            "metrics": {"test/mse": mse, "test/mae": mse / 2}, "train_samples_per_s": 10.0, "train_tokens_per_s": 480.0,
            "infer_samples_per_s": 20.0, "infer_tokens_per_s": 960.0, "peak_mem_mb": 5.0, "fit_seconds": 2.0,
            "epochs": 1}


def test_results_csv_is_tidy_and_reads_back(tmp_path, ett_csv, write_config):
    rows = [_run("gru", 0, 0.5), _run("gru", 1, 0.7), _run("itransformer", "", 0, status="n/a")]
    config = write_config(forecasting_config(ett_csv))
    write_results(tmp_path, rows, ForecastingTask, ("repeat last value", {"test/mse": 1.5, "test/mae": 1.0}),
                  str(config), "seqzoo compare ...")
    with open(tmp_path / "results.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == FIELDS
    assert {"backbone", "seed", "fold", "metric", "value", "params", "status"} <= set(FIELDS)
    assert not any("{" in v for line in lines for v in line.values()), "no JSON in a column"
    gru0 = {line["metric"]: float(line["value"]) for line in lines if line["backbone"] == "gru" and line["seed"] == "0"}
    assert gru0["test/mse"] == 0.5 and gru0["test/mae"] == 0.25 and gru0["infer_samples_per_s"] == 20.0
    assert len(gru0) == 9 and all(line["params"] == "123" for line in lines if line["backbone"] == "gru")
    [na] = [line for line in lines if line["backbone"] == "itransformer"]
    assert (na["status"], na["metric"], na["value"], na["reason"]) == ("n/a", "", "", "needs time tokens")
    back = read_results_csv(tmp_path / "results.csv")
    assert [(r["backbone"], r["seed"], r["status"]) for r in back] == [
        ("gru", "0", "ok"), ("gru", "1", "ok"), ("itransformer", "", "n/a")]
    assert back[1]["metrics"] == {"test/mse": 0.7, "test/mae": 0.35} and back[1]["peak_mem_mb"] == 5.0
    assert "| **gru** | 0.6 ± 0.14 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_run_hparams_flatten_the_resolved_config(ett_csv):
    config = forecasting_config(ett_csv)
    config["model"]["init_args"]["backbone"]["class_path"] = "seqzoo.backbones.rnn.GRU"
    hp = run_hparams(config)
    assert hp["backbone"] == "gru" and hp["seed"] == 0
    assert hp["backbone.d_model"] == 16 and hp["backbone.n_layers"] == 1
    assert hp["optimizer"] == "AdamW" and hp["optimizer.lr"] == 0.003
    assert hp["data.batch_size"] == 16 and hp["data.lookback"] == 48
    assert all(isinstance(v, (bool, int, float, str)) for v in hp.values())


def test_fit_says_where_the_run_went_and_logs_hparams_and_lr(ett_csv, write_config, tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(write_config(forecasting_config(ett_csv)))]) == 0
    err = capsys.readouterr().err
    run = Path("runs/tiny/gru/seed0")
    assert f"seqzoo: run folder {run}\n" in err
    [end] = [line for line in err.splitlines() if line.startswith("seqzoo: fit completed; best checkpoint ")]
    assert end.endswith(f"{run / 'checkpoints' / 'best.ckpt'} (val/mse {end.rsplit(' ', 1)[-1]}")
    assert Path(end.split("best checkpoint ")[1].split(" (")[0]).is_file()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert any(tag.startswith("lr-") for tag in scalars), scalars
    assert "hp/best_val/loss" in scalars or any(t.startswith("hp/best_") for t in scalars), scalars
    plugin = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    assert b"backbone.d_model" in plugin and b"optimizer.lr" in plugin and b"gru" in plugin


def test_fit_adds_the_lr_monitor_and_hparams_only_with_a_logger(ett_csv, write_config, tmp_path, monkeypatch):
    from seqzoo.lightning_cli import make_cli
    from seqzoo.runs import rewrite_args

    monkeypatch.chdir(tmp_path)
    cfg = str(write_config(forecasting_config(ett_csv)))
    for logger, expected in ((None, True), ("false", False)):
        args, name = rewrite_args(["--config", cfg, *(["--trainer.logger", logger] if logger else [])])
        names = [type(c).__name__ for c in make_cli(args=args, run=False, config_name=name).trainer.callbacks]
        assert ("LearningRateMonitor" in names) == expected and ("HparamsLogger" in names) == expected, names

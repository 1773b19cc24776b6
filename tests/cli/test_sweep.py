"""seqzoo sweep: curves per backbone with the breakdown point, knob checks, and the
diagnostic configs build their task with a knob given on the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from seqzoo.cli import main, make_cli
from seqzoo.domains.diagnostics import DiagnosticsTask
from seqzoo.errors import ConfigError
from seqzoo.runs import rewrite_args
from seqzoo.sweep import breakdown, write_curves
from seqzoo.sweep import main as sweep_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "diagnostics"


def _row(value, backbone, seed, acc, status="ok"):
    metrics = {"test/acc": acc, "test/seq_acc": acc / 2, "test/loss": 1 - acc}
    return {"value": value, "backbone": backbone, "family": backbone, "seed": seed, "status": status,
            "params": 1000, "metrics": metrics if status == "ok" else {}, "reason": "" if status == "ok" else "why",
            "fit_seconds": 1.0}


def test_curves_show_mean_per_value_and_where_each_backbone_breaks(tmp_path):
    values = ["2", "4", "8"]
    rows = [_row("2", "transformer", 0, 1.0), _row("4", "transformer", 0, 0.99), _row("8", "transformer", 0, 0.95),
            _row("2", "gru", 0, 0.96), _row("2", "gru", 1, 0.94), _row("4", "gru", 0, 0.5), _row("4", "gru", 1, 0.7),
            _row("8", "gru", 0, 0.2), _row("2", "s4", 0, 0, status="failed")]
    write_curves(tmp_path, rows, DiagnosticsTask, "data.n_pairs", values, {"2": 0.1, "4": 0.05, "8": 0.03}, 0.9, "cmd")
    table = (tmp_path / "curves.md").read_text()
    assert "| transformer | 1,000 | 1.000 | 0.990 | 0.950 | none |" in table
    assert "| gru | 1,000 | 0.950 ± 0.01 | 0.600 ± 0.14 | 0.200 | 4 |" in table
    assert "| s4 |" in table and "n/a (why)" in table
    assert "0.100 | 0.050 | 0.030" in table
    with open(tmp_path / "curves.csv") as f:
        read = list(csv.DictReader(f))
    assert len(read) == len(rows) and read[0]["knob"] == "data.n_pairs" and read[0]["baseline_test/acc"] == "0.1"
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_breakdown_for_a_metric_that_is_minimised():
    curve = {"1": (0.1, float("nan")), "2": (0.5, float("nan"))}
    assert breakdown(curve, ["1", "2"], 0.3, maximise=False) == "2"
    assert breakdown(curve, ["1", "2"], 0.9, maximise=False) == "none"


@pytest.mark.parametrize("argv, message", [
    (["--knob", "n_pairs", "--values", "2"], "--knob must be a config key"),
    (["--knob", "data.n_pairs", "--values", ","], "--values is empty"),
    (["--knob", "data.n_pairs", "--values", "2", "--data.n_pairs", "3"], "also given as a pass-through"),
    (["--knob", "data.n_pairs", "--values", "2", "--backbones", "nope"], "unknown backbone 'nope'"),
])
def test_bad_sweep_arguments_are_config_errors(argv, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        sweep_main(["--config", str(CONFIGS / "mqar.yaml"), "--out", str(tmp_path), *argv])
    assert not any(tmp_path.iterdir()), "nothing is written before the arguments are checked"


def test_sweep_is_a_seqzoo_verb(capsys):
    assert main(["sweep", "--config", str(CONFIGS / "mqar.yaml"), "--knob", "x", "--values", "1", "--out", "/tmp/x"]) == 2
    assert "--knob must be a config key" in capsys.readouterr().err


@pytest.mark.parametrize("config, knob, value, dim", [
    ("mqar.yaml", "n_pairs", "4", None),
    ("selective_copy.yaml", "n_copy", "4", None),
    ("selectivbench.yaml", "gap_max", "10", None),
    ("state_capacity.yaml", "seq_len", "96", ("seq_len", 96)),
])
def test_diagnostic_configs_build_with_a_knob_from_the_command_line(config, knob, value, dim, tmp_path):
    args, name = rewrite_args(["--config", str(CONFIGS / config), f"--data.{knob}", value, "--model.backbone", "mamba",
                               "--run_dir", str(tmp_path / "run"), "--trainer.logger", "false"])
    cli = make_cli(args=args, run=False, config_name=name)
    assert str(getattr(cli.datamodule.probe, knob)) == value
    dims = cli.datamodule.dims
    assert cli.model.net.vocab_size == dims["vocab_size"] and cli.model.net.max_len == dims["seq_len"]
    if dim:
        assert cli.datamodule.dims[dim[0]] == dim[1] and cli.model.net.max_len == dim[1]
    assert type(cli.model.backbone).name == "mamba" and cli.model.backbone.is_causal
    assert cli.model.net.head.out_features == cli.datamodule.dims["n_classes"]


def test_an_interrupted_sweep_draws_the_values_it_reached(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the second value's compare: the curves hold the first value and the second's
    finished runs, the unmade ones say "not run", the third value is left out, and seqzoo exits 130."""
    from seqzoo import sweep as sweep_module
    from seqzoo.results import write_results_csv

    calls = []

    def compare(config, names, seeds, run_out, **kwargs):
        calls.append(run_out.name)
        run_out.mkdir(parents=True)
        if len(calls) == 1:
            return [_row("2", "gru", 0, 0.95), _row("2", "s4d", 0, 0.9)]
        # as compare leaves it when interrupted: the finished runs, the rest "not run"
        write_results_csv(run_out / "results.csv", [_row("4", "gru", 0, 0.6),
                                                    _row("4", "s4d", 0, 0, status="not run")])
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "compare", compare)
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(CONFIGS / "mqar.yaml"), "--knob", "data.n_pairs", "--values", "2,4,8",
                 "--backbones", "gru,s4d", "--out", str(out)]) == 130
    assert calls == ["n_pairs=2", "n_pairs=4"]
    assert "Traceback" not in capsys.readouterr().err
    table = (out / "curves.md").read_text()
    assert "| backbone | params | 2 | 4 | breakdown |" in table
    assert "| gru | 1,000 | 0.950 | 0.600 | 4 |" in table
    assert "| s4d | 1,000 | 0.900 | not run | none |" in table
    assert "Interrupted (Ctrl-C) at data.n_pairs = 4" in table and "not run: 8." in table
    with open(out / "curves.csv") as f:
        assert [(r["value"], r["backbone"], r["status"]) for r in csv.DictReader(f)] == [
            ("2", "gru", "ok"), ("2", "s4d", "ok"), ("4", "gru", "ok"), ("4", "s4d", "not run")]


def test_a_value_the_config_cannot_take_fails_before_any_run(tmp_path, monkeypatch, capsys):
    """40 pairs cannot fit MQAR's 31 key tokens: the sweep says so before it trains the 2-pair runs."""
    from seqzoo import sweep as sweep_module

    calls = []
    monkeypatch.setattr(sweep_module, "compare", lambda *args, **kwargs: calls.append(args))
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(CONFIGS / "mqar.yaml"), "--knob", "data.n_pairs", "--values", "2,40",
                 "--backbones", "gru", "--out", str(out)]) == 2
    assert calls == [] and not out.exists()
    assert "--values 40 (data.n_pairs): n_pairs: 40 pairs need 40 distinct keys" in capsys.readouterr().err

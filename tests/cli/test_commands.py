"""`seqzoo backbones`, `data`, `compare` and `export` as a user runs them."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import onnx
import pytest

from seqzoo import compare_worker, list_backbones
from seqzoo.cli import main
from seqzoo.results import read_results_csv, summarise
from seqzoo.domains.forecasting import ForecastingTask
from tests.conftest import forecasting_config


def test_backbones_table_lists_every_family_with_capabilities(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for column in ("name", "family", "causal", "streaming", "tokens", "export length", "params"):
        assert column in header
    for name in list_backbones():
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


def test_data_list_synth_and_unknown(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "forecasting" in out and "pvlib-tmy3" in out
    assert main(["data", "synth", "forecasting", "--out", str(tmp_path / "s"), "--n_rows", "300"]) == 0
    assert (tmp_path / "s" / "ett_synthetic.csv").exists()
    assert main(["data", "synth", "nosuchdomain", "--out", str(tmp_path)]) == 2
    assert "no synthetic generator for domain 'nosuchdomain'" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_table_plot_csv_and_export_of_the_best(ett_csv, write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(forecasting_config(ett_csv, max_epochs=2, limit_train_batches=10, limit_val_batches=4))
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(cfg), "--backbones", "gru,transformer", "--seeds", "0,1",
                 "--out", str(out), "--trainer.limit_test_batches", "5"]) == 0
    tidy = list(csv.DictReader(open(out / "results.csv")))
    assert list(tidy[0])[:6] == ["backbone", "family", "seed", "fold", "metric", "value"]
    assert {"params", "status"} <= set(tidy[0])
    assert {line["metric"] for line in tidy} >= {"test/mse", "test/mae", "infer_samples_per_s", "peak_mem_mb"}
    rows = read_results_csv(out / "results.csv")
    assert [(r["backbone"], r["seed"], r["status"]) for r in rows] == [
        ("gru", "0", "ok"), ("gru", "1", "ok"), ("transformer", "0", "ok"), ("transformer", "1", "ok")]
    for r in rows:
        metrics = r["metrics"]
        assert metrics["test/mse"] > 0 and float(r["params"]) > 0
        assert float(r["train_samples_per_s"]) > 0 and float(r["infer_samples_per_s"]) > 0
        assert float(r["peak_mem_mb"]) > 0
    table = (out / "results.md").read_text()
    assert "repeat last value" in table and "± " in table and "seqzoo compare --config" in table
    for name in ("repeat last value", "seasonal naive (period 24)", "DLinear (least squares)"):
        assert f"| *{name}* (baseline) |" in table, name
    assert (out / "plot.png").stat().st_size > 10_000
    best = Path((out / "best_checkpoint.txt").read_text().strip())
    assert best.exists()
    # shared keywords are kept, family defaults used for the rest
    assert "d_model: 16" in (out / "configs" / "transformer.yaml").read_text()
    # the runs were forked from compare's server: one in a fresh interpreter gives the same figures
    spec = {"config": str(out / "configs" / "gru.yaml"), "seed": 1, "max_epochs": None, "max_steps": None,
            "extra": ["--trainer.limit_test_batches", "5"], "run_dir": str(tmp_path / "fresh"),
            "result": str(tmp_path / "fresh.json")}
    fresh = subprocess.run(compare_worker._command(spec), capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    forked = json.loads((out / "logs" / "gru-seed1.json").read_text())
    alone = json.loads((tmp_path / "fresh.json").read_text())
    assert alone["metrics"] == forked["metrics"] and alone["steps"] == forked["steps"] > 0

    onnx_path = tmp_path / "best.onnx"
    assert main(["export", "--ckpt", str(best), "--out", str(onnx_path)]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime parity: max |diff|" in printed
    model = onnx.load(str(onnx_path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param, "batch stays symbolic"
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["graphs"][0]["max_abs_diff"] <= 1e-4


def test_compare_rejects_unknown_backbone_before_running(ett_csv, write_config, tmp_path, capsys):
    cfg = write_config(forecasting_config(ett_csv))
    assert main(["compare", "--config", str(cfg), "--backbones", "gru,nope", "--out", str(tmp_path / "c")]) == 2
    assert "unknown backbone 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_summary_marks_incompatible_pairs_na_and_sorts_by_main_metric():
    rows = [
        {"backbone": "a", "seed": 0, "status": "ok", "metrics": {"test/mse": 0.5, "test/mae": 0.4}, "params": 10,
         "train_samples_per_s": 5, "infer_samples_per_s": 9, "peak_mem_mb": 100, "device": "cpu"},
        {"backbone": "a", "seed": 1, "status": "ok", "metrics": {"test/mse": 0.7, "test/mae": 0.5}, "params": 10,
         "train_samples_per_s": 7, "infer_samples_per_s": 11, "peak_mem_mb": 100, "device": "cpu"},
        {"backbone": "b", "seed": 0, "status": "ok", "metrics": {"test/mse": 0.3, "test/mae": 0.2}, "params": 20,
         "train_samples_per_s": 5, "infer_samples_per_s": 9, "peak_mem_mb": 100, "device": "cpu"},
        {"backbone": "c", "seed": "", "status": "n/a", "reason": "needs time tokens"},
    ]
    summary = summarise(rows, ForecastingTask)
    assert [e["backbone"] for e in summary] == ["b", "a", "c"]
    mean, std = summary[1]["test/mse"]
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1414, abs=1e-3)
    assert summary[2]["status"] == "n/a" and summary[2]["reason"] == "needs time tokens"


class _InterruptedRunner:
    """compare's runner with Ctrl-C pressed during the run numbered ``at`` (1-based); the runs before
    it finish with the figures a run reports (here made up: this checks the table, not training)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        """No server to close."""

    def run(self, spec: dict, log_file: Path) -> int:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        result = {"metrics": {"test/mse": 0.5 + spec["seed"] / 10, "test/mae": 0.4}, "params": 10,
                  "train_samples_per_s": 5.0, "infer_samples_per_s": 9.0, "peak_mem_mb": 100.0, "device": "cpu",
                  "checkpoint": str(log_file.with_suffix(".ckpt"))}
        Path(spec["result"]).write_text(json.dumps(result))
        log_file.write_text("done\n")
        return 0


def test_an_interrupted_compare_writes_the_finished_runs_and_marks_the_rest(ett_csv, write_config, tmp_path,
                                                                             monkeypatch, capsys):
    from seqzoo import compare as compare_module

    cfg = write_config(forecasting_config(ett_csv))
    out = tmp_path / "cmp"
    runner = _InterruptedRunner(at=3)
    monkeypatch.setattr(compare_module, "Runner", lambda: runner)
    assert main(["compare", "--config", str(cfg), "--backbones", "gru,s4d", "--seeds", "0,1",
                 "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "seqzoo compare: interrupted" in captured.err
    assert "Interrupted after 2 of 4 runs" in captured.out and runner.calls == 3
    rows = read_results_csv(out / "results.csv")
    assert [(r["backbone"], r["seed"], r["status"]) for r in rows] == [
        ("gru", "0", "ok"), ("gru", "1", "ok"), ("s4d", "0", "not run"), ("s4d", "1", "not run")]
    assert rows[2]["reason"] == "Ctrl-C during this run"
    assert rows[3]["reason"] == "the compare was interrupted before it"
    table = (out / "results.md").read_text()
    assert "| **gru** | 0.55 ± 0.071 |" in table and "| s4d | not run (Ctrl-C during this run) |" in table
    assert "Not run (2 of 4; the compare was interrupted)" in table and "- s4d seed 1: the compare" in table
    assert (out / "best_checkpoint.txt").read_text().strip().endswith("gru-seed0.ckpt")

    # the runs not made, rerun into another folder, take the place of the "not run" rows in a merge
    rest = tmp_path / "rest"
    monkeypatch.setattr(compare_module, "Runner", lambda: _InterruptedRunner(at=0))
    assert main(["compare", "--config", str(cfg), "--backbones", "s4d", "--seeds", "1", "--out", str(rest)]) == 0
    merged = tmp_path / "merged"
    assert main(["compare", "--config", str(cfg), "--merge", str(out), str(rest), "--out", str(merged)]) == 0
    rows = read_results_csv(merged / "results.csv")
    assert [(r["backbone"], r["seed"], r["status"]) for r in rows] == [
        ("gru", "0", "ok"), ("gru", "1", "ok"), ("s4d", "1", "ok"), ("s4d", "0", "not run")]
    assert "| s4d | 0.6 | 0.4 |" in (merged / "results.md").read_text()
    assert "1 (1 not run) |" in (merged / "results.md").read_text()


def test_a_second_ctrl_c_does_not_interrupt_the_table_being_written():
    import os
    import signal

    from seqzoo.cli_args import sigint_ignored

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a seqzoo process
    try:
        with sigint_ignored():
            os.kill(os.getpid(), signal.SIGINT)  # ignored: no KeyboardInterrupt here
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.slow
def test_export_streaming_writes_step_graph_and_refuses_with_reason(ett_csv, write_config, tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.chdir(tmp_path)
    config = forecasting_config(ett_csv, limit_train_batches=2)
    config["model"]["init_args"]["net"] = {"head": "last", "revin": False}
    config["model"]["init_args"]["backbone"]["init_args"]["causal"] = True
    assert main(["fit", "--config", str(write_config(config))]) == 0
    ckpt = tmp_path / "runs/tiny/gru/seed0/checkpoints/last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--streaming"]) == 0
    out = capsys.readouterr().out
    assert out.count("onnxruntime parity") == 2
    step = onnx.load(str(tmp_path / "m.step.onnx"))
    names = [i.name for i in step.graph.input]
    assert names[0] == "x_t" and names[1:] == [f"state_{i}" for i in range(len(names) - 1)]
    assert [o.name for o in step.graph.output][1:] == [f"state_out_{i}" for i in range(len(names) - 1)]

    default = forecasting_config(ett_csv, limit_train_batches=2)
    assert main(["fit", "--config", str(write_config(default, "plain"))]) == 0
    ckpt = tmp_path / "runs/plain/gru/seed0/checkpoints/last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "p.onnx"), "--streaming"]) == 2
    assert "head must be 'last'" in capsys.readouterr().err
    assert not (tmp_path / "p.onnx").exists(), "nothing written when the export is refused"


def test_export_missing_checkpoint(tmp_path, capsys):
    assert main(["export", "--ckpt", str(tmp_path / "no.ckpt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_compare_baseline_sees_the_runs_data_overrides(ett_csv, write_config, tmp_path, monkeypatch):
    """``--data.*``/``--model.*`` pass-through arguments reach the baseline as they reach each run
    (the same parser: ``--key=value``, ``init_args`` paths and nested objects)."""
    from seqzoo.compare import _baseline, compare

    monkeypatch.chdir(tmp_path)  # where a default run folder would appear
    config = forecasting_config(ett_csv)
    path = str(write_config(config))
    overrides = ["--data.horizon", "24", "--data.init_args.lookback=96", "--trainer.max_epochs", "1",
                 "--model.lr_scheduler.class_path", "torch.optim.lr_scheduler.StepLR",
                 "--model.lr_scheduler.init_args.step_size", "2"]
    compare(path, [], [0], tmp_path / "cmp", passthrough=overrides)
    table = (tmp_path / "cmp" / "results.md").read_text()
    name, values = _baseline(path, overrides)[0]  # repeat last value
    _, plain = _baseline(path, [])[0]
    assert values["test/mse"] != pytest.approx(plain["test/mse"]), "horizon 24 must change the baseline"
    assert f"{values['test/mse']:.4g}" in table and f"{plain['test/mse']:.4g}" not in table
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cmp" / "runs").exists(), "the baseline writes no run"


def test_compare_keeps_the_configs_own_family_keywords(ett_csv, write_config, tmp_path, monkeypatch):
    """A paper config's family keeps its keywords; other families get only the shared ones."""
    import yaml

    import seqzoo.compare as cmp

    config = forecasting_config(ett_csv, backbone="transformer")
    config["model"]["init_args"]["backbone"]["init_args"].update(n_heads=2, mlp_ratio=1.0)
    monkeypatch.setattr(cmp, "_run_job", lambda name, cls, seed, *a, **kw: {
        "backbone": name, "family": cls.family, "seed": seed, "status": "failed", "reason": "not run"})
    cmp.compare(str(write_config(config)), ["transformer", "gru"], [0], tmp_path / "cmp")
    own = yaml.safe_load((tmp_path / "cmp/configs/transformer.yaml").read_text())["model"]["init_args"]["backbone"]
    other = yaml.safe_load((tmp_path / "cmp/configs/gru.yaml").read_text())["model"]["init_args"]["backbone"]
    assert own["init_args"]["n_heads"] == 2 and own["init_args"]["mlp_ratio"] == 1.0
    assert other["init_args"] == {"d_model": 16, "n_layers": 1}


def test_compare_runs_informer_as_the_papers_model_unless_shared_heads(ett_csv, write_config, tmp_path):
    """In forecasting compares "informer" is the paper's model (conv embedding with time stamps,
    distilling encoder, generative decoder); ``shared_heads`` gives it the config's head, labelled."""
    import yaml

    import seqzoo.compare as cmp
    from seqzoo.domains.forecasting import ForecastingTask

    path = str(write_config(forecasting_config(ett_csv, backbone="transformer")))
    rows = cmp.compare(path, ["informer", "gru"], [0], tmp_path / "paper",
                       passthrough=["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                                    "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"])
    by_name = {r["backbone"]: r for r in rows}
    assert by_name["informer"]["status"] == "ok", by_name["informer"]
    model = yaml.safe_load((tmp_path / "paper/configs/informer.yaml").read_text())["model"]["init_args"]
    form = ForecastingTask.paper_forms["informer"]
    assert model["use_time_features"] is True
    assert {k: model["net"][k] for k in form["net"]} == form["net"]
    gru = yaml.safe_load((tmp_path / "paper/configs/gru.yaml").read_text())["model"]["init_args"]
    assert gru.get("net", {}).get("head", "linear") == "linear", "other families keep the config's head"

    import unittest.mock as mock
    with mock.patch.object(cmp, "_run_job", lambda name, cls, seed, *a, **kw: {
            "backbone": name, "family": cls.family, "seed": seed, "status": "failed", "reason": "not run"}):
        rows = cmp.compare(path, ["informer"], [0], tmp_path / "shared", shared_heads=True)
    assert rows[0]["backbone"] == "informer (shared head)"
    shared = yaml.safe_load((tmp_path / "shared/configs/informer.yaml").read_text())["model"]["init_args"]
    assert shared.get("net", {}).get("head", "linear") == "linear"


def test_compare_builds_fixed_token_families_for_the_tokens_the_task_feeds(ett_csv, write_config, tmp_path):
    """MambaMixer is built for the lookback (its channel mixer's features are the tokens)."""
    import unittest.mock as mock

    import yaml

    import seqzoo.compare as cmp

    config = forecasting_config(ett_csv, backbone="transformer")
    with mock.patch.object(cmp, "_run_job", lambda name, cls, seed, *a, **kw: {
            "backbone": name, "family": cls.family, "seed": seed, "status": "failed", "reason": "not run"}):
        cmp.compare(str(write_config(config)), ["mambamixer", "vim2"], [0], tmp_path / "cmp")
    built = yaml.safe_load((tmp_path / "cmp/configs/mambamixer.yaml").read_text())["model"]["init_args"]["backbone"]
    assert built["init_args"]["n_tokens"] == config["data"]["init_args"]["lookback"]
    rows = read_results_csv(tmp_path / "cmp" / "results.csv")
    assert {r["backbone"]: r["status"] for r in rows}["vim2"] == "n/a"  # image tokens: not a forecaster


def test_compare_over_every_loso_fold_reports_the_mean_over_folds(tmp_path, monkeypatch):
    """``--folds all`` on the pain LOSO config: one run per subject fold (``--data.fold k``),
    the table's mean over every fold, the baseline averaged over the same folds."""
    import seqzoo.compare as cmp

    monkeypatch.chdir(tmp_path)  # the synthetic subjects are written to data/pain/ here
    config = str(Path(__file__).resolve().parents[2] / "configs" / "pain" / "emopain_synth.yaml")
    seen = []

    def fake_job(name, cls, seed, config_file, out, max_epochs, passthrough, tag=None, **kw):
        fold = int(passthrough[passthrough.index("--data.fold") + 1])
        seen.append((seed, fold, tag))
        return {"backbone": name, "family": cls.family, "seed": seed, "status": "ok", "params": 1, "device": "cpu",
                "metrics": {"test/mcc": fold / 10, "test/f1_macro": 0.5, "test/acc": 0.5},
                "train_samples_per_s": 1.0, "infer_samples_per_s": 1.0, "peak_mem_mb": 1.0, "checkpoint": "x"}

    monkeypatch.setattr(cmp, "_run_job", fake_job)
    rows = cmp.compare(config, ["gru"], [0], tmp_path / "cmp", folds="all")
    n = len(list((tmp_path / "data" / "pain" / "emopain_synth").glob("subject_*.csv")))
    assert n >= 4 and [(s, f) for s, f, _ in seen] == [(0, k) for k in range(n)]
    assert len({tag for *_, tag in seen}) == n, "each fold has its own run folder"
    assert [r["fold"] for r in rows] == list(range(n))
    [entry] = summarise(rows, cmp.task_class_of(cmp.load_yaml(config)))
    assert entry["test/mcc"][0] == pytest.approx(sum(range(n)) / 10 / n) and entry["n"] == n
    assert f"mean over {n} folds" in (tmp_path / "cmp" / "results.md").read_text()
    with pytest.raises(cmp.ConfigError, match="folds 0.."):
        cmp.compare(config, ["gru"], [0], tmp_path / "bad", folds=[n])

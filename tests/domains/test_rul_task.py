"""RUL domain: metrics by hand, each stage learning beyond its baseline, the three-stage
pipeline end to end, ONNX parity of every trained stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from seqzoo import build_backbone
from seqzoo.cli import main
from seqzoo.datasets import get_synth
from seqzoo.datasets.rul import RULDataModule
from seqzoo.domains.rul import (
    AnomalyDetectionTask,
    CMAPSSScore,
    DegradationForecastTask,
    RULTask,
    best_threshold,
    cmapss_score,
)
from seqzoo.export import export_onnx
from seqzoo.pipelines.laser import load_stage
from tests.conftest import make_tiny_trainer

STAGES = {"forecast": DegradationForecastTask, "detect": AnomalyDetectionTask, "rul": RULTask}

# -- metrics by hand ----------------------------------------------------------------------


def test_cmapss_score_is_asymmetric_and_summed():
    pred, true = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([15.0, 10.0, 30.0])
    # d = -5 (early): e^(5/13) - 1 = 0.46895; d = +10 (late): e^1 - 1 = 1.71828; d = 0: 0
    assert float(cmapss_score(pred, true)) == pytest.approx(math.exp(5 / 13) - 1 + math.e - 1, rel=1e-9)
    assert float(cmapss_score(torch.tensor([20.0]), torch.tensor([10.0]))) > float(
        cmapss_score(torch.tensor([0.0]), torch.tensor([10.0]))), "late costs more than early"
    # errors counted in 20 h steps: d = 40 h -> e^(2/10) - 1
    assert float(cmapss_score(torch.tensor([90.0]), torch.tensor([50.0]), time_unit=20)) == pytest.approx(math.exp(0.2) - 1)
    metric = CMAPSSScore()
    metric.update(pred[:2], true[:2])
    metric.update(pred[2:], true[2:])
    assert float(metric.compute()) == pytest.approx(float(cmapss_score(pred, true)))


def test_best_threshold_maximises_f1_or_accuracy():
    scores = torch.tensor([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    labels = torch.tensor([0, 0, 1, 0, 1, 1])
    # flag top 5 -> tp 3, fp 1: F1 = 6/7 (best); top 3 -> tp 2, fp 1, fn 1: F1 = 2/3
    assert best_threshold(scores, labels, "f1") == pytest.approx((0.2 + 0.35) / 2)
    # accuracy: top 2 -> 5/6 correct, top 5 -> 5/6 as well; the first maximum (fewest flags) wins
    assert best_threshold(scores, labels, "accuracy") == pytest.approx((0.4 + 0.8) / 2)
    tied = best_threshold(torch.tensor([0.5, 0.5, 0.1]), torch.tensor([1, 0, 0]))
    assert tied == pytest.approx(0.3), "never cuts between equal scores"


# -- the three laser stages, trained once through `seqzoo fit` -----------------------------


def rul_config(stage: str, data: Path, backbone: str = "attention_gru", epochs: int = 6, **data_args) -> dict:
    task = {"forecast": "DegradationForecastTask", "detect": "AnomalyDetectionTask", "rul": "RULTask"}[stage]
    return {
        "seed_everything": 0,
        "trainer": {"max_epochs": epochs, "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 5, "logger": False},
        "model": {"class_path": f"seqzoo.domains.rul.{task}", "init_args": {
            "backbone": {"class_path": backbone, "init_args": {"d_model": 16, "n_layers": 1}},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.005}}}},
        "data": {"class_path": "seqzoo.datasets.rul.RULDataModule", "init_args": {
            "path": str(data), "format": "laser", "stage": stage, "lookback": 16, "horizon": 2, "rul_cap": 400,
            "rul_eval": "all", "eval_stride": 2, "batch_size": 32, **data_args}},
    }


@pytest.fixture(scope="module")
def laser_data(tmp_path_factory) -> Path:
    return get_synth("rul-laser")(out=str(tmp_path_factory.mktemp("laser")), n_devices=16, test_hours=4000.0,
                                  min_life_hours=1500.0, seed=3)


@pytest.fixture(scope="module")
def laser_stages(laser_data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stages")
    ckpts = {}
    for stage in STAGES:
        cfg = root / f"{stage}.yaml"
        # the forecaster is trained with another RUL cap, as in configs/rul: the pipeline must take
        # each stage's labels from that stage's own data settings
        extra = {"rul_cap": 125} if stage == "forecast" else {}
        cfg.write_text(yaml.safe_dump(rul_config(stage, laser_data, **extra)))
        run = root / stage
        assert main(["fit", "--config", str(cfg), "--run_dir", str(run)]) == 0
        ckpts[stage] = run / "checkpoints" / "best.ckpt"
    return ckpts


def _test(task, dm) -> dict[str, float]:
    trainer = make_tiny_trainer()
    return trainer.test(task, dm, verbose=False)[0]


@pytest.mark.slow
def test_forecaster_beats_repeating_the_last_value(laser_stages):
    task, dm = load_stage(str(laser_stages["forecast"]), DegradationForecastTask)
    dm.setup()
    got, (_, baseline) = _test(task, dm), task.baseline(dm)
    assert got["test/rmse"] < 0.95 * baseline["test/rmse"], (got, baseline)


@pytest.mark.slow
def test_detector_beats_the_majority_class_with_a_validation_threshold(laser_stages):
    task, dm = load_stage(str(laser_stages["detect"]), AnomalyDetectionTask)
    assert math.isfinite(float(task.threshold)), "the validation threshold is saved in the checkpoint"
    dm.setup()
    got, (name, baseline) = _test(task, dm), task.baseline(dm)
    assert name == "majority class (normal)" and baseline["test/f1"] == 0
    assert got["test/acc"] > baseline["test/acc"] and got["test/f1"] > 0.4, (got, baseline)


@pytest.mark.slow
def test_rul_model_beats_the_mean_training_rul(laser_stages):
    task, dm = load_stage(str(laser_stages["rul"]), RULTask)
    dm.setup()
    got, (_, baseline) = _test(task, dm), task.baseline(dm)
    assert got["test/rmse"] < 0.8 * baseline["test/rmse"], (got, baseline)


@pytest.mark.slow
def test_cmapss_rul_at_the_last_cycle_beats_the_mean(tmp_path):
    data = get_synth("rul-cmapss")(out=str(tmp_path / "c"), n_train_units=12, n_test_units=12, max_life=200, seed=4)
    L.seed_everything(0)
    dm = RULDataModule(str(data), format="cmapss", lookback=20, batch_size=32,
                       channels=["s2", "s3", "s4", "s7", "s11", "s12", "s15", "s17", "s20", "s21"])
    sizes = {k: dm.dims[k] for k in ("n_channels", "lookback", "rul_cap")}  # what RULTask takes
    task = RULTask(build_backbone("lstm", d_model=16, n_layers=1), **sizes,
                   optimizer=lambda p: torch.optim.AdamW(p, lr=0.005))
    make_tiny_trainer(max_epochs=3).fit(task, dm)
    got, (_, baseline) = _test(task, dm), task.baseline(dm)
    assert len(dm.datasets["test"]) == 12, "one window per test unit"
    assert got["test/rmse"] < 0.75 * baseline["test/rmse"] and got["test/score"] < baseline["test/score"]


@pytest.mark.slow
def test_pipeline_end_to_end_reports_forecast_anomaly_and_rul(laser_stages, tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["pipeline", "laser", "--forecast", str(laser_stages["forecast"]), "--detect",
            str(laser_stages["detect"]), "--rul", str(laser_stages["rul"]), "--stride", "2", "--json", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for key in ("forecast_rmse", "anomaly_accuracy", "rul_rmse", "ANOMALY", "normal"):
        assert key in printed, key
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["forecast_rmse"] < 0.1  # min-max scaled current rise
    assert summary["anomaly_accuracy"] > 0.8 and summary["anomaly_points"] > 100
    assert summary["rul_rmse"] < 0.3 * report["rul_cap"] and summary["rul_points_flagged"] > 0
    devices = [d for d in report["devices"] if "skipped" not in d]
    assert len(devices) == len(report["devices"]) >= 3
    failed = [d for d in devices if d["rul_true"] == 0.0]
    assert failed and all(d["anomaly_flag"] for d in failed), "a device at its failure is flagged"
    assert all(len(d["forecast"]["current_mA"]) == report["horizon"] for d in devices)
    # RUL waits for the anomaly flag (the paper's pipeline): no estimate for a device never flagged
    assert report["gated"] and all((d["rul_estimate"] is None) == (d["detected_at"] is None) for d in devices)
    assert all(d["rul_estimate"] is not None for d in failed) and "rul_rmse_model_only" in summary
    assert main([*args[:-2], "--json", str(tmp_path / "ungated.json"), "--ungated"]) == 0
    ungated = json.loads((tmp_path / "ungated.json").read_text())
    assert not ungated["gated"] and all(d["rul_estimate"] is not None for d in ungated["devices"] if "skipped" not in d)
    assert ungated["summary"]["rul_rmse"] == pytest.approx(summary["rul_rmse_model_only"])


@pytest.mark.slow
def test_pipeline_rejects_a_checkpoint_of_the_wrong_stage(laser_stages, capsys):
    args = ["pipeline", "laser", "--forecast", str(laser_stages["forecast"]), "--detect",
            str(laser_stages["forecast"]), "--rul", str(laser_stages["rul"])]
    assert main(args) == 2
    assert "holds a DegradationForecastTask, expected a AnomalyDetectionTask" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_onnx_parity_of_each_trained_stage(laser_stages, stage, tmp_path):
    task, dm = load_stage(str(laser_stages[stage]), STAGES[stage])
    report = export_onnx(task.export_spec(), tmp_path / f"{stage}.onnx")
    assert report.max_abs_diff <= 1e-4
    if stage == "rul":  # the graph outputs RUL / cap; times the cap it is the task's estimate in hours
        dm.setup()
        batch = next(iter(dm.test_dataloader()))
        torch.testing.assert_close(task.export_spec().module(batch["x"]) * 400, task(batch))

"""iTransformer and Informer through the CLI: the variate-token path through compare and
export, n/a for time-only tasks, and the paper-protocol configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from seqzoo.cli import main
from seqzoo.results import read_results_csv
from seqzoo.domains.forecasting import ForecastingTask
from seqzoo.checkpoints import build_datamodule, build_task
from tests.conftest import forecasting_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "forecasting"


class TimeOnlyForecasting(ForecastingTask):
    """A task that needs per-step outputs, as most domains do: it feeds time tokens only."""

    token_kinds = frozenset({"time"})


@pytest.mark.slow
def test_compare_trains_and_exports_a_variate_token_model(ett_csv, write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = forecasting_config(ett_csv, limit_train_batches=6, limit_val_batches=2)
    config["model"]["init_args"]["use_time_features"] = True  # time features become extra variate tokens
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(write_config(config)), "--backbones", "itransformer",
                 "--out", str(out), "--trainer.limit_test_batches", "3"]) == 0
    rows = {r["backbone"]: r for r in read_results_csv(out / "results.csv")}
    assert {name: r["status"] for name, r in rows.items()} == {"itransformer": "ok"}
    assert rows["itransformer"]["metrics"]["test/mse"] > 0 and int(rows["itransformer"]["params"]) > 0
    table = (out / "results.md").read_text()
    assert "| **itransformer** |" in table and "repeat last value" in table

    onnx_path = tmp_path / "itransformer.onnx"
    assert main(["export", "--ckpt", rows["itransformer"]["checkpoint"], "--out", str(onnx_path)]) == 0
    assert "onnxruntime parity: max |diff|" in capsys.readouterr().out
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["backbone"] == "itransformer" and meta["graphs"][0]["max_abs_diff"] <= 1e-4


def test_compare_marks_variate_backbones_na_for_a_time_only_task(ett_csv, write_config, tmp_path, capsys):
    config = forecasting_config(ett_csv)
    config["model"]["class_path"] = f"{__name__}.TimeOnlyForecasting"
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(write_config(config)), "--backbones", "itransformer",
                 "--out", str(out)]) == 0
    [row] = read_results_csv(out / "results.csv")
    assert (row["backbone"], row["status"]) == ("itransformer", "n/a")
    assert row["reason"] == "needs time tokens (the backbone mixes variate tokens)"
    assert "| itransformer | n/a (needs time tokens (the backbone mixes variate tokens)) |" in (
        out / "results.md").read_text()
    assert not (out / "runs").exists(), "nothing was trained"


def test_fit_refuses_a_variate_backbone_for_a_time_only_task(ett_csv, write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = forecasting_config(ett_csv)
    config["model"]["class_path"] = f"{__name__}.TimeOnlyForecasting"
    assert main(["fit", "--config", str(write_config(config)), "--model.backbone", "itransformer"]) == 2
    captured = capsys.readouterr()
    assert "TimeOnlyForecasting cannot use backbone 'itransformer': needs time tokens" in captured.err + captured.out


ETTH1_DIMS = {"n_channels": 7, "n_targets": 7, "lookback": 96, "horizon": 96, "n_time_features": 4}


@pytest.mark.parametrize("name", ["etth1_itransformer", "etth1_informer"])
def test_paper_configs_build_the_papers_models(name):
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    task = build_task(config, ETTH1_DIMS)
    data = build_datamodule(config)
    assert (data.lookback, data.horizon, data.batch_size, data.borders) == (96, 96, 32, [8640, 11520, 14400])
    assert task.use_time_features and config["seed_everything"] == 2021
    backbone = task.backbone
    assert backbone.n_layers == 2 and backbone.dropout_p == {"etth1_itransformer": 0.1, "etth1_informer": 0.05}[name]
    if name == "etth1_itransformer":
        assert type(backbone).name == "itransformer" and backbone.d_model == 256
        assert task.net.revin and task.net.head_kind == "linear"
        assert backbone.blocks[0].mlp.fc1.out_features == 256  # d_ff = d_model
    else:
        assert type(backbone).name == "informer" and backbone.d_model == 512 and len(backbone.distilling) == 1
        assert backbone.layers[0].mlp.fc1.out_features == 2048
        assert backbone.layers[0].mixer.attention == "prob" and backbone.layers[0].mixer.factor == 5
        assert not task.net.revin and task.net.head_kind == "decoder" and task.net.embedding_kind == "conv"
        assert task.net.head.label_len == 48 and len(task.net.head.layers) == 1
        assert sum(p.numel() for p in task.net.parameters()) == pytest.approx(11.3e6, rel=0.01)  # Informer's size

"""`seqzoo fit|test` as a user runs them: run folders, resume, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from seqzoo.cli import main
from tests.conftest import forecasting_config



def run_dir(root: Path, config="tiny", backbone="gru", seed=0) -> Path:
    return root / "runs" / config / backbone / f"seed{seed}"


@pytest.mark.slow
def test_fit_writes_a_complete_run_folder_and_test_appends(ett_csv, write_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(forecasting_config(ett_csv))
    assert main(["fit", "--config", str(cfg)]) == 0
    rd = run_dir(tmp_path)
    for name in ("config.yaml", "metrics.csv", "status.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (rd / name).exists(), name
    assert list((rd / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((rd / "status.json").read_text())["status"] == "completed"
    ckpt = torch.load(rd / "checkpoints/best.ckpt", weights_only=False)
    assert "class_path: seqzoo.backbones.rnn.GRU" in ckpt["seqzoo"]["config"]
    assert ckpt["seqzoo"]["dims"]["n_channels"] == 7
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(rd / "checkpoints/best.ckpt")]) == 0
    metrics = pd.read_csv(rd / "metrics.csv")
    assert "val/mse" in metrics and "test/mse" in metrics, "test appends to the fit's metrics"
    assert metrics["val/mse"].notna().any()
    assert main(["predict", "--config", str(cfg), "--ckpt_path", str(rd / "checkpoints/best.ckpt")]) == 0
    predictions = torch.load(rd / "predictions.pt")["predictions"]
    n_test = 1200 - 840 - 120 + 48 - 48 - 12 + 1  # every test window, none dropped
    assert predictions.shape == (n_test, 12, 7)


@pytest.mark.slow
def test_backbone_override_by_registry_name_gets_its_own_run_folder(ett_csv, write_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(forecasting_config(ett_csv, backbone="transformer", limit_train_batches=2))
    assert main(["fit", "--config", str(cfg), "--model.backbone", "lstm"]) == 0
    rd = run_dir(tmp_path, backbone="lstm")
    assert (rd / "checkpoints/last.ckpt").exists()
    assert "seqzoo.backbones.rnn.LSTM" in (rd / "config.yaml").read_text()
    assert "d_model: 16" in (rd / "config.yaml").read_text(), "shared keywords are kept"
    assert not run_dir(tmp_path, backbone="transformer").exists()


def _errors(capsys) -> str:
    captured = capsys.readouterr()
    return captured.err + captured.out


def test_unknown_backbone_lists_the_registry(ett_csv, write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(forecasting_config(ett_csv))
    assert main(["fit", "--config", str(cfg), "--model.backbone", "mambo"]) == 2
    err = _errors(capsys)
    assert "unknown backbone 'mambo'" in err and "gru" in err and "transformer" in err
    assert not (tmp_path / "runs").exists()


def test_config_typo_and_wrong_type_are_rejected_with_the_key(ett_csv, write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = forecasting_config(ett_csv)
    config["data"]["init_args"]["lookbak"] = 10
    assert main(["fit", "--config", str(write_config(config))]) == 2
    err = _errors(capsys).strip().splitlines()
    assert err[0] == "seqzoo fit: error: data (ForecastingDataModule): Option 'lookbak' is not accepted", err
    assert len(err) == 2 and err[1].startswith("usage: seqzoo fit --config CONFIG") and "--help" in err[1]
    assert main(["fit", "--config", str(write_config(forecasting_config(ett_csv))), "--data.horizon", "abc"]) == 2
    err = _errors(capsys).strip().splitlines()
    assert len(err) == 2 and "horizon" in err[0] and "abc" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_missing_data_file_is_a_clear_error_and_leaves_no_run(write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(forecasting_config(tmp_path / "missing.csv"))
    assert main(["fit", "--config", str(cfg)]) == 2
    err = _errors(capsys)
    assert "forecasting CSV not found" in err and "missing.csv" in err
    assert not (tmp_path / "runs").exists()


def test_data_error_during_fit_removes_the_half_written_run(ett_csv, write_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = forecasting_config(ett_csv)
    config["data"]["init_args"]["borders"] = [5000, 6000, 7000]  # the file has 1,200 rows
    assert main(["fit", "--config", str(write_config(config))]) == 2
    assert "the configured borders need 7000" in _errors(capsys)
    assert not run_dir(tmp_path).exists()


def test_missing_config_file(capsys):
    assert main(["fit", "--config", "no/such/config.yaml"]) == 2
    assert "config file not found: no/such/config.yaml" in _errors(capsys)


def test_unknown_command(capsys):
    assert main(["fitt"]) == 2
    assert "unknown command 'fitt'" in _errors(capsys)

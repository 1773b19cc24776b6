"""`seqzoo fit|test` as a user runs them: run folders, resume, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from seqzoo.cli import main
from tests.conftest import forecasting_config

SEQZOO = [sys.executable, "-m", "seqzoo.cli"]


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


@pytest.mark.slow
def test_interrupted_fit_resumes_with_ckpt_path_last(ett_csv, write_config, tmp_path):
    cfg = write_config(forecasting_config(ett_csv, max_epochs=200, limit_train_batches=4, limit_val_batches=2))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([*SEQZOO, "fit", "--config", str(cfg)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.stderr.read().decode()[-2000:]
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.wait(timeout=60)
    status = json.loads((run_dir(tmp_path) / "status.json").read_text())
    assert status["status"] == "interrupted"
    interrupted = torch.load(last, weights_only=False)
    done_epoch = interrupted["epoch"]
    assert done_epoch < 199
    resume = subprocess.run([*SEQZOO, "fit", "--config", str(cfg), "--trainer.max_epochs", str(done_epoch + 3),
                             "--ckpt_path", "last"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resume.returncode == 0, resume.stderr[-2000:]
    assert "Restored all states from the checkpoint" in resume.stderr
    final = torch.load(last, weights_only=False)
    assert interrupted["global_step"] == (done_epoch + 1) * 4
    assert final["global_step"] == (done_epoch + 3) * 4, "resumed where it stopped, not from scratch"
    assert json.loads((run_dir(tmp_path) / "status.json").read_text())["status"] == "completed"
    epochs = pd.read_csv(run_dir(tmp_path) / "metrics.csv")["epoch"].dropna().unique()
    assert {0, done_epoch, done_epoch + 2} <= set(epochs), "metrics of both sessions are kept"


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
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(write_config(config))])
    assert info.value.code == 2
    assert "lookbak" in _errors(capsys)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(write_config(forecasting_config(ett_csv))), "--data.horizon", "abc"])
    err = _errors(capsys)
    assert "horizon" in err and "abc" in err
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

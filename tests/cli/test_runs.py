"""Runs that never lie: exact resume after SIGKILL, two DDP ranks on CPU, failed training reported
as failed, bad checkpoints refused in one line, dead runs shown as died."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from seqzoo.cli import main
from seqzoo.runs import run_status
from tests.conftest import forecasting_config

ROOT = Path(__file__).resolve().parents[2]
SEQZOO = [sys.executable, "-m", "seqzoo.cli"]


def seqzoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A real ``seqzoo`` process (as a user starts it), one BLAS thread, this checkout first."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([*SEQZOO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(ett_csv, write_config, tmp_path):
    # dropout on, so the resumed run must also continue the RNG streams, not only the data order
    config = forecasting_config(ett_csv, backbone="transformer", max_epochs=2, limit_train_batches=6,
                                limit_val_batches=2)
    config["model"]["init_args"]["backbone"]["init_args"]["dropout"] = 0.2
    cfg = str(write_config(config))
    every = ["--checkpointing.every_n_train_steps", "2"]
    full = seqzoo("fit", "--config", cfg, "--run_dir", "full", *every, cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    # SIGKILL at step 9 = epoch 1, batch 3: the last checkpoint is from step 8, mid-epoch
    killed = seqzoo("fit", "--config", cfg, "--run_dir", "resumed", *every,
                    "--trainer.callbacks+=tests.cli.kill.KillAtStep", "--trainer.callbacks.step", "9", cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr[-3000:]
    run = tmp_path / "resumed"
    assert json.loads((run / "status.json").read_text())["status"] == "running", "nobody recorded the death yet"
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 8
    status = run_status(run)  # what the next seqzoo call on the folder sees
    assert status["status"] == "died" and "ended without recording" in status["error"]
    assert status["last_checkpoint"]["global_step"] == 8 and status["host"] and status["pid"]

    resumed = seqzoo("fit", "--config", cfg, "--run_dir", "resumed", *every, "--ckpt_path", "last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "completed"

    a, b = _weights(tmp_path / "full/checkpoints/last.ckpt"), _weights(run / "checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume: max {(a[key] - b[key]).abs().max()}"
    m_full, m_resumed = pd.read_csv(tmp_path / "full/metrics.csv"), pd.read_csv(run / "metrics.csv")
    steps = m_resumed.dropna(subset=["train/loss_step"])["step"]
    assert not steps.duplicated().any(), "a redone step is listed twice"
    assert list(steps) == list(range(12)), "every step listed once, the one logged before the kill included"
    assert m_resumed["val/mse"].dropna().tolist() == m_full["val/mse"].dropna().tolist()
    assert m_resumed["train/loss_step"].dropna().tolist() == m_full["train/loss_step"].dropna().tolist()


@pytest.mark.slow
def test_two_cpu_ranks_train_like_one_and_evaluate_every_window_once(ett_csv, write_config, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = forecasting_config(ett_csv, max_epochs=1, limit_train_batches=6, limit_val_batches=2)
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    # the same global batch: 2 ranks x 8 windows against 1 rank x 16
    one = write_config(config, "one")
    config["data"]["init_args"]["batch_size"] = 8
    two = write_config(config, "two")
    fit2 = seqzoo("fit", "--config", str(two), "--run_dir", "two", *ddp, cwd=tmp_path)
    assert fit2.returncode == 0, fit2.stderr[-3000:]
    assert json.loads((tmp_path / "two/status.json").read_text())["world_size"] == 2
    assert main(["fit", "--config", str(one), "--run_dir", "one"]) == 0
    a, b = _weights(tmp_path / "one/checkpoints/last.ckpt"), _weights(tmp_path / "two/checkpoints/last.ckpt")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")

    ckpt = str(tmp_path / "two/checkpoints/last.ckpt")
    test2 = seqzoo("test", "--config", str(two), "--run_dir", "test2", "--ckpt_path", ckpt, *ddp, cwd=tmp_path)
    assert test2.returncode == 0, test2.stderr[-3000:]
    assert main(["test", "--config", str(two), "--run_dir", "test1", "--ckpt_path", ckpt]) == 0
    mse = {n: pd.read_csv(tmp_path / n / "metrics.csv")["test/mse"].dropna().item() for n in ("test1", "test2")}
    assert mse["test2"] == pytest.approx(mse["test1"], rel=1e-6), mse

    # the whole validation split (limit_val_batches counts batches per rank)
    whole = ["--trainer.limit_val_batches", "1.0"]
    val2 = seqzoo("validate", "--config", str(two), "--run_dir", "val2", "--ckpt_path", ckpt, *whole, *ddp,
                  cwd=tmp_path)
    assert val2.returncode == 0, val2.stderr[-3000:]
    assert main(["validate", "--config", str(two), "--run_dir", "val1", "--ckpt_path", ckpt, *whole]) == 0
    val = {n: pd.read_csv(tmp_path / n / "metrics.csv")["val/mse"].dropna().item() for n in ("val1", "val2")}
    assert val["val2"] == pytest.approx(val["val1"], rel=1e-6), val

    pred2 = seqzoo("predict", "--config", str(two), "--run_dir", "test2", "--ckpt_path", ckpt, *ddp, cwd=tmp_path)
    assert pred2.returncode == 0, pred2.stderr[-3000:]
    assert main(["predict", "--config", str(two), "--run_dir", "test1", "--ckpt_path", ckpt]) == 0
    p1, p2 = (torch.load(tmp_path / n / "predictions.pt")["predictions"] for n in ("test1", "test2"))
    n_test = 1200 - 840 - 120 + 48 - 48 - 12 + 1
    assert p1.shape == p2.shape == (n_test, 12, 7), "every test window once, in the data's order"
    torch.testing.assert_close(p2, p1, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def trained_gru(ett_csv, tmp_path_factory):
    """A two-batch gru run (config, run folder)."""
    import yaml

    root = tmp_path_factory.mktemp("trained")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(forecasting_config(ett_csv, limit_train_batches=2, limit_val_batches=2)))
    assert main(["fit", "--config", str(cfg), "--run_dir", str(root / "run")]) == 0
    return cfg, root / "run"


def _one_line_error(capsys) -> str:
    """The error, one line, besides fit's own lines on where the run went and how it ended.
    ``capsys``: the fixture, or a function returning what it captured."""
    progress = ("seqzoo: run folder ", "seqzoo: fit failed; run folder ", "seqzoo: fit interrupted; run folder ",
                "seqzoo: note: ")
    captured = capsys() if callable(capsys) else capsys.readouterr()
    err = [line for line in captured.err.strip().splitlines() if not line.startswith(progress)]
    assert len(err) == 1, err
    return err[0]


def test_bad_ckpt_paths_are_one_line_errors_naming_the_file(trained_gru, tmp_path, capsys):
    cfg, run = trained_gru
    last = run / "checkpoints" / "last.ckpt"
    base = ["--config", str(cfg), "--run_dir", str(run)]

    assert main(["fit", *base, "--ckpt_path", str(tmp_path / "nope.ckpt")]) == 2
    assert "checkpoint not found" in _one_line_error(capsys)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert main(["test", *base, "--ckpt_path", str(truncated)]) == 2
    line = _one_line_error(capsys)
    assert str(truncated) in line and "cannot be read as a checkpoint" in line

    assert main(["fit", "--config", str(cfg), "--run_dir", str(tmp_path / "empty"), "--ckpt_path", "last"]) == 2
    line = _one_line_error(capsys)
    assert "--ckpt_path last" in line and str(tmp_path / "empty" / "checkpoints" / "last.ckpt") in line
    assert not (tmp_path / "empty").exists(), "nothing is created for a refused run"

    assert main(["fit", *base, "--model.backbone", "lstm", "--ckpt_path", str(last)]) == 2
    line = _one_line_error(capsys)
    assert str(last) in line and "does not fit this model" in line and "trained with backbone gru" in line

    foreign = torch.load(last, weights_only=False)
    foreign["seqzoo"]["config"] = foreign["seqzoo"]["config"].replace(
        "seqzoo.domains.forecasting.ForecastingTask", "seqzoo.domains.vision.VisionTask")
    torch.save(foreign, tmp_path / "foreign.ckpt")
    assert main(["test", *base, "--ckpt_path", str(tmp_path / "foreign.ckpt")]) == 2
    assert "holds a VisionTask, this run trains a ForecastingTask" in _one_line_error(capsys)


def test_last_ckpt_is_the_final_state_and_status_names_best_and_last(trained_gru, capsys):
    _, run = trained_gru
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["pid"] and status["host"] and status["started"]
    assert Path(status["last_checkpoint"]["path"]) == (run / "checkpoints" / "last.ckpt").resolve()
    assert status["best"]["metric"] == "val/loss" or status["best"]["metric"].startswith("val/")
    assert Path(status["best"]["path"]).is_file() and status["best"]["value"] > 0
    main(["status", str(run)])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{run}: completed (fit, pid ") and "last " in line and "best val/" in line
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # loadable weights-only
    assert last["global_step"] == status["global_step"] == 2, "last.ckpt holds the model after the last step"


def test_non_finite_training_stops_naming_the_step_and_fails_the_run(ett_csv, write_config, tmp_path, capsys):
    config = forecasting_config(ett_csv, max_epochs=3, limit_train_batches=4)
    config["model"]["init_args"]["optimizer"]["init_args"]["lr"] = 1e30  # weights explode on the first step
    run = tmp_path / "run"
    assert main(["fit", "--config", str(write_config(config)), "--run_dir", str(run)]) == 1
    captured = capsys.readouterr()
    assert f"seqzoo: fit failed; run folder {run}" in captured.err, "where the failed run went"
    line = _one_line_error(lambda: captured)
    assert "training loss became" in line and "at step" in line and "learning rate" in line
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "TrainingError" in status["error"]
    assert not (run / "checkpoints" / "best.ckpt").exists(), "no best checkpoint from a diverged run"
    if (run / "checkpoints" / "last.ckpt").exists():
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values()), "last.ckpt holds the last finite state"


def test_readers_reject_values_that_would_overflow_and_repeated_column_names(ett_csv, tmp_path):
    from seqzoo.datasets.forecasting import load_forecasting_csv
    from seqzoo.errors import DataError

    lines = ett_csv.read_text().splitlines()
    header = lines[0].split(",")
    huge = tmp_path / "huge.csv"
    row = lines[5].split(",")
    row[2] = "1e308"  # finite in float64, inf in float32 and in the scaler's variance
    huge.write_text("\n".join([lines[0], *lines[1:5], ",".join(row), *lines[6:]]) + "\n")
    with pytest.raises(DataError, match=rf"huge.csv, line 6, column '{header[2]}': value 1e\+308 is beyond the float32"):
        load_forecasting_csv(huge)
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("\n".join([",".join([*header[:2], header[1], *header[3:]]), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=rf"repeated.csv, line 1: column name\(s\) '{header[1]}' appear more than once"):
        load_forecasting_csv(repeated)

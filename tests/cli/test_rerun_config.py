"""Re-running a trained run's saved config.yaml (or the same command) never overwrites it."""

from __future__ import annotations

import hashlib

from seqzoo.cli import main
from tests.conftest import forecasting_config


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fit_with_a_runs_saved_config_starts_a_new_folder(ett_csv, write_config, tmp_path, capsys):
    cfg = write_config(forecasting_config(ett_csv, max_epochs=1, limit_train_batches=2, limit_val_batches=1))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--run_dir", str(run)]) == 0
    saved = run / "config.yaml"
    before = {p.name: digest(p) for p in [saved, run / "metrics.csv", *(run / "checkpoints").glob("*.ckpt")]}
    capsys.readouterr()

    assert main(["fit", "--config", str(saved)]) == 0  # its run_dir is frozen in it
    err = capsys.readouterr().err
    assert f"{run} already holds a trained run; this fit goes to {tmp_path / 'run-2'}" in err
    assert (tmp_path / "run-2" / "checkpoints" / "best.ckpt").exists()
    after = {p.name: digest(p) for p in [saved, run / "metrics.csv", *(run / "checkpoints").glob("*.ckpt")]}
    assert after == before, "the trained run's files are untouched"

    assert main(["fit", "--config", str(saved), "--run_dir", str(tmp_path / "other")]) == 0  # frozen paths move too
    assert (tmp_path / "other" / "checkpoints" / "best.ckpt").exists() and (tmp_path / "other" / "metrics.csv").exists()
    assert {p.name: digest(p) for p in [saved, run / "metrics.csv", *(run / "checkpoints").glob("*.ckpt")]} == before

    assert main(["fit", "--config", str(cfg), "--run_dir", str(run)]) == 0  # the same command again
    assert (tmp_path / "run-3" / "status.json").exists()

    # continuing the old run stays in its folder
    assert main(["fit", "--config", str(saved), "--ckpt_path", "last", "--trainer.max_epochs", "2"]) == 0
    assert not (tmp_path / "run-4").exists()
    assert '"epochs": 2' in (run / "status.json").read_text()

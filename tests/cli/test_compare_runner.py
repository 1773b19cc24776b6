"""compare's runs forked from one server (seqzoo.compare_worker.Runner): a failed run is reported
as failed and the server carries on, a server that is gone leaves fresh processes (the log says
why), and a DDP run's other rank is started as for a fresh run, rank 0 alone reporting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from seqzoo.compare import compare
from seqzoo.compare_worker import Runner
from seqzoo.results import read_results_csv
from tests.conftest import forecasting_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="runs are forked on Linux only")


def _spec(tmp_path, name: str, config: str) -> dict:
    return {"config": config, "seed": 0, "max_epochs": None, "max_steps": None, "extra": [],
            "run_dir": str(tmp_path / name), "result": str(tmp_path / f"{name}.json")}


def test_failed_runs_are_reported_and_a_lost_server_leaves_fresh_processes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "missing.yaml")
    with Runner() as runner:
        for k in range(2):  # a run that fails leaves the server serving the next
            log = tmp_path / f"bad{k}.log"
            assert runner.run(_spec(tmp_path, f"bad{k}", missing), log) == 1
            assert "Traceback" in log.read_text() and "missing.yaml" in log.read_text()
            assert runner.server is not None and runner.server.poll() is None
            assert not (tmp_path / f"bad{k}.json").exists()
        runner.server.kill()
        runner.server.wait()
        log = tmp_path / "fresh.log"
        assert runner.run(_spec(tmp_path, "fresh", missing), log) == 1
        text = log.read_text()
        assert runner.server is None and "runs start as fresh processes" in text.splitlines()[0]
        assert "missing.yaml" in text


@pytest.mark.slow
def test_a_ddp_run_forked_from_the_server_trains_on_two_ranks(ett_csv, write_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    forked = []
    real = Runner._forked
    monkeypatch.setattr(Runner, "_forked", lambda self, *a: forked.append(real(self, *a)) or forked[-1])
    cfg = write_config(forecasting_config(ett_csv, limit_train_batches=4, limit_val_batches=2))
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.limit_test_batches", "2"]
    compare(str(cfg), ["gru"], [0], tmp_path / "cmp", passthrough=ddp)
    rows = read_results_csv(tmp_path / "cmp" / "results.csv")
    assert forked == [0], "the run was forked by the server"
    assert [(r["backbone"], r["status"]) for r in rows] == [("gru", "ok")], rows
    run = tmp_path / "cmp" / "runs" / "gru" / "seed0"
    assert json.loads((run / "status.json").read_text())["world_size"] == 2
    log = (tmp_path / "cmp" / "logs" / "gru-seed0.log").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log  # rank 1: `python -m seqzoo.compare_worker <spec>`
    result = json.loads((tmp_path / "cmp" / "logs" / "gru-seed0.json").read_text())
    assert result["metrics"]["test/mse"] > 0 and result["steps"] == 4


def test_a_server_that_touched_cuda_is_not_forked():
    # torch.cuda.is_available() without NVML initialises CUDA: a forked child could not use it
    probe = ("import torch; from seqzoo.compare_worker import cuda_poisons_fork as p; a = p(); "
             "torch.cuda.is_available(); print(a, p())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=dict(os.environ, PYTORCH_NVML_BASED_CUDA_CHECK="0"))
    assert done.returncode == 0, done.stderr[-2000:]
    if not torch.cuda._is_compiled():
        assert done.stdout.split() == ["False", "False"]
    else:
        assert done.stdout.split() == ["False", "True"]

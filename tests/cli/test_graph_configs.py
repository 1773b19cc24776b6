"""Every graph config trains as shipped (its data written on first use, kept small here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqzoo.cli import main

pytest.importorskip("torch_geometric")

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "graph"
SMALL = {"cycle": 20, "connectivity": 20, "sp_parity": 20, "pattern": 20}


@pytest.mark.parametrize("config", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_graph_config_fits_a_step(config, tmp_path):
    if config == "freesolv":
        pytest.importorskip("rdkit")
    args = ["fit", "--config", str(CONFIGS / f"{config}.yaml"), "--trainer.fast_dev_run", "1",
            "--data.init_args.path", str(tmp_path / "data"), "--run_dir", str(tmp_path / "run"),
            "--trainer.enable_progress_bar", "false"]
    if config in SMALL:
        args += ["--data.init_args.prepare_args", f"{{task: {config}, n_graphs: {SMALL[config]}}}"]
    assert main(args) == 0
    assert (tmp_path / "data" / "graphs.pt").exists()

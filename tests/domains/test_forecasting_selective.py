"""Mamba and MambaMixer as time-token backbones of the forecasting task: they learn."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from seqzoo import build_backbone
from seqzoo.datasets.forecasting import ForecastingDataModule
from seqzoo.domains.forecasting import ForecastingTask
from tests.learning import assert_learns, fit_and_score, forecast_constant_baselines


@pytest.mark.parametrize("name", ["mamba", "mambamixer"])
def test_learns_beyond_repeat_last_value_and_every_constant(ett_csv, name, tiny_trainer):
    L.seed_everything(0)
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12, batch_size=32)
    fixed = {"n_tokens": 48} if name == "mambamixer" else {}  # its channel mixer's features are the 48 steps
    backbone = build_backbone(name, d_model=16, n_layers=1, d_state=8, **fixed)
    task = ForecastingTask(backbone, **dm.dims, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    before, after = fit_and_score(lambda: tiny_trainer(max_epochs=2, limit_train_batches=12), task, dm, "test/mse")
    label, baseline = task.baseline(dm)[0]  # repeat last value
    assert_learns(after, untrained=before, baselines={label: baseline["test/mse"],
                                                      **forecast_constant_baselines(dm, dm.dims["n_targets"])})


@pytest.mark.slow
def test_bidirectional_mamba_forecaster_exports(ett_csv, tmp_path):
    """The bidirectional (Vim) variant, asked for by name, exports with parity."""
    from seqzoo.export import export_onnx

    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    task = ForecastingTask(build_backbone("mamba", d_model=16, n_layers=1, bidirectional=True), **dm.dims).eval()
    assert task.backbone.bidirectional
    assert export_onnx(task.export_spec(), tmp_path / "mamba.onnx").max_abs_diff <= 1e-4

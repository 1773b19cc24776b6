"""TSM2: the MambaMixer grid model for forecasting learns and refuses what it cannot do. Its
export (shipped size, and from a checkpoint of the shipped config trained through ``seqzoo fit``)
is in tests/domains/test_export_every_config.py."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from seqzoo import ConfigError, build_backbone, get_backbone_class
from seqzoo.datasets.forecasting import ForecastingDataModule
from seqzoo.domains.tsm2 import TSM2Net, TSM2Task
from tests.learning import assert_learns, fit_and_score, forecast_constant_baselines


def tiny_task(dm, **kw):
    backbone = build_backbone("tsm2", d_model=16, n_layers=1, d_state=4)
    opt = lambda params: torch.optim.AdamW(params, lr=3e-3)  # noqa: E731
    return TSM2Task(backbone, **dm.dims, patch_len=8, stride=4, optimizer=opt, **kw)


def test_learns_beyond_repeat_last_value_and_every_constant(ett_csv, tiny_trainer):
    L.seed_everything(0)
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12, batch_size=32)
    task = tiny_task(dm)
    before, after = fit_and_score(lambda: tiny_trainer(max_epochs=2, limit_train_batches=15), task, dm, "test/mse")
    name, baseline = task.baseline(dm)[0]  # repeat last value
    assert_learns(after, untrained=before, baselines={name: baseline["test/mse"],
                                                      **forecast_constant_baselines(dm, dm.dims["n_targets"])})


def test_grid_shapes_targets_and_revin():
    torch.manual_seed(0)
    net = TSM2Net(build_backbone("tsm2", d_model=8, n_layers=1, d_state=4), n_channels=4, n_targets=1,
                  lookback=20, horizon=5, patch_len=6, stride=3)
    seen = {}
    net.backbone.register_forward_hook(lambda m, args, out: seen.update(grid=args[0].shape))
    x = torch.randn(2, 20, 4)
    y = net(x)
    assert y.shape == (2, 5, 1)
    assert seen["grid"] == (2, 4, (20 - 6) // 3 + 2, 8), "(B, variates, patches, D), one patch more from the end pad"
    torch.testing.assert_close(net(x * 10 + 100), y * 10 + 100, rtol=1e-3, atol=1e-2)  # RevIN: scale-equivariant


def test_only_grid_backbones_and_valid_patches():
    dm_dims = dict(n_channels=3, n_targets=3, lookback=16, horizon=4)
    assert TSM2Task.incompatibility(get_backbone_class("tsm2")) is None
    assert "grid tokens" in TSM2Task.incompatibility(get_backbone_class("transformer"))
    assert "grid tokens" in TSM2Task.incompatibility(get_backbone_class("mambamixer"))
    with pytest.raises(ConfigError, match="needs grid tokens"):
        TSM2Task(build_backbone("gru", d_model=8, n_layers=1), **dm_dims)
    with pytest.raises(ConfigError, match="patch_len"):
        TSM2Task(build_backbone("tsm2", d_model=8, n_layers=1), **dm_dims, patch_len=32)


def test_no_streaming_export(ett_csv):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    with pytest.raises(ConfigError, match="no one-step"):
        tiny_task(dm).export_step_spec()

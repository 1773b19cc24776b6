"""ForecastingTask: it learns, it handles both token kinds, it exports."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from seqzoo import Backbone, ConfigError, build_backbone
from seqzoo.datasets.forecasting import ForecastingDataModule
from seqzoo.domains.forecasting import ForecastingNet, ForecastingTask
from seqzoo.export import export_onnx
from tests.learning import assert_learns, fit_and_score, forecast_constant_baselines


def _task(dm, name="gru", **kw):
    backbone = build_backbone(name, d_model=16, n_layers=1, causal=kw.pop("causal", False))
    opt = lambda params: torch.optim.AdamW(params, lr=3e-3)  # noqa: E731
    return ForecastingTask(backbone, **dm.dims, optimizer=opt, **kw)


@pytest.mark.slow
def test_learns_beyond_repeat_last_value_and_every_constant(ett_csv, tiny_trainer):
    L.seed_everything(0)
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12, batch_size=32)
    task = _task(dm)
    before, after = fit_and_score(lambda: tiny_trainer(max_epochs=3), task, dm, "test/mse")
    name, baseline = task.baseline(dm)
    assert_learns(after, untrained=before, baselines={name: baseline["test/mse"],
                                                      **forecast_constant_baselines(dm, dm.dims["n_targets"])})


class TinyVariateMixer(Backbone):
    """A test-only variate-token backbone: attention across variate tokens."""

    tokens = "variate"

    def __init__(self, d_model: int, n_layers: int, *, causal: bool = False, dropout: float = 0.0, impl: str = "auto"):
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.attn = nn.MultiheadAttention(d_model, 2, batch_first=True)

    def forward(self, x, mask=None):
        return x + self.attn(x, x, x)[0]


@pytest.mark.parametrize("use_marks", [False, True])
def test_variate_tokens_embed_whole_window_and_drop_time_tokens(use_marks):
    net = ForecastingNet(TinyVariateMixer(8, 1), n_channels=5, n_targets=5, lookback=24, horizon=6,
                         n_time_features=4 if use_marks else 0)
    seen = {}
    net.backbone.register_forward_hook(lambda m, args, out: seen.update(tokens=args[0].shape))
    y = net(torch.randn(3, 24, 5), torch.rand(3, 24, 4) if use_marks else None)
    assert y.shape == (3, 6, 5)
    assert seen["tokens"] == (3, 5 + (4 if use_marks else 0), 8), "one token per variate (+ time features)"


def test_ms_predicts_target_only_and_revin_restores_scale():
    torch.manual_seed(0)
    net = ForecastingNet(build_backbone("gru", d_model=8, n_layers=1), n_channels=4, n_targets=1,
                         lookback=16, horizon=4)
    x = torch.randn(2, 16, 4)
    y1, y2 = net(x), net(x * 10 + 100)
    assert y1.shape == (2, 4, 1)
    torch.testing.assert_close(y2, y1 * 10 + 100, rtol=1e-3, atol=1e-2)  # RevIN: scale-equivariant


def test_wrong_input_shape_is_a_clear_error():
    net = ForecastingNet(build_backbone("gru", d_model=8, n_layers=1), n_channels=4, n_targets=4,
                         lookback=16, horizon=4)
    with pytest.raises(ValueError, match=r"expected input \(B, 16, 4\), got \(2, 15, 4\)"):
        net(torch.randn(2, 15, 4))


@pytest.mark.slow
def test_export_parity(ett_csv, tmp_path):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    task = _task(dm, "transformer", use_time_features=True).eval()
    report = export_onnx(task.export_spec(), tmp_path / "f.onnx")
    assert report.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_streaming_export_of_a_streaming_forecaster(ett_csv, tmp_path):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    task = _task(dm, "gru", causal=True, head="last", revin=False).eval()
    report = export_onnx(task.export_step_spec(), tmp_path / "s.onnx")
    assert report.max_abs_diff <= 1e-4
    # stepping through the window gives the same forecast as the full forward
    from seqzoo.domains.forecasting import ForecastStepper

    stepper, x = ForecastStepper(task.net), torch.randn(2, 48, dm.dims["n_channels"])
    state = stepper.init_state(2)
    for t in range(48):
        y, state = stepper.step(x[:, t], state)
    torch.testing.assert_close(y, task.net(x), atol=1e-5, rtol=1e-5)


def test_streaming_export_refused_with_reasons(ett_csv):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    with pytest.raises(ConfigError, match="does not stream"):
        _task(dm, "transformer").export_step_spec()
    with pytest.raises(ConfigError, match="head must be 'last'.*revin must be false"):
        _task(dm, "gru", causal=True).export_step_spec()


def test_param_groups_cover_every_parameter_once(ett_csv):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    task = _task(dm, "transformer")
    groups = task.param_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(task.parameters()))
    assert any(g.get("weight_decay") == 0.0 for g in groups), "norms and biases get no weight decay"

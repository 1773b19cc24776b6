"""ForecastingTask: it learns, it handles both token kinds, it exports."""

from __future__ import annotations

import lightning as L
import pandas as pd
import pytest
import torch
from torch import nn

from seqzoo import Backbone, ConfigError, build_backbone
from seqzoo.datasets.forecasting import ForecastingDataModule
from seqzoo.domains.forecasting import ForecastingNet, ForecastingNetConfig, ForecastingTask
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
    name, baseline = task.baseline(dm)[0]  # repeat last value
    assert_learns(after, untrained=before, baselines={name: baseline["test/mse"],
                                                      **forecast_constant_baselines(dm, dm.dims["n_targets"])})


def test_baselines_users_know_seasonal_naive_and_dlinear_beat_repeat_last(ett_csv):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    rows = dict(_task(dm).baseline(dm))
    assert list(rows) == ["repeat last value", "seasonal naive (period 24)", "DLinear (least squares)"]
    assert all(set(m) == {"test/mse", "test/mae"} for m in rows.values())
    mse = {name: m["test/mse"] for name, m in rows.items()}
    assert mse["seasonal naive (period 24)"] < 0.5 * mse["repeat last value"], mse
    assert mse["DLinear (least squares)"] < 0.5 * mse["repeat last value"], mse
    assert mse["DLinear (least squares)"] < 0.5 * forecast_constant_baselines(dm, 7)["best constant"], mse
    assert rows == dict(_task(dm).baseline(dm)), "deterministic"


def test_seasonal_naive_repeats_the_last_period_and_falls_back_when_the_lookback_is_shorter(ett_csv, caplog):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=30, season_length=5, features="S")
    task = _task(dm)
    name, scores = task.seasonal_naive_scores(dm, task.test_metrics.clone())
    assert name == "seasonal naive (period 5)"
    dm.setup()
    x, y = dm.datasets["test"].inputs[:, 0].double(), dm.datasets["test"].targets[:, 0].double()
    errors = []  # by hand: horizon step t repeats window step L - 5 + t mod 5
    for i in range(len(dm.datasets["test"])):
        pred = torch.stack([x[i + 48 - 5 + t % 5] for t in range(30)])
        errors.append((pred - y[i + 48 : i + 78]) ** 2)
    assert scores["test/mse"] == pytest.approx(float(torch.cat(errors).mean()), rel=1e-5)
    short = ForecastingDataModule(str(ett_csv), lookback=12, horizon=12)
    with caplog.at_level("WARNING"):
        rows = dict(_task(short).baseline(short))
    assert rows["seasonal naive (period 24 > lookback 12: repeat last value)"] == rows["repeat last value"]
    assert "lookback of at least one period (24 steps), the lookback is 12" in caplog.text


def test_dlinear_decomposes_by_moving_average_and_fits_a_linear_series_exactly(tmp_path):
    from seqzoo.domains.forecasting import _dlinear_rows

    x = torch.randn(3, 40, 2)
    rows = _dlinear_rows(x, 25)
    series = x.double().transpose(1, 2).reshape(6, 40)
    padded = torch.cat([series[:, :1].repeat(1, 12), series, series[:, -1:].repeat(1, 12)], dim=1)
    trend = nn.AvgPool1d(25, stride=1)(padded[:, None])[:, 0]  # DLinear's moving_avg
    torch.testing.assert_close(rows[:, 40:80], trend)
    torch.testing.assert_close(rows[:, :40] + rows[:, 40:80], series)
    # two sinusoids and a level: exactly linear in the last few values -> DLinear is exact
    t = torch.arange(900, dtype=torch.float64)
    csv = tmp_path / "sines.csv"
    pd.DataFrame({"date": pd.date_range("2020", periods=900, freq="h").strftime("%Y-%m-%d %H:%M"),
                  "OT": (3 + torch.sin(t / 5) + 0.5 * torch.cos(t / 17)).numpy()}).to_csv(csv, index=False)
    dm = ForecastingDataModule(str(csv), n_variates=1, lookback=36, horizon=12)
    task = _task(dm)
    scores = task.dlinear_scores(dm, task.test_metrics.clone())
    assert scores["test/mse"] < 1e-6 < task.repeat_last_scores(dm, task.test_metrics.clone())["test/mse"]


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
    task = _task(dm, "gru", causal=True, net=ForecastingNetConfig(head="last", revin=False)).eval()
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

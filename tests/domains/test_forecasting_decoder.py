"""Forecasting with Informer's pieces: the generative decoder head (with any time-token
backbone as the encoder) and the Conv1d token embedding."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from seqzoo import ConfigError, build_backbone
from seqzoo.datasets.forecasting import ForecastingDataModule
from seqzoo.domains.forecasting import ForecastingNet, ForecastingNetConfig, ForecastingTask
from seqzoo.layers import TimeEmbedding, sinusoidal_positions
from seqzoo.export import export_onnx
from tests.learning import assert_learns, fit_and_score, forecast_constant_baselines


def decoder_net(backbone="transformer", n_targets=5, label_len=8, **kw) -> ForecastingNet:
    torch.manual_seed(0)
    return ForecastingNet(build_backbone(backbone, d_model=16, n_layers=2), n_channels=5, n_targets=n_targets,
                          lookback=24, horizon=6, n_time_features=4, head="decoder", label_len=label_len,
                          decoder_heads=4, **kw).eval()


def inputs(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 24, 5, generator=g) * 3 + 1
    return x, torch.rand(b, 24, 4, generator=g), torch.rand(b, 6, 4, generator=g)


def test_decoder_reads_start_tokens_then_zeros_with_their_time_features():
    net = decoder_net(n_targets=1)
    seen = {}
    net.head.embedding.register_forward_hook(lambda m, args, out: seen.update(tokens=args[0], marks=args[1]))
    x, x_mark, y_mark = inputs()
    y = net(x, x_mark, y_mark)
    assert y.shape == (3, 6, 1), "MS: the horizon of the target only"
    normalised = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
    torch.testing.assert_close(seen["tokens"][:, :8], normalised[:, -8:])
    assert (seen["tokens"][:, 8:] == 0).all() and seen["tokens"].shape == (3, 14, 5)
    torch.testing.assert_close(seen["marks"], torch.cat([x_mark[:, -8:], y_mark], 1))
    assert not torch.allclose(net(x, x_mark, y_mark.flip(1)), y), "the horizon's time features matter"


@pytest.mark.parametrize("backbone, memory_length", [("transformer", 24), ("gru", 24), ("informer", 12)])
def test_decoder_cross_attends_to_the_encoder_output(backbone, memory_length):
    """Any time-token backbone encodes; Informer's distilled (shrunk) encoding is used as is."""
    net = decoder_net(backbone)
    seen = []
    for layer in net.head.layers:
        layer.cross_attention.register_forward_hook(lambda m, args, out: seen.append(args[1].shape))
    net(*inputs())
    assert seen == [(3, memory_length, 16)]


def test_decoder_options_are_checked():
    with pytest.raises(ConfigError, match=r"label_len .* must be in \[0, lookback=24\]"):
        decoder_net(label_len=30)
    with pytest.raises(ConfigError, match="set head: linear"):
        ForecastingNet(build_backbone("itransformer", d_model=16, n_layers=1), n_channels=5, n_targets=5,
                       lookback=24, horizon=6, head="decoder")
    x, x_mark, _ = inputs()
    with pytest.raises(ValueError, match="pass y_mark"):
        decoder_net()(x, x_mark)
    net = ForecastingNet(build_backbone("transformer", d_model=16, n_layers=1), n_channels=5, n_targets=5,
                         lookback=24, horizon=6, head="decoder", label_len=0, decoder_heads=4)
    assert net(x).shape == (3, 6, 5), "no start tokens and no time features: zeros plus positions"


def test_conv_embedding_is_a_circular_conv_plus_time_features_and_positions():
    torch.manual_seed(0)
    embed = TimeEmbedding(5, 4, 16, 24, kind="conv").double()
    x, marks = torch.randn(2, 24, 5, dtype=torch.float64), torch.rand(2, 24, 4, dtype=torch.float64)
    conv = embed.values
    expected = F.conv1d(F.pad(x.transpose(1, 2), (1, 1), mode="circular"), conv.weight, conv.bias).transpose(1, 2)
    expected = expected + embed.marks(marks) + sinusoidal_positions(24, 16).double()
    torch.testing.assert_close(embed(x, marks), expected)


def test_streaming_export_refuses_the_decoder_and_conv_embedding(ett_csv):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    task = ForecastingTask(build_backbone("gru", d_model=16, n_layers=1, causal=True), **dm.dims,
                           net=ForecastingNetConfig(revin=False, head="decoder", embedding="conv", decoder_heads=4))
    with pytest.raises(ConfigError, match="head must be 'last' \\(the 'decoder' head.*embedding must be 'linear'"):
        task.export_step_spec()


@pytest.mark.slow
def test_decoder_head_learns_beyond_repeating_the_last_value(ett_csv, tiny_trainer):
    L.seed_everything(0)
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12, batch_size=32)
    task = ForecastingTask(build_backbone("transformer", d_model=16, n_layers=1), **dm.dims, use_time_features=True,
                           net=ForecastingNetConfig(head="decoder", label_len=24, decoder_heads=4),
                           optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    before, after = fit_and_score(lambda: tiny_trainer(max_epochs=1), task, dm, "test/mse")
    name, baseline = task.baseline(dm)[0]  # repeat last value
    assert_learns(after, untrained=before, baselines={name: baseline["test/mse"],
                                                      **forecast_constant_baselines(dm, dm.dims["n_targets"])})


@pytest.mark.slow
def test_informer_with_decoder_head_exports_with_time_features(ett_csv, tmp_path):
    dm = ForecastingDataModule(str(ett_csv), lookback=48, horizon=12)
    torch.manual_seed(0)
    task = ForecastingTask(build_backbone("informer", d_model=16, n_layers=2), **dm.dims, use_time_features=True,
                           net=ForecastingNetConfig(head="decoder", embedding="conv", revin=False, label_len=24,
                                                    decoder_heads=4))
    spec = task.export_spec()
    assert spec.input_names == ["x", "x_mark", "y_mark"]
    report = export_onnx(spec, tmp_path / "informer.onnx")
    assert report.max_abs_diff <= 1e-4

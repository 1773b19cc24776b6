"""MambaMixer specifics: weighted averaging starts as the plain residual chain and learns,
the channel mixer mixes channels within a token, the grid mixes along the right axes."""

from __future__ import annotations

import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.backbones.mambamixer import MambaMixerGrid, PlaneNorm, WeightedAverage


def double_model(**kw):
    torch.manual_seed(0)
    return build_backbone("mambamixer", d_model=16, n_layers=3, **kw).double().eval()


def test_weighted_averaging_starts_as_the_plain_residual_chain():
    model = double_model()
    layers = model.layers
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    h = x
    for token, channel in zip(layers.token, layers.channel):
        h = channel(token(h))
    torch.testing.assert_close(layers(x), h)
    sizes = [(w.weight.numel(), v.weight.numel()) for w, v in zip(layers.token_inputs, layers.channel_inputs)]
    assert sizes == [(1, 2), (3, 4), (5, 6)], "layer ℓ sees x and the 2ℓ earlier outputs (+ its token output)"


def test_weighted_averaging_weights_change_the_output_and_learn():
    model = double_model().train()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    before = model(x)
    with torch.no_grad():
        model.layers.channel_inputs[2].weight[0] += 0.5  # layer 3's channel mixer also reads x directly
    assert not torch.allclose(model(x), before)
    model(x).square().sum().backward()
    for avg in model.layers.token_inputs[1:]:
        assert avg.weight.grad.abs().min() > 0, "every earlier output gets a gradient"


def test_weighted_average_checks_its_inputs():
    with pytest.raises(ValueError, match="over 3 inputs got 2"):
        WeightedAverage(3)([torch.zeros(1), torch.zeros(1)])


def test_channel_mixer_mixes_channels_within_a_token_only():
    model = double_model(causal=True)
    channel = model.layers.channel[0]
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 3, 5] += 1.0
    diff = (channel(x2) - channel(x)).abs()
    assert diff[:, 3].sum(-1).min() > 0 and (diff[:, 3] > 0).sum() > 8, "one channel moves many (both directions)"
    assert diff[:, 3, :5].sum() > 0 and diff[:, 3, 6:].sum() > 0
    torch.testing.assert_close(diff[:, [0, 1, 2, 4, 5, 6]].sum(), torch.tensor(0.0, dtype=torch.float64))


def test_no_weight_depends_on_length_or_width_of_the_channel_mixer():
    a = build_backbone("mambamixer", d_model=16, n_layers=1)
    b = build_backbone("mambamixer", d_model=32, n_layers=1)
    shapes = lambda m: {k: v.shape for k, v in m.layers.channel.named_parameters() if "norm" not in k}  # noqa: E731
    assert shapes(a) == shapes(b), "the channel mixer scans D positions of scalars: nothing is sized by D or L"


def test_grid_token_mixer_is_causal_and_channel_mixer_spans_variates():
    torch.manual_seed(0)
    grid = MambaMixerGrid(8, 2, norm="rms").double().eval()
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64)  # 5 variates x 6 patches
    x2 = x.clone()
    x2[:, 1, 3] += 1.0  # variate 1, patch 3
    diff = (grid(x2) - grid(x)).abs().sum(-1)  # (B, C, P)
    torch.testing.assert_close(diff[:, :, :3].sum(), torch.tensor(0.0, dtype=torch.float64)), "earlier patches"
    assert (diff[:, :, 3] > 0).all(), "every variate sees the change at that patch (bidirectional channel mixer)"
    assert (diff[:, 1, 4:] > 0).all(), "later patches of the variate see it"


def test_grid_from_a_registered_backbone():
    backbone = build_backbone("mambamixer", d_model=8, n_layers=2, d_state=4, dropout=0.1)
    grid = MambaMixerGrid.like(backbone)
    assert grid.d_model == 8 and len(grid.layers.token) == 2
    assert grid.layers.token[0].mixer.layer.directions[0].A_log.shape == (16, 4)
    assert isinstance(grid.layers.token[0].norm1, PlaneNorm)
    with pytest.raises(ConfigError, match="mambamixer"):
        MambaMixerGrid.like(build_backbone("gru", d_model=8, n_layers=1))
    with pytest.raises(ValueError, match=r"expects \(B, C, L, 8\)"):
        grid(torch.randn(2, 6, 8))


def test_plane_norm_normalises_each_channel_over_time_and_features():
    norm = PlaneNorm(4)
    y = norm(torch.randn(3, 5, 7, 4) * 10 + 3)
    torch.testing.assert_close(y.mean(dim=(-2, -1)), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(-2, -1), unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)

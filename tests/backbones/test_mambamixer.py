"""MambaMixer specifics: weighted averaging starts as the plain residual chain and learns,
the channel mixer scans the channels with the tokens as features (so it moves information
across tokens), the token count is fixed, the grid (TSM2) mixes along the right axes."""

from __future__ import annotations

import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.backbones.mambamixer import MambaMixerGrid, WeightedAverage
from seqzoo.layers import PlaneNorm


def double_model(n_tokens=9, **kw):
    torch.manual_seed(0)
    return build_backbone("mambamixer", d_model=16, n_layers=3, n_tokens=n_tokens, **kw).double().eval()


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


def test_channel_mixer_moves_information_across_tokens_and_channels():
    """The paper's selective channel mixer: a bidirectional scan over the D channels whose
    features are the L tokens, so token t's output depends on every other token."""
    model = double_model(n_tokens=7)
    channel = model.layers.channel[0]
    layer = channel.mixer.layer
    assert layer.in_proj.in_features == 7 and len(layer.directions) == 2, "features = tokens, forward + flipped"
    x = torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    y = channel(x)
    (grad,) = torch.autograd.grad(y[:, 3].sum(), x)
    assert grad[:, [0, 1, 2, 4, 5, 6]].abs().sum(-1).min() > 0, "token 3's output has a gradient from every token"
    assert grad[:, :, :5].abs().sum() > 0 and grad[:, :, 6:].abs().sum() > 0, "and from channels on both sides"


def test_token_count_is_fixed_and_sizes_the_channel_mixer():
    a, b = double_model(n_tokens=9), double_model(n_tokens=20)
    assert a.layers.channel[0].mixer.layer.in_proj.weight.shape == (2 * 2 * 9, 9)
    assert b.layers.channel[0].mixer.layer.in_proj.weight.shape == (2 * 2 * 20, 20)
    with pytest.raises(ValueError, match="n_tokens=9"):
        a(torch.randn(1, 10, 16, dtype=torch.float64))
    with pytest.raises(ConfigError, match="set n_tokens"):
        build_backbone("mambamixer", d_model=16, n_layers=1)
    assert not type(a).causal and not type(a).streaming and type(a).fixed_tokens and type(a).export_fixed_length


def test_token_mixer_is_the_papers_causal_scan_by_default():
    default, variant = double_model(), double_model(bidirectional=True)
    assert len(default.layers.token[0].mixer.layer.directions) == 1
    assert len(variant.layers.token[0].mixer.layer.directions) == 2


def test_grid_token_mixer_is_causal_and_channel_mixer_spans_variates():
    torch.manual_seed(0)
    grid = build_backbone("tsm2", d_model=8, n_layers=2, norm="rms").double().eval()  # per-token norm
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64)  # 5 variates x 6 patches
    x2 = x.clone()
    x2[:, 1, 3] += 1.0  # variate 1, patch 3
    diff = (grid(x2) - grid(x)).abs().sum(-1)  # (B, C, P)
    torch.testing.assert_close(diff[:, :, :3].sum(), torch.tensor(0.0, dtype=torch.float64)), "earlier patches"
    assert (diff[:, :, 3] > 0).all(), "every variate sees the change at that patch (bidirectional channel mixer)"
    assert (diff[:, 1, 4:] > 0).all(), "later patches of the variate see it"


def test_grid_is_a_registered_backbone_of_grid_tokens():
    grid = build_backbone("tsm2", d_model=8, n_layers=2, d_state=4, dropout=0.1)
    assert isinstance(grid, MambaMixerGrid) and type(grid).tokens == "grid"
    assert grid.d_model == 8 and len(grid.layers.token) == 2
    assert grid.layers.token[0].mixer.layer.directions[0].A_log.shape == (16, 4)
    assert isinstance(grid.layers.token[0].norm1, PlaneNorm), "the paper's norm over time and features by default"
    assert len(grid.layers.token[0].mixer.layer.directions) == 1, "the paper's time mixer is unidirectional"
    assert len(grid.layers.channel[0].mixer.layer.directions) == 2, "the variate mixer is bidirectional"
    with pytest.raises(ValueError, match=r"grid \(B, C, L, 8\)"):
        grid(torch.randn(2, 6, 8))
    with pytest.raises(ConfigError, match="cannot be built causal"):
        build_backbone("tsm2", d_model=8, n_layers=1, causal=True)  # the plane norm reads the whole window


def test_plane_norm_normalises_each_channel_over_time_and_features():
    norm = PlaneNorm(4)
    y = norm(torch.randn(3, 5, 7, 4) * 10 + 3)
    torch.testing.assert_close(y.mean(dim=(-2, -1)), torch.zeros(3, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(-2, -1), unbiased=False), torch.ones(3, 5), atol=1e-3, rtol=0)

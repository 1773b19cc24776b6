"""Mamba specifics beyond the contract suite: the paper's initialisation, optimiser groups,
what a non-causal build means, padding inside a bidirectional scan."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqzoo import ConfigError, build_backbone
from seqzoo.layers import MambaLayer, SelectiveSSM


def test_paper_initialisation():
    torch.manual_seed(0)
    model = build_backbone("mamba", d_model=32, n_layers=4, d_state=16)
    layer = model.blocks[0].mixer
    ssm = layer.directions[0]
    assert layer.d_inner == 64 and ssm.dt_rank == 2 and ssm.A_log.shape == (64, 16)
    dt = F.softplus(ssm.dt_bias)
    assert bool((dt >= 1e-4).all()) and bool((dt <= 0.1 + 1e-6).all()), "softplus(dt_bias) = dt in [1e-3, 1e-1]"
    assert dt.std() > 0, "dt is sampled per channel"
    torch.testing.assert_close(ssm.A_log, torch.log(torch.arange(1, 17.0)).repeat(64, 1))
    torch.testing.assert_close(ssm.D, torch.ones(64))
    assert ssm.dt_proj.weight.abs().max() <= ssm.dt_rank**-0.5
    assert ssm.dt_bias._no_reinit, "dt_bias is excluded from global re-initialisation"
    # out_proj: the default Linear init divided by sqrt(n_layers)
    bound = 1 / math.sqrt(layer.d_inner) / math.sqrt(4)
    assert layer.out_proj.weight.abs().max() <= bound + 1e-7
    assert layer.out_proj.weight.abs().max() > 0.8 * bound


def test_a_log_and_d_have_no_weight_decay():
    model = build_backbone("mamba", d_model=16, n_layers=2)
    (group,) = model.param_groups()
    assert group["weight_decay"] == 0.0
    ids = {id(p) for p in group["params"]}
    for ssm in (m for m in model.modules() if isinstance(m, SelectiveSSM)):
        assert id(ssm.A_log) in ids and id(ssm.D) in ids
    assert len(ids) == 2 * sum(isinstance(m, SelectiveSSM) for m in model.modules())


def test_bidirectional_only_by_name_and_default_is_causal():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 8:] += 1.0
    bi = build_backbone("mamba", d_model=16, n_layers=1, bidirectional=True).double()
    assert bi.bidirectional and len(bi.blocks[0].mixer.directions) == 2
    assert not torch.allclose(bi(x)[:, :8], bi(x2)[:, :8]), "a bidirectional scan sees later positions"
    for model in (build_backbone("mamba", d_model=16, n_layers=1, causal=True).double(),
                  build_backbone("mamba", d_model=16, n_layers=1).double()):
        assert len(model.blocks[0].mixer.directions) == 1
        torch.testing.assert_close(model(x)[:, :8], model(x2)[:, :8])


def test_bidirectional_causal_is_a_config_error():
    with pytest.raises(ConfigError, match="bidirectional=True reads later tokens, so it cannot be causal"):
        build_backbone("mamba", d_model=16, n_layers=1, causal=True, bidirectional=True)


def test_bidirectional_layer_has_no_step():
    layer = MambaLayer(8, bidirectional=True)
    with pytest.raises(TypeError, match="no step"):
        layer.init_state(2)


def test_bad_family_keywords_are_named():
    with pytest.raises(ConfigError, match="d_state"):
        build_backbone("mamba", d_model=16, n_layers=1, d_state=0)
    with pytest.raises(ConfigError, match="dt_rank"):
        build_backbone("mamba", d_model=16, n_layers=1, dt_rank=-2)


def test_padding_holes_add_no_input_in_either_direction():
    """A masked position contributes nothing: the same as a sequence where its values are zero
    after the input projection (not merely another value)."""
    torch.manual_seed(0)
    model = build_backbone("mamba", d_model=16, n_layers=2).double().eval()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 3] = mask[1, 7:] = False
    noisy = torch.where(mask[..., None], x, torch.randn_like(x) * 50)
    torch.testing.assert_close(model(x, mask)[mask], model(noisy, mask)[mask])


def test_half_precision_keeps_a_float32_residual_stream():
    model = build_backbone("mamba", d_model=16, n_layers=2, causal=True)
    x = torch.randn(2, 6, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.float32
    state = model.init_state(2, dtype=torch.bfloat16)
    assert state[1].dtype == torch.float32, "the SSM state accumulates in float32"


def _perturbed(ssm: SelectiveSSM, seed: int) -> SelectiveSSM:
    """Directions that differ in every parameter (A, D and Δ's bias included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ssm.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return ssm


@pytest.mark.parametrize("gated", [True, False])
def test_directions_scanned_together_equal_each_scanned_alone(gated):
    from seqzoo.layers.selective_ssm import scan_together

    torch.manual_seed(0)
    ssms = [_perturbed(SelectiveSSM(6, d_state=3, d_conv=4 if gated else 0, dt_rank=2), k).double() for k in range(3)]
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(2, 9, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in ssms]
    zs = [torch.randn(2, 9, 6, generator=g, dtype=torch.float64) if gated else None for _ in ssms]
    keep = torch.ones(2, 9, 1, dtype=torch.float64)
    keep[1, 6:] = 0  # padding at the end of the second sequence
    keeps = [keep, keep.flip(1), keep] if gated else None
    alone = [ssm(x, z, None if keeps is None else k) for ssm, x, z, k in zip(ssms, xs, zs, keeps or [None] * 3)]
    together = scan_together(ssms, xs, zs, keeps)
    for a, t in zip(alone, together):
        torch.testing.assert_close(t, a, rtol=0, atol=1e-12)
    weights = [torch.randn(2, 9, 6, generator=g, dtype=torch.float64) for _ in ssms]
    params = [p for ssm in ssms for p in ssm.parameters()] + xs
    grads_alone = torch.autograd.grad(sum((w * y).sum() for w, y in zip(weights, alone)), params)
    grads_together = torch.autograd.grad(sum((w * y).sum() for w, y in zip(weights, together)), params)
    for a, t in zip(grads_alone, grads_together):
        torch.testing.assert_close(t, a, rtol=0, atol=1e-12)


def test_scan_together_refuses_directions_that_differ():
    from seqzoo.layers.selective_ssm import scan_together

    a, b = SelectiveSSM(6, d_state=3, d_conv=4, dt_rank=2), SelectiveSSM(6, d_state=4, d_conv=4, dt_rank=2)
    x = torch.randn(1, 5, 6)
    with pytest.raises(ValueError, match="d_inner, d_state and impl"):
        scan_together([a, b], [x, x], [None, None])
    with pytest.raises(ValueError, match="every direction or none"):
        scan_together([a, a], [x, x], [x, None])


def test_bidirectional_layer_is_the_sum_of_its_two_scans():
    torch.manual_seed(0)
    layer = MambaLayer(8, d_state=4, bidirectional=True).double()
    _perturbed(layer.directions[1], 3)
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[0, 8:] = False
    u, z = layer.in_proj(x).chunk(2, dim=-1)
    keep = mask[..., None].double()
    forward = layer.directions[0](u, z, keep)
    backward = layer.directions[1](u.flip(1), z.flip(1), keep.flip(1)).flip(1)
    torch.testing.assert_close(layer(x, mask), layer.out_proj(forward + backward), rtol=0, atol=1e-12)

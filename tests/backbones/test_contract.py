"""The backbone contract, checked for every registered family.

A family added to the registry is picked up here automatically: output shape,
causality, step == forward and chunked forward_with_state == forward (float64, 1e-10),
padding mask, gradients, keywords, ONNX parity. Grid backbones (token kind "grid") take
(B, C, L, D) grids of C = 3 channels; their causality is along L. Image backbones (token
kind "image") take (B, L, D) patch tokens of a fixed grid L = H x W (W from ``grid_width``)
and, like grids, no padding mask.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from seqzoo import ConfigError, build_backbone, get_backbone_class, list_backbones
from seqzoo.backbones import SHARED_KEYWORDS
from seqzoo.export import ExportSpec, backbone_spec, export_onnx, step_spec

NAMES = list_backbones()
D = 16


def build(name: str, dtype=torch.float64, length: int = 12, **kw):
    """``name`` at width D, 2 layers; a fixed-token family is built for ``length`` tokens."""
    torch.manual_seed(0)
    if get_backbone_class(name).fixed_tokens:
        kw["n_tokens"] = length
    if get_backbone_class(name).tokens == "image":  # a grid H x W of the length: the widest W <= sqrt(L)
        kw.setdefault("grid_width", max(w for w in range(1, int(length**0.5) + 1) if length % w == 0))
    model = build_backbone(name, d_model=D, n_layers=2, **kw).to(dtype)
    if getattr(model, "spiking", False):
        calibrate_batch_norms(model, length, dtype)
    return model.eval()


def calibrate_batch_norms(model, length: int, dtype) -> None:
    """A spiking family as the paper builds it (BatchNorm γ = 1 before each LIF) is silent in
    eval mode with fresh running statistics; a trained one is not. Set the statistics from one
    batch (cumulative average), as training would."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = None
        norm.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(randn(4, length, D, dtype=dtype, seed=11))


def randn(*shape, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def grid(name) -> bool:
    return get_backbone_class(name).tokens == "grid"


def tokens(name, batch, length, dtype=torch.float64, seed=1):
    """Random input tokens of ``name``'s kind: (B, L, D), or (B, 3, L, D) for a grid."""
    return randn(batch, *((3,) if grid(name) else ()), length, D, dtype=dtype, seed=seed)


def grid_spec(model):
    """Export spec of a grid backbone: x (B, C, L, D), batch and length free."""
    def make(b, n):
        return (tokens(model.name, b, n, dtype=torch.float32, seed=b * 100 + n),)

    return ExportSpec(module=model, example_inputs=make(2, 12), input_names=["x"], output_names=["y"],
                      dynamic={"x": {0: "batch", 2: "length"}}, check_inputs=[make(2, 12), make(3, 19)])


def causal_options(name):
    return [False, True] if get_backbone_class(name).causal else [False]


@pytest.mark.parametrize("name", NAMES)
def test_shared_keywords_and_capabilities(name):
    cls = get_backbone_class(name)
    params = inspect.signature(cls.__init__).parameters
    for key in SHARED_KEYWORDS:
        assert key in params, f"{name} must accept the shared keyword {key!r}"
    assert cls.tokens in ("time", "variate", "grid", "image")
    if cls.streaming:
        assert cls.causal, "a streaming family must be buildable causal"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [1, 13])
def test_output_shape(name, length):
    for causal in causal_options(name):
        model = build(name, causal=causal, length=length)
        x = tokens(name, 2, length)
        y = model(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_causal_output_ignores_future(name):
    if not get_backbone_class(name).causal:
        with pytest.raises(ConfigError, match="cannot be built causal"):
            build(name, causal=True)
        return
    model = build(name, causal=True, length=17)
    x = tokens(name, 2, 17)
    t0 = 9
    x2 = x.clone()
    future = x2[..., t0:, :]
    future += tokens(name, 2, 17 - t0, seed=2) * 3
    y, y2 = model(x), model(x2)
    torch.testing.assert_close(y[..., :t0, :], y2[..., :t0, :], atol=1e-9, rtol=1e-7)
    assert not torch.allclose(y[..., t0:, :], y2[..., t0:, :]), "perturbing the future changed nothing at all"


@pytest.mark.parametrize("name", NAMES)
def test_step_matches_forward(name):
    cls = get_backbone_class(name)
    if not cls.streaming:
        pytest.skip(f"{name} does not stream")
    model = build(name, causal=True, length=11)
    x = randn(3, 11, D)
    y = model(x)
    state = model.init_state(3, dtype=torch.float64)
    shapes = [s.shape for s in state]
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y_t, state = model.step(x[:, t], state)
            assert [s.shape for s in state] == shapes, "state shapes must not change from step to step"
            outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, dim=1), y, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_forward_with_state_in_chunks_matches_forward(name):
    """A stream cut into uneven chunks, each continuing from the last state, equals one forward."""
    if not get_backbone_class(name).streaming:
        pytest.skip(f"{name} does not stream")
    model = build(name, causal=True, length=13)
    x = randn(2, 13, D)
    y = model(x)
    state = model.init_state(2, dtype=torch.float64)
    shapes = [s.shape for s in state]
    outs = []
    with torch.no_grad():
        for lo, hi in [(0, 1), (1, 6), (6, 13)]:
            y_chunk, state = model.forward_with_state(x[:, lo:hi], state)
            assert y_chunk.shape == (2, hi - lo, D)
            assert [s.shape for s in state] == shapes, "state shapes must not change from chunk to chunk"
            outs.append(y_chunk)
    torch.testing.assert_close(torch.cat(outs, dim=1), y, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_padding_mask_respected(name):
    """Outputs at valid positions do not depend on what sits in the padding."""
    if grid(name) or get_backbone_class(name).tokens == "image":
        with pytest.raises(ValueError, match="no padding mask"):
            build(name, length=15)(tokens(name, 3, 15), torch.ones(3, 15, dtype=torch.bool))
        return
    lengths = torch.tensor([15, 9, 4])
    mask = torch.arange(15)[None, :] < lengths[:, None]
    for causal in causal_options(name):
        model = build(name, causal=causal, length=15)
        x = randn(3, 15, D)
        x2 = torch.where(mask[..., None], x, randn(3, 15, D, seed=5) * 10)
        y, y2 = model(x, mask), model(x2, mask)
        torch.testing.assert_close(y[mask], y2[mask], atol=1e-9, rtol=1e-7)
        # the mask must not change a full-length row
        torch.testing.assert_close(y[0], model(x[:1])[0], atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    for causal in causal_options(name):
        model = build(name, causal=causal, length=10).train()
        with torch.no_grad():  # move off special inits (zeros, identities) that block gradients
            for p in model.parameters():
                p.add_(randn(*p.shape, seed=7) * 0.02)
        x = tokens(name, 2, 10).requires_grad_()
        y = model(x)
        (y * randn(*y.shape, seed=8)).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        for pname, p in model.named_parameters():
            if not p.requires_grad:
                continue
            assert p.grad is not None, f"{name}: no gradient reaches {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
            assert p.grad.abs().sum() > 0, f"{name}: zero gradient in {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_unknown_keyword_is_rejected(name):
    with pytest.raises(ConfigError, match="not_a_keyword"):
        build_backbone(name, d_model=D, n_layers=2, not_a_keyword=1)


@pytest.mark.parametrize("name", NAMES)
def test_fixed_token_families_need_and_check_their_count(name):
    if not get_backbone_class(name).fixed_tokens:
        assert "n_tokens" not in inspect.signature(get_backbone_class(name).__init__).parameters
        return
    assert get_backbone_class(name).export_fixed_length
    with pytest.raises(ConfigError, match="n_tokens"):
        build_backbone(name, d_model=D, n_layers=2)
    with pytest.raises(ValueError, match="n_tokens=12"):
        build(name, length=12)(randn(2, 13, D))


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_are_own_parameters(name):
    model = build(name)
    own = {id(p) for p in model.parameters()}
    seen: set[int] = set()
    for group in model.param_groups():
        for p in group["params"]:
            assert id(p) in own, f"{name}: param_groups() lists a tensor that is not a parameter of the model"
            assert id(p) not in seen, f"{name}: a parameter appears in two groups"
            seen.add(id(p))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_parity(name, tmp_path):
    causal = get_backbone_class(name).causal
    model = build(name, dtype=torch.float32, causal=causal)
    spec = grid_spec(model) if grid(name) else backbone_spec(model, generator=torch.Generator().manual_seed(0))
    report = export_onnx(spec, tmp_path / "model.onnx")  # fixed-token families: at their n_tokens (12)
    assert report.max_abs_diff <= 1e-4
    if get_backbone_class(name).streaming:
        report = export_onnx(step_spec(model, D, generator=torch.Generator().manual_seed(0)), tmp_path / "step.onnx")
        assert report.max_abs_diff <= 1e-4

"""Aaren's prefix scan: the chunked loop-free torch path and the Triton kernel match the
sequential scan (values, final state, every gradient incl. the initial state's) at ragged
lengths and with several segments; the identity never makes NaN; carried state chains."""

from __future__ import annotations

import pytest
import torch

import seqzoo.kernels.prefix_attention.triton as prefix_triton
from seqzoo.kernels.prefix_attention import (
    combine,
    identity_state,
    prefix_attention,
    prefix_attention_recurrent_ref,
    prefix_attention_ref,
)
from tests.kernels.grad_checks import LOW_PRECISION, assert_all_close, grads_of, leaves, needs_triton, randn

B, H, D = 2, 3, 20


def inputs(T, dtype=torch.float64, with_state=True, b=B, h=H, d=D, seed=0):
    s = randn(b, T, h, dtype=dtype, seed=seed, scale=3.0)
    v = randn(b, T, h, d, dtype=dtype, seed=seed + 1)
    if not with_state:
        return s, v, None
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    state = (randn(b, h, dtype=sdt, seed=seed + 2), 1 + randn(b, h, dtype=sdt, seed=seed + 3).abs(),
             randn(b, h, d, dtype=sdt, seed=seed + 4))
    return s, v, state


def run(fn, s, v, state, **kw):
    s, v = leaves(s, v)
    state = None if state is None else tuple(leaves(*state))
    o, final = fn(s, v, initial_state=state, **kw)
    return (o, *final), grads_of((o, *final), (s, v, *(state or ())))


def triton_fn(**kw):
    return lambda s, v, **rest: prefix_attention(s, v, return_final_state=True, chunk_size=16, impl="triton",
                                                 **rest, **kw)


@pytest.mark.parametrize("T", [1, 37, 100])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_torch_path_matches_the_sequential_scan(T, with_state):
    x = inputs(T, with_state=with_state)
    want_out, want_grads = run(prefix_attention_recurrent_ref, *x)
    out, grads = run(prefix_attention_ref, *x, chunk_size=16)
    assert_all_close(out, want_out, 1e-10, 1e-10, "outputs")
    assert_all_close(grads, want_grads, 1e-10, 1e-10, "gradients")


def test_outputs_are_softmax_attention_over_each_prefix():
    s, v, _ = inputs(25)
    o, (m, u, w) = prefix_attention_ref(s, v, chunk_size=16)
    for t in (0, 7, 24):
        weights = torch.softmax(s[:, : t + 1], dim=1)  # (B, t+1, H)
        torch.testing.assert_close(o[:, t], torch.einsum("bih,bihd->bhd", weights, v[:, : t + 1]))
    torch.testing.assert_close(w / u[..., None], o[:, -1])
    torch.testing.assert_close(m, s.amax(dim=1))


def test_identity_combines_without_nan_and_large_scores_do_not_overflow():
    ident = identity_state(2, 3, 4, dtype=torch.float64)
    m, u, w = combine(ident, ident)
    assert torch.isneginf(m).all() and (u == 0).all() and (w == 0).all()
    s, v = leaves(*inputs(40)[:2])
    o_big, (m_big, u_big, w_big) = prefix_attention_ref(s * 1e4, v, chunk_size=16)
    grads = grads_of((o_big, m_big, u_big, w_big), (s, v))
    assert all(torch.isfinite(x).all() for x in (o_big, m_big, u_big, w_big, *grads))


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_triton)])
def test_masked_scores_are_ignored_and_an_all_masked_prefix_gives_zero(impl):
    s, v, _ = inputs(30)
    s, v = leaves(s, v)
    masked = torch.zeros_like(s, dtype=torch.bool)
    masked[:, :5] = True  # an all-masked prefix
    masked[:, 12:15] = True
    o = prefix_attention(s.masked_fill(masked, float("-inf")), v, chunk_size=16, impl=impl)
    ds, dv = grads_of((o,), (s, v))
    assert (o[:, :5] == 0).all()
    assert torch.isfinite(ds).all() and torch.isfinite(dv).all()
    assert (dv[masked[..., None].expand_as(dv)] == 0).all()
    kept = s.detach().masked_fill(masked, float("-inf"))
    want, _ = prefix_attention_recurrent_ref(kept[:, 5:], v.detach()[:, 5:])
    torch.testing.assert_close(o.detach()[:, 5:], want, atol=1e-10, rtol=1e-10)


@needs_triton
@pytest.mark.parametrize("T, segment_chunks, with_state", [(1, None, True), (63, 1, False), (63, 1, True),
                                                            (100, 3, True)])
def test_triton_matches_reference_in_float64(T, segment_chunks, with_state, monkeypatch):
    if segment_chunks:  # several segments: the parallel segment scan and its reverse
        monkeypatch.setattr(prefix_triton, "_segment_chunks", lambda *args: segment_chunks)
    x = inputs(T, with_state=with_state)
    want_out, want_grads = run(prefix_attention_recurrent_ref, *x)
    out, grads = run(triton_fn(), *x)
    assert_all_close(out, want_out, 1e-10, 1e-10, "triton outputs")
    assert_all_close(grads, want_grads, 1e-10, 1e-10, "triton gradients")


@needs_triton
@pytest.mark.parametrize("dtype, tol", LOW_PRECISION)
def test_triton_low_precision_keeps_fp32_state(dtype, tol):
    s, v, state = inputs(50, dtype=dtype)
    o, final = prefix_attention(s, v, initial_state=state, return_final_state=True, chunk_size=16, impl="triton")
    want_o, want_final = prefix_attention_recurrent_ref(s.double(), v.double(),
                                                        initial_state=tuple(x.double() for x in state))
    assert o.dtype == dtype and all(x.dtype == torch.float32 for x in final)
    torch.testing.assert_close(o.double(), want_o, atol=tol, rtol=tol)
    for got, want in zip(final, want_final):
        torch.testing.assert_close(got.double(), want, atol=tol * want.abs().max(), rtol=tol)


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_triton)])
def test_chunked_calls_with_carried_state_equal_one_call(impl):
    s, v, state = inputs(70)
    s, v = leaves(s, v)
    state = tuple(leaves(*state))
    kw = dict(return_final_state=True, chunk_size=16, impl=impl)
    o, final = prefix_attention(s, v, initial_state=state, **kw)
    whole = grads_of((o, *final), (s, v, *state))
    o1, mid = prefix_attention(s[:, :30], v[:, :30], initial_state=state, **kw)
    o2, final2 = prefix_attention(s[:, 30:], v[:, 30:], initial_state=mid, **kw)
    joined = torch.cat([o1, o2], dim=1)
    parts = grads_of((joined, *final2), (s, v, *state))
    assert_all_close([joined, *final2], [o, *final], 1e-10, 1e-10, "chained outputs")
    assert_all_close(parts, whole, 1e-10, 1e-10, "chained gradients")


@pytest.mark.parametrize("change, message", [
    (dict(s=torch.zeros(2, 5, 2)), r"scores s must be \(B, T, H\)"),
    (dict(v=torch.zeros(2, 5, 3)), r"v must be \(B, T, H, D\)"),
    (dict(initial_state=(torch.zeros(2, 3), torch.zeros(2, 3))), r"tuple \(m, u, w\)"),
    (dict(initial_state=(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, 5))), "initial_state shapes"),
    (dict(chunk_size=8), "power of two >= 16"),
])
def test_bad_arguments_are_clear_errors(change, message):
    args = dict(s=torch.zeros(2, 5, 3), v=torch.zeros(2, 5, 3, 4), initial_state=None, chunk_size=16)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        prefix_attention(args.pop("s"), args.pop("v"), **args)


@pytest.mark.gpu
# fp32 matmuls run as TF32 on the GPU (seqzoo.kernels.dispatch.dot_precision)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-3), (torch.bfloat16, 3e-2)])
def test_triton_large_shapes_on_gpu(dtype, tol):
    s, v, state = inputs(8195, dtype=dtype, b=2, h=4, d=64)
    s, v = s.requires_grad_(), v.requires_grad_()
    o, final = prefix_attention(s, v, initial_state=state, return_final_state=True, impl="triton")
    got = grads_of((o, *final), (s, v))
    x64 = [t.detach().double().requires_grad_() for t in (s, v)]
    want_o, want_final = prefix_attention_ref(*x64, initial_state=tuple(x.double() for x in state))
    want = grads_of((want_o, *want_final), x64)
    for g, w, name in zip((o, *final, *got), (want_o, *want_final, *want), ("o", "m", "u", "w", "ds", "dv")):
        scale = w.abs().max().item()
        torch.testing.assert_close(g.double(), w, atol=tol * scale, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")

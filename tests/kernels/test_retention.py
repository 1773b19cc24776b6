"""Retention: the three torch forms agree; the Triton kernel matches them (values, final
state, every gradient incl. the initial state's) at ragged lengths; carried state chains."""

from __future__ import annotations

import pytest
import torch

from seqzoo.kernels.retention import (
    retention,
    retention_parallel_ref,
    retention_recurrent_ref,
    retention_ref,
    retention_step,
)
from tests.kernels.grad_checks import DEVICE, LOW_PRECISION, assert_all_close, grads_of, leaves, needs_triton, randn

B, H, DK, DV = 2, 2, 8, 12
GAMMA = torch.tensor([0.9, 0.5], dtype=torch.float64)


def inputs(T, dtype=torch.float64, with_state=True, b=B, h=H, dk=DK, dv=DV, seed=0):
    q, k = randn(b, T, h, dk, dtype=dtype, seed=seed), randn(b, T, h, dk, dtype=dtype, seed=seed + 1)
    v = randn(b, T, h, dv, dtype=dtype, seed=seed + 2)
    state = randn(b, h, dk, dv, dtype=torch.float64 if dtype == torch.float64 else torch.float32, seed=seed + 3)
    return q, k, v, state if with_state else None


def run(fn, q, k, v, state, gamma=GAMMA, **kw):
    q, k, v, state = leaves(q, k, v, state)
    o, final = fn(q, k, v, gamma.to(q.device), initial_state=state, **kw)
    return (o, final), grads_of((o, final), (q, k, v, state))


@pytest.mark.parametrize("T", [1, 37, 100])
def test_parallel_chunkwise_and_recurrent_forms_agree(T):
    x = inputs(T)
    want_out, want_grads = run(retention_recurrent_ref, *x)
    for form, kw in [(retention_parallel_ref, {}), (retention_ref, {"chunk_size": 16})]:
        out, grads = run(form, *x, **kw)
        assert_all_close(out, want_out, 1e-10, 1e-10, f"{form.__name__} outputs")
        assert_all_close(grads, want_grads, 1e-10, 1e-10, f"{form.__name__} gradients")


def test_decay_one_is_causal_linear_attention_and_no_softmax():
    """γ = 1: o_t = s q_t Σ_{u<=t} k_u^T v_u exactly; doubling v doubles o (no normaliser)."""
    q, k, v, _ = inputs(20)
    ones = torch.ones(H, dtype=torch.float64)
    o, _ = retention_ref(q, k, v, ones, chunk_size=16)
    prefix = torch.cumsum(k[..., :, None] * v[..., None, :], dim=1)  # (B, T, H, K, V)
    want = torch.einsum("bthk,bthkv->bthv", q, prefix) * DK**-0.5
    torch.testing.assert_close(o, want, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(retention_ref(q, k, 2 * v, ones, chunk_size=16)[0], 2 * o)


def test_step_continues_the_sequence():
    q, k, v, state = inputs(9)
    o, final = retention_ref(q, k, v, GAMMA, initial_state=state)
    for t in range(9):
        o_t, state = retention_step(q[:, t], k[:, t], v[:, t], GAMMA, state)
        torch.testing.assert_close(o_t, o[:, t], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(state, final, atol=1e-12, rtol=1e-12)


@needs_triton
@pytest.mark.parametrize("T, with_state", [(1, True), (63, False), (100, True)])
def test_triton_matches_reference_in_float64(T, with_state):
    x = inputs(T, with_state=with_state)
    want_out, want_grads = run(retention_recurrent_ref, *x)
    out, grads = run(lambda *a, **kw: retention(*a, return_final_state=True, chunk_size=16, impl="triton", **kw), *x)
    assert_all_close(out, want_out, 1e-10, 1e-10, "triton outputs")
    assert_all_close(grads, want_grads, 1e-10, 1e-10, "triton gradients")


@needs_triton
@pytest.mark.parametrize("dtype, tol", LOW_PRECISION)
def test_triton_low_precision_keeps_fp32_state(dtype, tol):
    q, k, v, state = inputs(50, dtype=dtype)
    o, final = retention(q, k, v, GAMMA.to(DEVICE), initial_state=state, return_final_state=True, chunk_size=16,
                         impl="triton")
    want_o, want_final = retention_recurrent_ref(q.double(), k.double(), v.double(), GAMMA, initial_state=state.double())
    assert o.dtype == dtype and final.dtype == torch.float32
    scale = want_o.abs().max()
    torch.testing.assert_close(o.double(), want_o, atol=tol * scale, rtol=tol)
    torch.testing.assert_close(final.double(), want_final, atol=tol * want_final.abs().max(), rtol=tol)


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_triton)])
def test_chunked_calls_with_carried_state_equal_one_call(impl):
    q, k, v, state = inputs(70)
    q, k, v, state = leaves(q, k, v, state)
    kw = dict(return_final_state=True, chunk_size=16, impl=impl)
    o, final = retention(q, k, v, GAMMA.to(DEVICE), initial_state=state, **kw)
    whole = grads_of((o, final), (q, k, v, state))
    o1, mid = retention(q[:, :30], k[:, :30], v[:, :30], GAMMA.to(DEVICE), initial_state=state, **kw)
    o2, final2 = retention(q[:, 30:], k[:, 30:], v[:, 30:], GAMMA.to(DEVICE), initial_state=mid, **kw)
    parts = grads_of((torch.cat([o1, o2], dim=1), final2), (q, k, v, state))
    assert_all_close([torch.cat([o1, o2], dim=1), final2], [o, final], 1e-10, 1e-10, "chained outputs")
    assert_all_close(parts, whole, 1e-10, 1e-10, "chained gradients")


def test_auto_on_cpu_is_the_reference():
    q, k, v, state = (x.cpu() for x in inputs(20))
    o = retention(q, k, v, GAMMA, initial_state=state)
    torch.testing.assert_close(o, retention_ref(q, k, v, GAMMA, initial_state=state)[0])


@pytest.mark.parametrize("change, message", [
    (dict(k=torch.zeros(2, 5, 2, 4)), "q and k must both be"),
    (dict(v=torch.zeros(2, 4, 2, 8)), r"v must be \(B, T, H, Dv\)"),
    (dict(gamma=torch.tensor([0.5])), r"gamma must be a tensor of shape \(H,\)"),
    (dict(gamma=torch.tensor([0.5, 1.5])), r"must lie in \(0, 1\]"),
    (dict(initial_state=torch.zeros(2, 2, 8, 4)), "initial_state must be"),
    (dict(chunk_size=24), "power of two"),
    (dict(q=torch.zeros(2, 0, 2, 8), k=torch.zeros(2, 0, 2, 8), v=torch.zeros(2, 0, 2, 8)), "empty"),
])
def test_bad_arguments_are_clear_errors(change, message):
    args = dict(q=torch.zeros(2, 5, 2, 8), k=torch.zeros(2, 5, 2, 8), v=torch.zeros(2, 5, 2, 8),
                gamma=torch.tensor([0.5, 0.9]), initial_state=None, chunk_size=16)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        retention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("gamma"), **args)


@pytest.mark.gpu
# fp32 matmuls run as TF32 on the GPU (seqzoo.kernels.dispatch.dot_precision)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-3), (torch.bfloat16, 3e-2)])
def test_triton_large_shapes_on_gpu(dtype, tol):
    q, k, v, state = inputs(4099, dtype=dtype, b=2, h=4, dk=64, dv=64)
    gamma = torch.tensor([0.97, 0.99, 0.995, 0.999], dtype=torch.float64)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    o, final = retention(q, k, v, gamma.cuda(), initial_state=state, return_final_state=True, impl="triton")
    got = grads_of((o, final), (q, k, v))
    x64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want_o, want_final = retention_ref(*x64, gamma.cuda(), initial_state=state.double())
    want = grads_of((want_o, want_final), x64)
    for g, w, name in zip((o, final, *got), (want_o, want_final, *want), ("o", "final", "dq", "dk", "dv")):
        scale = w.abs().max().item()
        torch.testing.assert_close(g.double(), w, atol=tol * scale, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")

"""LIF neurons: Triton kernel vs the loop reference (spikes, membranes, final state,
surrogate gradients incl. the initial membrane), chunked calls, the export path."""

from __future__ import annotations

import pytest
import torch

from seqzoo.kernels import export_mode
from seqzoo.kernels.lif import lif, lif_ref, lif_step
from tests.kernels.grad_checks import needs_triton


def currents(B, T, channels, *, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, *channels, generator=g, dtype=dtype) * 1.5 + 0.8  # fires a fair share
    v0 = torch.rand(B, *channels, generator=g, dtype=dtype) * 0.9
    return x.to(device).requires_grad_(), v0.to(device).requires_grad_()


def weights(*tensors, seed=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for t in tensors]


@pytest.mark.parametrize("T,channels", [(1, (3,)), (63, (5,)), (257, (2, 3))])
@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_triton), "torch"])
def test_kernel_matches_reference_float64(T, channels, impl):
    """Triton and the CPU path (loop + reverse linear recurrence) against the autograd oracle."""
    x, v0 = currents(2, T, channels)
    spikes, final = lif(x, initial_state=v0, return_final_state=True, impl=impl)
    spikes_ref, final_ref = lif_ref(x, initial_state=v0)
    assert 0.05 < float(spikes_ref.mean()) < 0.95 or T == 1, "the test currents should make neurons fire sometimes"
    torch.testing.assert_close(spikes, spikes_ref, atol=0, rtol=0)
    torch.testing.assert_close(final, final_ref, atol=1e-12, rtol=1e-12)
    w_s, w_f = weights(spikes, final)
    grads = torch.autograd.grad((spikes * w_s).sum() + (final * w_f).sum(), (x, v0))
    grads_ref = torch.autograd.grad((spikes_ref * w_s).sum() + (final_ref * w_f).sum(), (x, v0))
    for name, got, want in zip(("x", "initial_state"), grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10, msg=f"gradient of {name}")


@needs_triton
def test_triton_float32_without_initial_state():
    x, _ = currents(3, 40, (7,), dtype=torch.float32)
    spikes, final = lif(x, return_final_state=True, impl="triton")
    spikes_ref, final_ref = lif_ref(x)
    torch.testing.assert_close(spikes, spikes_ref, atol=0, rtol=0)
    torch.testing.assert_close(final, final_ref, atol=1e-6, rtol=1e-6)
    (w,) = weights(spikes)
    torch.testing.assert_close(torch.autograd.grad((spikes * w).sum(), x)[0],
                               torch.autograd.grad((spikes_ref * w).sum(), x)[0], atol=1e-6, rtol=1e-5)


def test_membrane_follows_the_lif_equations():
    """A constant current of 3 with τ = 2 from rest: H = 1.5 fires, reset, fires again..."""
    x = torch.full((1, 4, 1), 3.0, dtype=torch.float64)
    spikes, final, membrane = lif_ref(x, return_membrane=True)
    assert membrane.flatten().tolist() == [1.5, 1.5, 1.5, 1.5]
    assert spikes.flatten().tolist() == [1.0, 1.0, 1.0, 1.0]
    x = torch.full((1, 3, 1), 1.0, dtype=torch.float64)  # never reaches V_th = 1
    spikes, final, membrane = lif_ref(x, return_membrane=True)
    assert membrane.flatten().tolist() == [0.5, 0.75, 0.875] and spikes.sum() == 0 and float(final) == 0.875


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_triton), "torch"])
def test_chunked_calls_with_carried_state_equal_one_call(impl):
    x, v0 = (t.detach() for t in currents(2, 30, (4,)))
    whole, whole_final = lif(x, initial_state=v0, return_final_state=True, impl=impl)
    state, parts = v0, []
    for lo, hi in [(0, 11), (11, 12), (12, 30)]:
        s, state = lif(x[:, lo:hi], initial_state=state, return_final_state=True, impl=impl)
        parts.append(s)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=0, rtol=0)
    torch.testing.assert_close(state, whole_final)


def test_step_is_the_forward_arithmetic():
    x, v0 = (t.detach() for t in currents(2, 20, (3,)))
    spikes_ref, final_ref = lif_ref(x, initial_state=v0)
    v, outs = v0, []
    for t in range(20):
        s, v, _ = lif_step(x[:, t], v)
        outs.append(s)
    assert torch.equal(torch.stack(outs, 1), spikes_ref) and torch.equal(v, final_ref)


def test_export_path_matches_the_reference():
    x, v0 = (t.detach() for t in currents(2, 25, (5,)))
    with export_mode():
        spikes, final = lif(x, initial_state=v0, return_final_state=True)
    spikes_ref, final_ref = lif_ref(x, initial_state=v0)
    assert torch.equal(spikes, spikes_ref)
    torch.testing.assert_close(final, final_ref)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="tau must be > 1"):
        lif(torch.zeros(1, 2, 3), tau=0.5)
    with pytest.raises(ValueError, match="initial_state"):
        lif(torch.zeros(1, 2, 3), initial_state=torch.zeros(3))
    with pytest.raises(ValueError, match="T >= 1"):
        lif(torch.zeros(1, 0, 3))


@pytest.mark.gpu
def test_triton_large_shapes_on_gpu():
    x, v0 = currents(4, 4096, (1024,), dtype=torch.float32, device="cuda")
    spikes, final = lif(x, initial_state=v0, return_final_state=True, impl="triton")
    spikes_ref, final_ref = lif_ref(x, initial_state=v0)
    # fp32 arithmetic may differ by an ulp on the GPU (FMA): allow a handful of flipped spikes
    assert (spikes != spikes_ref).float().mean() < 1e-5
    w_s, w_f = weights(spikes, final)
    g = torch.autograd.grad((spikes * w_s).sum() + (final * w_f).sum(), x)[0]
    g_ref = torch.autograd.grad((spikes_ref * w_s).sum() + (final_ref * w_f).sum(), x)[0]
    assert torch.isfinite(g).all() and (g - g_ref).abs().max() < 1e-2

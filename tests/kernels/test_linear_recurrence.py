"""Diagonal linear recurrence: Triton kernel vs the loop reference (values, final states,
every gradient incl. the initial state), chunked calls, the loop-free export path, and
the dense time-invariant form."""

from __future__ import annotations

import pytest
import torch

from seqzoo.export import ExportSpec, export_onnx
from seqzoo.kernels import export_mode
from seqzoo.kernels.linear_recurrence import linear_recurrence, linear_recurrence_ref, lti_recurrence
from tests.kernels.grad_checks import needs_triton

CASES = [(1, (3,)), (63, (5,)), (257, (2, 3))]
KINDS = [(False, False), (True, True), (False, True), (True, False)]  # (complex, fixed a)
# every kind at T = 1 and 63; at T = 257 (slow under the interpreter) the two that layers use:
# real time-varying (gated RNNs) and complex fixed (S4D)
FLOAT64_CASES = [(T, ch, c, f) for T, ch in CASES for c, f in KINDS if T < 100 or (c, f) in KINDS[:2]]


def make(B, T, channels, *, complex_, fixed, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    real = dtype  # complex cases use complex64/complex128 built from this real dtype

    def rand(*shape, scale=1.0):
        if complex_:
            z = torch.complex(torch.randn(*shape, generator=g, dtype=real), torch.randn(*shape, generator=g, dtype=real))
            return z * scale
        return torch.randn(*shape, generator=g, dtype=real) * scale

    a_shape = channels if fixed else (B, T, *channels)
    if complex_:  # |a| < 1, as for a discretised stable SSM
        mag = torch.rand(*a_shape, generator=g, dtype=real) * 0.5 + 0.45
        phase = torch.rand(*a_shape, generator=g, dtype=real) * 6.0
        a = torch.polar(mag, phase)
    else:
        a = torch.rand(*a_shape, generator=g, dtype=real) * 1.9 - 0.95  # signs of both kinds
    b, h0 = rand(B, T, *channels), rand(B, *channels)
    return [t.to(device).requires_grad_() for t in (a, b, h0)]


def loss_terms(h, final, seed=3):
    g = torch.Generator().manual_seed(seed)
    w_h = torch.randn(h.shape, generator=g, dtype=torch.float64).to(h.device)
    w_f = torch.randn(final.shape, generator=g, dtype=torch.float64).to(h.device)
    part = lambda z: torch.view_as_real(z).sum(-1) if z.is_complex() else z  # noqa: E731
    return (part(h).double() * w_h).sum() + (part(final).double() * w_f).sum()


@needs_triton
@pytest.mark.parametrize("T,channels,complex_,fixed", FLOAT64_CASES)
def test_triton_matches_reference_float64(T, channels, complex_, fixed):
    """At these sizes the kernel splits time into chunks (T = 63: 3, T = 257: 16)."""
    a, b, h0 = make(2 if T < 100 else 1, T, channels, complex_=complex_, fixed=fixed)
    h, final = linear_recurrence(a, b, initial_state=h0, return_final_state=True, impl="triton")
    h_ref, final_ref = linear_recurrence_ref(a, b, initial_state=h0)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(final, final_ref, atol=1e-12, rtol=1e-10)
    grads = torch.autograd.grad(loss_terms(h, final), (a, b, h0))
    grads_ref = torch.autograd.grad(loss_terms(h_ref, final_ref), (a, b, h0))
    for name, got, want in zip(("a", "b", "initial_state"), grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9, msg=f"gradient of {name}")


@needs_triton
@pytest.mark.parametrize("complex_", [False, True])
def test_triton_float32_and_no_initial_state(complex_):
    a, b, _ = make(3, 40, (7,), complex_=complex_, fixed=False, dtype=torch.float32)
    h, final = linear_recurrence(a, b, return_final_state=True, impl="triton")
    h_ref, final_ref = linear_recurrence_ref(a, b)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final, final_ref, atol=1e-5, rtol=1e-5)
    ga, gb = torch.autograd.grad(loss_terms(h, final), (a, b))
    ga_ref, gb_ref = torch.autograd.grad(loss_terms(h_ref, final_ref), (a, b))
    torch.testing.assert_close(ga, ga_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gb, gb_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_triton), "torch"])
@pytest.mark.parametrize("complex_", [False, True])
def test_chunked_calls_with_carried_state_equal_one_call(impl, complex_):
    a, b, h0 = (t.detach() for t in make(2, 50, (6,), complex_=complex_, fixed=True))
    whole, whole_final = linear_recurrence(a, b, initial_state=h0, return_final_state=True, impl=impl)
    state, parts = h0, []
    for lo, hi in [(0, 17), (17, 18), (18, 50)]:
        h, state = linear_recurrence(a, b[:, lo:hi], initial_state=state, return_final_state=True, impl=impl)
        parts.append(h)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(state, whole_final, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("complex_,fixed", KINDS[:2])
def test_export_path_is_the_same_recurrence(complex_, fixed):
    a, b, h0 = (t.detach() for t in make(2, 33, (4,), complex_=complex_, fixed=fixed))
    with export_mode():
        h, final = linear_recurrence(a, b, initial_state=h0, return_final_state=True)
    h_ref, final_ref = linear_recurrence_ref(a, b, initial_state=h0)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(final, final_ref, atol=1e-12, rtol=1e-10)


class _Recurrence(torch.nn.Module):
    """x (B, T, D) -> h with a learned fixed decay: the shape S4D/LRU layers export."""

    def __init__(self):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.linspace(-2.0, 3.0, 6))

    def forward(self, x):
        return linear_recurrence(torch.sigmoid(self.logit), x)


@pytest.mark.slow
def test_onnx_export_keeps_the_length_symbolic(tmp_path):
    gen = torch.Generator().manual_seed(0)
    make_x = lambda b, t: (torch.randn(b, t, 6, generator=gen),)  # noqa: E731
    spec = ExportSpec(
        module=_Recurrence(), example_inputs=make_x(2, 12), input_names=["x"], output_names=["h"],
        dynamic={"x": {0: "batch", 1: "length"}}, check_inputs=[make_x(2, 12), make_x(3, 29)],
    )
    report = export_onnx(spec, tmp_path / "recurrence.onnx")
    assert report.max_abs_diff < 1e-5


def test_dense_time_invariant_recurrence_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 4, 4, generator=g, dtype=torch.float64) * 0.4
    b = torch.randn(2, 9, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    h, final = lti_recurrence(A, b, initial_state=h0, return_final_state=True)
    with export_mode():
        h_scan = lti_recurrence(A.detach(), b.detach(), initial_state=h0.detach())
    torch.testing.assert_close(h_scan, h.detach())
    state, outs = h0, []
    for t in range(9):
        state = torch.einsum("gij,bgj->bgi", A, state) + b[:, t]
        outs.append(state)
    want = torch.stack(outs, dim=1)
    torch.testing.assert_close(h, want)
    torch.testing.assert_close(final, state)
    g1 = torch.autograd.grad((h * h).sum(), (b, h0))
    g2 = torch.autograd.grad((want * want).sum(), (b, h0))
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y)


def test_bad_arguments_are_named():
    b = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="channel shape"):
        linear_recurrence(torch.zeros(4), b)
    with pytest.raises(TypeError, match="both be real or both complex"):
        linear_recurrence(torch.zeros(3, dtype=torch.complex64), b)
    with pytest.raises(ValueError, match="initial_state"):
        linear_recurrence(torch.zeros(3), b, initial_state=torch.zeros(3))
    with pytest.raises(ValueError, match="no time steps"):
        linear_recurrence(torch.zeros(3), torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match=r"\(B, T, \*channels\)"):
        linear_recurrence(torch.zeros(3), torch.zeros(5, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("fixed", [True, False])
def test_triton_large_shapes_on_gpu(complex_, fixed):
    a, b, h0 = make(4, 4096, (1024,), complex_=complex_, fixed=fixed, dtype=torch.float32, device="cuda")
    h, final = linear_recurrence(a, b, initial_state=h0, return_final_state=True, impl="triton")
    h_ref, final_ref = linear_recurrence_ref(a, b, initial_state=h0)
    torch.testing.assert_close(h, h_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(final, final_ref, atol=1e-4, rtol=1e-4)
    grads = torch.autograd.grad(loss_terms(h, final), (a, b, h0))
    grads_ref = torch.autograd.grad(loss_terms(h_ref, final_ref), (a, b, h0))
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)

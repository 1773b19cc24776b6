"""The Vandermonde product's Triton kernels (S4D's convolution kernel) against the plain
formula in float64: K and the gradients of ΔA and C̄, one and two directions, lengths that
end inside a block and cross several backward stretches, state counts that cross several
state blocks (the interpreter's blocks are 16 steps x 8 states, stretches of 32 steps), and
strided inputs. The dispatcher: Triton only where asked or on CUDA, the chunked torch path
on CPU, the formula under export; shapes checked with the names."""

from __future__ import annotations

import pytest
import torch

from seqzoo.kernels import export_mode
from seqzoo.kernels.vandermonde import vandermonde_kernel, vandermonde_kernel_chunked, vandermonde_kernel_ref
from tests.kernels.grad_checks import DEVICE, needs_triton


def make_inputs(n_dir, H, N, *, dtype=torch.float64, seed=0, decay=0.3, device=DEVICE):
    """ΔA with Re < 0 as S4D's (softplus Δ times -A_re), Im of either sign; C̄ of both signs."""
    g = torch.Generator().manual_seed(seed)
    dta_re = -torch.rand(H, N, generator=g, dtype=torch.float64) * decay
    dta_im = torch.randn(H, N, generator=g, dtype=torch.float64) * 2
    cbar = [torch.randn(n_dir, H, N, generator=g, dtype=torch.float64) for _ in range(2)]
    return [x.to(device=device, dtype=dtype) for x in (dta_re, dta_im, *cbar)]


def outputs(fn, inputs, L, upstream, **kw):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    K = fn(*leaves, L, **kw)
    return [K, *torch.autograd.grad(K, leaves, upstream.to(K.dtype))]


@needs_triton
@pytest.mark.parametrize("n_dir", [1, 2])
@pytest.mark.parametrize("H,N,L", [(2, 5, 37), (3, 12, 70), (1, 1, 1), (2, 17, 16), (1, 8, 129)])
def test_triton_equals_the_formula_with_gradients(n_dir, H, N, L):
    inputs = make_inputs(n_dir, H, N)
    upstream = torch.randn(n_dir, H, L, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(DEVICE)
    got = outputs(vandermonde_kernel, inputs, L, upstream, impl="triton")
    want = outputs(vandermonde_kernel_ref, inputs, L, upstream)
    for name, a, b in zip(("K", "∂Re ΔA", "∂Im ΔA", "∂Re C̄", "∂Im C̄"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


@needs_triton
def test_triton_reads_strided_views():
    """ΔA as transposed views and C̄ as slices of a wider tensor, with their own strides."""
    dta_re, dta_im, cbar_re, cbar_im = make_inputs(2, 3, 6)
    wide = torch.cat([cbar_re, cbar_im], dim=-1)
    views = [dta_re.t().contiguous().t(), dta_im.t().contiguous().t(), wide[..., :6], wide[..., 6:]]
    assert not views[0].is_contiguous() and not views[2].is_contiguous()
    upstream = torch.randn(2, 3, 45, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(DEVICE)
    got = outputs(vandermonde_kernel, views, 45, upstream, impl="triton")
    want = outputs(vandermonde_kernel_ref, [dta_re, dta_im, cbar_re, cbar_im], 45, upstream)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-10)


def assert_as_accurate_as_the_fp32_formula(inputs, L, upstream, tolerance=2.0):
    """fp32 Triton against the float64 formula: no worse than ``tolerance`` times the fp32
    formula's own error (which grows with l |Im ΔA|: the phase l b is rounded), per output."""
    want = outputs(vandermonde_kernel_ref, inputs, L, upstream)
    fp32 = [x.float() for x in inputs]
    got = outputs(vandermonde_kernel, fp32, L, upstream, impl="triton")
    formula = outputs(vandermonde_kernel_ref, fp32, L, upstream)
    for name, a, f, b in zip(("K", "∂Re ΔA", "∂Im ΔA", "∂Re C̄", "∂Im C̄"), got, formula, want):
        assert a.dtype == torch.float32, name
        error, own = ((x.double() - b).abs().max() / b.abs().max() for x in (a, f))
        assert error <= tolerance * own + 1e-6, f"{name}: relative error {error:.2e}, the fp32 formula's {own:.2e}"


@needs_triton
def test_triton_fp32_is_as_accurate_as_the_formula_over_a_long_length():
    """fp32 (what S4D trains in) at L = 2,000 with slow decay: the powers come from tables
    made in torch and one complex product each (measured: 1.3e-5 - 6.1e-5 of the largest
    value, the fp32 formula 1.4e-5 - 3.6e-5)."""
    inputs = make_inputs(2, 2, 10, decay=0.005)
    upstream = torch.randn(2, 2, 2000, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(DEVICE)
    assert_as_accurate_as_the_fp32_formula(inputs, 2000, upstream)


def test_auto_on_cpu_is_the_chunked_torch_path_and_export_the_formula(monkeypatch):
    inputs = make_inputs(1, 2, 4, device="cpu")
    calls = []
    import seqzoo.kernels.vandermonde as package

    for name in ("vandermonde_kernel_chunked", "vandermonde_kernel_ref"):
        original = getattr(package, name)
        monkeypatch.setattr(package, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    K = vandermonde_kernel(*inputs, 9)
    with export_mode():
        K_export = vandermonde_kernel(*inputs, 9)
    assert calls == ["vandermonde_kernel_chunked", "vandermonde_kernel_ref"]
    torch.testing.assert_close(K, K_export, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(K, vandermonde_kernel_chunked(*inputs, 9), atol=0, rtol=0)


@pytest.mark.parametrize("shapes,L,message", [
    (((2, 3), (3, 2), (1, 2, 3), (1, 2, 3)), 5, "ΔA's real and imaginary parts must both be (H, N)"),
    (((2, 3), (2, 3), (1, 3, 2), (1, 3, 2)), 5, "C̄'s parts must both be (dir, H, N) = (dir, 2, 3)"),
    (((2, 3), (2, 3), (3, 2, 3), (3, 2, 3)), 5, "dir (C̄'s first axis) must be 1 or 2"),
    (((2, 3), (2, 3), (1, 2, 3), (1, 2, 3)), 0, "the length L must be >= 1"),
])
def test_bad_shapes_are_named(shapes, L, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        vandermonde_kernel(*(torch.zeros(s, dtype=torch.float64) for s in shapes), L)


@pytest.mark.gpu
@pytest.mark.parametrize("n_dir", [1, 2])
def test_gpu_fp32_at_s4d_sizes_against_the_float64_formula(n_dir):
    """H = 256, N = 32, L = 4,096 in fp32 on the GPU (S4D-Lin's ΔA: Δ = 0.01, A = -1/2 + iπn)."""
    H, N, L = 256, 32, 4096
    n = torch.arange(N, dtype=torch.float64)
    dta_re = torch.full((H, N), -0.5 * 0.01, dtype=torch.float64, device="cuda")
    dta_im = (torch.pi * n * 0.01).expand(H, N).contiguous().cuda()
    g = torch.Generator().manual_seed(0)
    cbar = [torch.randn(n_dir, H, N, generator=g, dtype=torch.float64).cuda() for _ in range(2)]
    inputs = [dta_re, dta_im, *cbar]
    upstream = torch.randn(n_dir, H, L, generator=g, dtype=torch.float64).cuda()
    assert_as_accurate_as_the_fp32_formula(inputs, L, upstream)

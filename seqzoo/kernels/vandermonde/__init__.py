"""The diagonal SSM's convolution kernel (S4D) as a Vandermonde product:

    K[d, h, l] = 2 Re Σ_n C̄[d, h, n] exp(l ΔA[h, n]),   l = 0 .. L-1

with complex numbers as (real, imag) pairs (ONNX has no complex dtype): ΔA (H, N) and
C̄ (dir, H, N), dir = 1 or 2 (a bidirectional layer's two kernels). Gradients of C̄ and ΔA
(for a real loss, g = ∂L/∂K, e = exp(l Re ΔA), cos / sin of l Im ΔA):

    W_c = Σ_l g e cos,  W_s = Σ_l g e sin,  V_c = Σ_l g l e cos,  V_s = Σ_l g l e sin
    ∂Re C̄ = 2 W_c,  ∂Im C̄ = -2 W_s,
    ∂Re ΔA = 2 Σ_d (Re C̄ V_c - Im C̄ V_s),  ∂Im ΔA = -2 Σ_d (Re C̄ V_s + Im C̄ V_c)

* :func:`vandermonde_kernel` -- public op: Triton on CUDA, the chunked torch path on CPU,
  the plain formula under ``torch.export`` / ``torch.compile`` (a symbolic length).
* :func:`vandermonde_kernel_ref` -- the plain formula (autograd keeps about six (H, N, L)
  tensors): the oracle, and what ONNX export traces.
* :func:`vandermonde_kernel_chunked` -- the length in chunks, a backward that recomputes
  (saves only the (H, N) inputs): the CPU path.

The Triton forward runs one program per (h, block of steps), the powers of one block of
states at a time in registers, both directions from the same powers; nothing of (H, N, L)
size exists. The backward runs one program per (h, stretch of the length, block of states)
and writes the four sums W_c, W_s, V_c, V_s per stretch (no atomics: summed in torch, so
results do not depend on the order programs finish); the gradients are formed from them as
above, in torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.kernels.dispatch import is_export_mode, resolve_impl
from seqzoo.kernels.vandermonde.reference import vandermonde_kernel_chunked, vandermonde_kernel_ref

__all__ = ["vandermonde_kernel", "vandermonde_kernel_chunked", "vandermonde_kernel_ref"]

OP = "vandermonde"


def vandermonde_kernel(dta_re: Tensor, dta_im: Tensor, cbar_re: Tensor, cbar_im: Tensor, L: int, *,
                       impl: str = "auto") -> Tensor:
    """K (dir, H, L) from ΔA (H, N) and C̄ (dir, H, N), each as real and imaginary parts."""
    _check_args(dta_re, dta_im, cbar_re, cbar_im, L)
    if is_export_mode() or torch.compiler.is_compiling():
        return vandermonde_kernel_ref(dta_re, dta_im, cbar_re, cbar_im, L)
    if resolve_impl(impl, dta_re, dta_im, cbar_re, cbar_im, op=OP) == "triton":
        from seqzoo.kernels.vandermonde.triton import VandermondeFunction

        return VandermondeFunction.apply(dta_re, dta_im, cbar_re, cbar_im, int(L))
    return vandermonde_kernel_chunked(dta_re, dta_im, cbar_re, cbar_im, L)


def _check_args(dta_re: Tensor, dta_im: Tensor, cbar_re: Tensor, cbar_im: Tensor, L: int) -> None:
    if dta_re.dim() != 2 or dta_im.shape != dta_re.shape:
        raise ValueError(f"{OP}: ΔA's real and imaginary parts must both be (H, N), got "
                         f"{tuple(dta_re.shape)} and {tuple(dta_im.shape)}")
    if cbar_re.dim() != 3 or cbar_im.shape != cbar_re.shape or cbar_re.shape[1:] != dta_re.shape:
        raise ValueError(f"{OP}: C̄'s parts must both be (dir, H, N) = (dir, {', '.join(map(str, dta_re.shape))}), "
                         f"got {tuple(cbar_re.shape)} and {tuple(cbar_im.shape)}")
    if cbar_re.shape[0] not in (1, 2):
        raise ValueError(f"{OP}: dir (C̄'s first axis) must be 1 or 2, got {cbar_re.shape[0]}")
    if isinstance(L, int) and L < 1:
        raise ValueError(f"{OP}: the length L must be >= 1, got {L}")

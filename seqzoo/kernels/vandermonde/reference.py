"""The Vandermonde product in torch (the formulas: :mod:`seqzoo.kernels.vandermonde`): the
plain formula, the oracle and the export path, and the CPU path, computed in chunks of the
length with a backward that recomputes instead of storing.

Autograd through the plain formula (``decay * cos(phase)`` ...) keeps about six (H, N, L)
tensors per layer for the backward: 3 GiB per layer at H = 256, N = 32, L = 16,384 in fp32.
The chunked path walks the length in chunks (at most ``CHUNK_ELEMENTS`` of (H, N, chunk) at
a time) and saves only the (H, N) inputs; the backward's four sums over the length are
batched matrix products per chunk, turned into gradients by
:func:`vandermonde_grads_from_sums` (shared with the Triton path).
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 22  # (H, N, chunk) elements per step on a CPU: 16 MB in fp32
# On a GPU fewer, larger chunks (each chunk is a handful of kernel launches): 128 MB in fp32.
CHUNK_ELEMENTS_GPU = 1 << 25


def vandermonde_kernel_ref(dta_re: Tensor, dta_im: Tensor, cbar_re: Tensor, cbar_im: Tensor, L: int) -> Tensor:
    """K (dir, H, L) by the plain formula; ΔA (H, N), C̄ (dir, H, N) as real and imaginary parts."""
    return _kernel_part(dta_re, dta_im, cbar_re, cbar_im, 0, L)


def vandermonde_kernel_chunked(dta_re: Tensor, dta_im: Tensor, cbar_re: Tensor, cbar_im: Tensor, L: int,
                               chunk: int | None = None) -> Tensor:
    """K (dir, H, L) as :func:`vandermonde_kernel_ref`, in chunks of ``chunk`` steps (default:
    ``CHUNK_ELEMENTS`` / (H N), ``CHUNK_ELEMENTS_GPU`` on a GPU), saving only the inputs for
    the backward."""
    if chunk is None:
        budget = CHUNK_ELEMENTS_GPU if dta_re.device.type == "cuda" else CHUNK_ELEMENTS
        chunk = max(1, budget // max(1, dta_re.numel()))
    return _ChunkedVandermonde.apply(dta_re, dta_im, cbar_re, cbar_im, int(L), int(chunk))


def powers_at(dta_re: Tensor, dta_im: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
    """z^l = exp(l ΔA) at the given steps as (e cos, e sin), each (H, N, len(steps))."""
    decay = torch.exp(dta_re[..., None] * steps)
    phase = dta_im[..., None] * steps
    return decay * torch.cos(phase), decay * torch.sin(phase)


def _powers(dta_re: Tensor, dta_im: Tensor, start, stop) -> tuple[Tensor, Tensor, Tensor]:
    """(steps, e cos, e sin) for l in [start, stop): (chunk,), (H, N, chunk) twice."""
    steps = torch.arange(start, stop, dtype=dta_re.dtype, device=dta_re.device)
    return steps, *powers_at(dta_re, dta_im, steps)


def _kernel_part(dta_re: Tensor, dta_im: Tensor, cbar_re: Tensor, cbar_im: Tensor, start, stop) -> Tensor:
    """K[..., start:stop] by the formula."""
    _, ecos, esin = _powers(dta_re, dta_im, start, stop)
    return 2 * (torch.einsum("dhn,hnl->dhl", cbar_re, ecos) - torch.einsum("dhn,hnl->dhl", cbar_im, esin))


class _ChunkedVandermonde(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dta_re, dta_im, cbar_re, cbar_im, L, chunk):
        ctx.save_for_backward(dta_re, dta_im, cbar_re, cbar_im)
        ctx.L, ctx.chunk = L, chunk
        out = cbar_re.new_empty(*cbar_re.shape[:2], L)
        for start in range(0, L, chunk):
            stop = min(L, start + chunk)
            out[..., start:stop] = _kernel_part(dta_re, dta_im, cbar_re, cbar_im, start, stop)
        return out

    @staticmethod
    def backward(ctx, grad):
        dta_re, dta_im, cbar_re, cbar_im = ctx.saved_tensors
        w_c, w_s = torch.zeros_like(cbar_re), torch.zeros_like(cbar_re)
        v_c, v_s = torch.zeros_like(cbar_re), torch.zeros_like(cbar_re)
        for start in range(0, ctx.L, ctx.chunk):
            stop = min(ctx.L, start + ctx.chunk)
            steps, ecos, esin = _powers(dta_re, dta_im, start, stop)
            g = grad[..., start:stop]
            gl = g * steps
            w_c += torch.einsum("dhl,hnl->dhn", g, ecos)
            w_s += torch.einsum("dhl,hnl->dhn", g, esin)
            v_c += torch.einsum("dhl,hnl->dhn", gl, ecos)
            v_s += torch.einsum("dhl,hnl->dhn", gl, esin)
        return (*vandermonde_grads_from_sums(cbar_re, cbar_im, w_c, w_s, v_c, v_s), None, None)


def vandermonde_grads_from_sums(cbar_re: Tensor, cbar_im: Tensor, w_c: Tensor, w_s: Tensor, v_c: Tensor,
                                v_s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """∂Re ΔA, ∂Im ΔA (H, N), ∂Re C̄, ∂Im C̄ (dir, H, N) from the four sums over the length
    (dir, H, N) (the formulas in the module docstring): shared by the torch and Triton paths."""
    d_re = 2 * (cbar_re * v_c - cbar_im * v_s).sum(0)
    d_im = -2 * (cbar_re * v_s + cbar_im * v_c).sum(0)
    return d_re, d_im, 2 * w_c, -2 * w_s

"""S4's Cauchy kernel at the frequencies of its length, computed in chunks of the
frequencies with a backward that recomputes instead of storing.

    r[i, j, h, k] = Σ_n v[i, j, h, n] R(λ)[h, n, k] + conj(v[i, j, h, n]) R(conj λ)[h, n, k],
    R(λ)[h, n, k] = 2 Δ_h / (2 (1 - ω_k) - (1 + ω_k) Δ_h λ_{h, n})

(the bilinear-discretised resolvent at the roots of unity ω_k; the S4 paper's Cauchy kernel
with its conjugate modes written out). Autograd through the formula keeps the (H, N, K)
resolvents and their intermediates for the backward; here the forward and backward walk the
frequencies in chunks of at most ``CHUNK_ELEMENTS`` (H, N, chunk) values and save only the
inputs. With G = ∂L/∂r (PyTorch's convention for complex tensors), per chunk:

    ∂v = Σ_k G conj(R(λ)) + conj(G) R(conj λ)
    ∂λ = Σ_ij conj(v) Σ_k [G conj(R'(λ)) + conj(G) R'(conj λ)],   R' = R² (1 + ω) / 2
    ∂Δ = Re Σ_ijn Σ_k conj(G) [v ∂_Δ R(λ) + conj(v) ∂_Δ R(conj λ)],   ∂_Δ R = (R + R² (1 + ω) λ / 2) / Δ

every sum over k a batched matrix product. :func:`cauchy_kernel_ref` is the formula under
autograd; the tests compare the two, values and gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.kernels.dispatch import is_export_mode

CHUNK_ELEMENTS = 1 << 21  # (H, N, chunk) complex values per step on a CPU: 16 MB in complex64
# On a GPU fewer, larger chunks (each chunk is a handful of kernel launches): 128 MB in complex64.
CHUNK_ELEMENTS_GPU = 1 << 24


def cauchy_kernel_ref(v: Tensor, lam: Tensor, dt: Tensor, omega: Tensor) -> Tensor:
    """r (I, J, H, K) by the formula: v (I, J, H, N) and λ (H, N) complex, Δ (H,) real, ω (K,)."""
    return (torch.einsum("ijhn,hnk->ijhk", v, _resolvent(lam, dt, omega))
            + torch.einsum("ijhn,hnk->ijhk", v.conj(), _resolvent(lam.conj(), dt, omega)))


def cauchy_kernel(v: Tensor, lam: Tensor, dt: Tensor, omega: Tensor, chunk: int | None = None) -> Tensor:
    """r as :func:`cauchy_kernel_ref`, in chunks of ``chunk`` frequencies (default:
    ``CHUNK_ELEMENTS`` / (H N), ``CHUNK_ELEMENTS_GPU`` on a GPU), saving only the inputs for the backward (ω takes no
    gradient). Under ``torch.export`` / ``torch.compile`` it is the formula."""
    if is_export_mode() or torch.compiler.is_compiling():
        return cauchy_kernel_ref(v, lam, dt, omega)
    if chunk is None:
        budget = CHUNK_ELEMENTS_GPU if lam.device.type == "cuda" else CHUNK_ELEMENTS
        chunk = max(1, budget // max(1, lam.numel()))
    return _ChunkedCauchy.apply(v, lam, dt, omega.detach(), int(chunk))


def _resolvent(lam: Tensor, dt: Tensor, omega: Tensor) -> Tensor:
    """R (H, N, K) = 2Δ / (2(1 - ω) - (1 + ω) Δ λ)."""
    d = dt.to(lam.dtype)[:, None, None]
    return 2 * d / (2 * (1 - omega) - (1 + omega) * d * lam[..., None])


class _ChunkedCauchy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, lam, dt, omega, chunk):
        ctx.save_for_backward(v, lam, dt, omega)
        ctx.chunk = chunk
        out = v.new_empty(*v.shape[:3], omega.shape[0])
        for start in range(0, omega.shape[0], chunk):
            out[..., start:start + chunk] = cauchy_kernel_ref(v, lam, dt, omega[start:start + chunk])
        return out

    @staticmethod
    def backward(ctx, grad):
        v, lam, dt, omega = ctx.saved_tensors
        # Σ_k parts, per (i, j, h, n): ∂v; ∂λ and the two ∂Δ terms before their weights by v
        gv, glam, gdt_1, gdt_2 = (torch.zeros_like(v) for _ in range(4))
        d = dt.to(lam.dtype)[:, None, None]
        for start in range(0, omega.shape[0], ctx.chunk):
            w = omega[start:start + ctx.chunk]
            g = grad[..., start:start + ctx.chunk]
            gc = g.conj()
            half = (1 + w) / 2
            r1, r2 = _resolvent(lam, dt, w), _resolvent(lam.conj(), dt, w)  # R(λ), R(conj λ)
            # holomorphic in v and λ through R(λ); anti-holomorphic through conj(v), R(conj λ)
            gv += torch.einsum("ijhk,hnk->ijhn", g, r1.conj()) + torch.einsum("ijhk,hnk->ijhn", gc, r2)
            glam += (torch.einsum("ijhk,hnk->ijhn", g, (r1 * r1 * half).conj())
                     + torch.einsum("ijhk,hnk->ijhn", gc, r2 * r2 * half))
            gdt_1 += torch.einsum("ijhk,hnk->ijhn", gc, (r1 + r1 * r1 * half * lam[..., None]) / d)
            gdt_2 += torch.einsum("ijhk,hnk->ijhn", gc, (r2 + r2 * r2 * half * lam.conj()[..., None]) / d)
        vc = v.conj()
        gdt = (v * gdt_1 + vc * gdt_2).real.sum((0, 1, 3)).to(dt.dtype)
        return gv, (vc * glam).sum((0, 1)), gdt, None, None

"""Triton kernels of the Vandermonde product (see :mod:`seqzoo.kernels.vandermonde`).

The powers z^l = exp(l ΔA) are products of two small tables made in torch (accurate exp,
cos and sin): z^(l0 + j) = z^l0 · z^j for the first step l0 of each block of BLOCK_L steps
and j < BLOCK_L, so the kernels do complex multiplications and no trigonometry (whose
large-argument reduction needs a stack frame on the GPU) and no (H, N, L) tensor exists.

Forward: one program per (h, block of steps); per block of BLOCK_N states it forms the
(BLOCK_L, BLOCK_N) powers and reduces them over the states for each direction. Backward:
one program per (h, stretch of SPLIT_L steps, block of states), the z^j tile loaded once,
reduces the same tiles over its stretch into W_c, W_s, V_c, V_s; the stretches' sums are
added in torch (a fixed order: the result does not depend on which program ends first) and
:func:`.reference.vandermonde_grads_from_sums` forms the gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, triton_interpreted
from seqzoo.kernels.vandermonde.reference import powers_at, vandermonde_grads_from_sums

_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


def launch_config(N: int) -> dict[str, int]:
    """Block sizes: BLOCK_L steps and BLOCK_N states per tile (4 warps), SPLIT_L steps per
    backward program. Under the interpreter (CPU tests) the blocks are small, so the tests
    cross several state blocks and stretches at small sizes; the code path is the same."""
    if triton_interpreted():
        block_l, block_n, split_blocks = 16, min(8, triton.next_power_of_2(N)), 2
    else:
        block_l, block_n, split_blocks = 64, min(32, triton.next_power_of_2(N)), 8
    return dict(block_l=block_l, block_n=block_n, split_l=block_l * split_blocks, warps=4)


class VandermondeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dta_re: Tensor, dta_im: Tensor, cbar_re: Tensor, cbar_im: Tensor, L: int) -> Tensor:
        ctx.save_for_backward(dta_re, dta_im, cbar_re, cbar_im)
        ctx.L = L
        return _forward(dta_re, dta_im, cbar_re, cbar_im, L)

    @staticmethod
    def backward(ctx, grad: Tensor):
        dta_re, dta_im, cbar_re, cbar_im = ctx.saved_tensors
        sums = _backward_sums(dta_re, dta_im, grad, ctx.L, cbar_re.shape[0])
        acc = sums.dtype
        grads = vandermonde_grads_from_sums(cbar_re.to(acc), cbar_im.to(acc), *sums.unbind(0))
        like = (dta_re, dta_im, cbar_re, cbar_im)
        return (*(g.to(x.dtype) for g, x in zip(grads, like)), None)


def power_tables(dta_re: Tensor, dta_im: Tensor, L: int, block_l: int) -> tuple[Tensor, Tensor]:
    """z^l0 for the first step of each block, (H, n_blocks, N, 2), and z^j for j < block_l,
    (H, block_l, N, 2), as (real, imag) pairs in the accumulation dtype (z = exp(ΔA))."""
    acc = accumulation_dtype(dta_re.dtype)
    a, b = dta_re.detach().to(acc), dta_im.detach().to(acc)

    def table(steps: Tensor) -> Tensor:  # (H, N, len) twice -> (H, len, N, 2)
        return torch.stack(powers_at(a, b, steps), dim=-1).transpose(1, 2).contiguous()

    return (table(torch.arange(0, L, block_l, device=a.device, dtype=acc)),
            table(torch.arange(block_l, device=a.device, dtype=acc)))


def _forward(dta_re: Tensor, dta_im: Tensor, cbar_re: Tensor, cbar_im: Tensor, L: int) -> Tensor:
    n_dir, H, N = cbar_re.shape
    cfg = launch_config(N)
    acc = accumulation_dtype(cbar_re.dtype)
    firsts, within = power_tables(dta_re, dta_im, L, cfg["block_l"])
    out = torch.empty(n_dir, H, L, device=cbar_re.device, dtype=cbar_re.dtype)
    _vandermonde_fwd_kernel[(H, triton.cdiv(L, cfg["block_l"]))](
        firsts, within, cbar_re, cbar_im, out, N, L,
        *firsts.stride()[:3], *within.stride()[:3], *cbar_re.stride(), *cbar_im.stride(), *out.stride(),
        DIR=n_dir, BLOCK_L=cfg["block_l"], BLOCK_N=cfg["block_n"], ACC=_TL_DTYPE[acc], num_warps=cfg["warps"],
    )
    return out


def _backward_sums(dta_re: Tensor, dta_im: Tensor, grad: Tensor, L: int, n_dir: int) -> Tensor:
    """(4, dir, H, N): W_c, W_s, V_c, V_s in the accumulation dtype."""
    H, N = dta_re.shape
    cfg = launch_config(N)
    acc = accumulation_dtype(dta_re.dtype)
    firsts, within = power_tables(dta_re, dta_im, L, cfg["block_l"])
    splits = triton.cdiv(L, cfg["split_l"])
    parts = torch.empty(splits, 4, n_dir, H, N, device=grad.device, dtype=acc)
    _vandermonde_bwd_kernel[(H, splits, triton.cdiv(N, cfg["block_n"]))](
        firsts, within, grad, parts, N, L, cfg["split_l"],
        *firsts.stride()[:3], *within.stride()[:3], *grad.stride(), *parts.stride(),
        DIR=n_dir, BLOCK_L=cfg["block_l"], BLOCK_N=cfg["block_n"], ACC=_TL_DTYPE[acc], num_warps=cfg["warps"],
    )
    return parts.sum(0)


@triton.jit
def _within(wi_ptr, h, offs_j, offs_n, mask_n, s_wi_h, s_wi_j, s_wi_n, ACC: tl.constexpr):
    """z^j (real, imag) for j < BLOCK_L: (BLOCK_L, BLOCK_N) each."""
    ptr = wi_ptr + h * s_wi_h + offs_j[:, None] * s_wi_j + offs_n[None, :] * s_wi_n
    mask = mask_n[None, :]
    return tl.load(ptr, mask=mask, other=0.0).to(ACC), tl.load(ptr + 1, mask=mask, other=0.0).to(ACC)


@triton.jit
def _powers(fi_ptr, h, block, offs_n, mask_n, w_re, w_im, s_fi_h, s_fi_b, s_fi_n, ACC: tl.constexpr):
    """z^(l0 + j) = z^l0 z^j for the block starting at l0: e cos and e sin, (BLOCK_L, BLOCK_N)."""
    ptr = fi_ptr + h * s_fi_h + block * s_fi_b + offs_n * s_fi_n
    f_re = tl.load(ptr, mask=mask_n, other=0.0).to(ACC)
    f_im = tl.load(ptr + 1, mask=mask_n, other=0.0).to(ACC)
    return f_re[None, :] * w_re - f_im[None, :] * w_im, f_re[None, :] * w_im + f_im[None, :] * w_re


@triton.jit
def _coefficients(cr_ptr, ci_ptr, d, h, offs_n, mask_n, s_cr_d, s_cr_h, s_cr_n, s_ci_d, s_ci_h, s_ci_n,
                  ACC: tl.constexpr):
    cr = tl.load(cr_ptr + d * s_cr_d + h * s_cr_h + offs_n * s_cr_n, mask=mask_n, other=0.0).to(ACC)
    ci = tl.load(ci_ptr + d * s_ci_d + h * s_ci_h + offs_n * s_ci_n, mask=mask_n, other=0.0).to(ACC)
    return cr, ci


@triton.jit
def _vandermonde_fwd_kernel(
    fi_ptr, wi_ptr, cr_ptr, ci_ptr, out_ptr, N, L,
    s_fi_h, s_fi_b, s_fi_n, s_wi_h, s_wi_j, s_wi_n, s_cr_d, s_cr_h, s_cr_n, s_ci_d, s_ci_h, s_ci_n,
    s_o_d, s_o_h, s_o_l,
    DIR: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    """K[d, h, l] for one h and BLOCK_L steps, both directions from the same powers."""
    h = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    offs_j = tl.arange(0, BLOCK_L)
    offs_l = block * BLOCK_L + offs_j
    mask_l = offs_l < L
    k0 = tl.zeros((BLOCK_L,), dtype=ACC)
    k1 = tl.zeros((BLOCK_L,), dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        w_re, w_im = _within(wi_ptr, h, offs_j, offs_n, mask_n, s_wi_h, s_wi_j, s_wi_n, ACC)
        ecos, esin = _powers(fi_ptr, h, block, offs_n, mask_n, w_re, w_im, s_fi_h, s_fi_b, s_fi_n, ACC)
        cr, ci = _coefficients(cr_ptr, ci_ptr, 0, h, offs_n, mask_n, s_cr_d, s_cr_h, s_cr_n, s_ci_d, s_ci_h,
                               s_ci_n, ACC)
        k0 += tl.sum(cr[None, :] * ecos - ci[None, :] * esin, axis=1)
        if DIR == 2:
            cr, ci = _coefficients(cr_ptr, ci_ptr, 1, h, offs_n, mask_n, s_cr_d, s_cr_h, s_cr_n, s_ci_d, s_ci_h,
                                   s_ci_n, ACC)
            k1 += tl.sum(cr[None, :] * ecos - ci[None, :] * esin, axis=1)
    out = out_ptr + h * s_o_h + offs_l * s_o_l
    tl.store(out, (2.0 * k0).to(out_ptr.dtype.element_ty), mask=mask_l)
    if DIR == 2:
        tl.store(out + s_o_d, (2.0 * k1).to(out_ptr.dtype.element_ty), mask=mask_l)


@triton.jit
def _length_sums(g_ptr, d, h, offs_l, mask_l, steps, ecos, esin, s_g_d, s_g_h, s_g_l, ACC: tl.constexpr):
    """One direction's contributions of BLOCK_L steps to W_c, W_s, V_c, V_s (BLOCK_N each)."""
    g = tl.load(g_ptr + d * s_g_d + h * s_g_h + offs_l * s_g_l, mask=mask_l, other=0.0).to(ACC)
    gl = g * steps
    return (tl.sum(g[:, None] * ecos, axis=0), tl.sum(g[:, None] * esin, axis=0),
            tl.sum(gl[:, None] * ecos, axis=0), tl.sum(gl[:, None] * esin, axis=0))


@triton.jit
def _store_sums(part_ptr, d, h, offs_n, mask_n, w_c, w_s, v_c, v_s, s_p_k, s_p_d, s_p_h, s_p_n):
    base = part_ptr + d * s_p_d + h * s_p_h + offs_n * s_p_n
    tl.store(base, w_c, mask=mask_n)
    tl.store(base + s_p_k, w_s, mask=mask_n)
    tl.store(base + 2 * s_p_k, v_c, mask=mask_n)
    tl.store(base + 3 * s_p_k, v_s, mask=mask_n)


@triton.jit
def _vandermonde_bwd_kernel(
    fi_ptr, wi_ptr, g_ptr, part_ptr, N, L, SPLIT_L,
    s_fi_h, s_fi_b, s_fi_n, s_wi_h, s_wi_j, s_wi_n, s_g_d, s_g_h, s_g_l, s_p_s, s_p_k, s_p_d, s_p_h, s_p_n,
    DIR: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    """W_c, W_s, V_c, V_s over one stretch of the length for one h and BLOCK_N states."""
    h = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_j = tl.arange(0, BLOCK_L)
    w_re, w_im = _within(wi_ptr, h, offs_j, offs_n, mask_n, s_wi_h, s_wi_j, s_wi_n, ACC)
    start = split * SPLIT_L
    stop = tl.minimum(L, start + SPLIT_L)
    w_c0 = tl.zeros((BLOCK_N,), dtype=ACC)
    w_s0 = tl.zeros((BLOCK_N,), dtype=ACC)
    v_c0 = tl.zeros((BLOCK_N,), dtype=ACC)
    v_s0 = tl.zeros((BLOCK_N,), dtype=ACC)
    w_c1 = tl.zeros((BLOCK_N,), dtype=ACC)
    w_s1 = tl.zeros((BLOCK_N,), dtype=ACC)
    v_c1 = tl.zeros((BLOCK_N,), dtype=ACC)
    v_s1 = tl.zeros((BLOCK_N,), dtype=ACC)
    for l0 in range(start, stop, BLOCK_L):
        offs_l = l0 + offs_j
        mask_l = offs_l < stop
        steps = offs_l.to(ACC)
        ecos, esin = _powers(fi_ptr, h, l0 // BLOCK_L, offs_n, mask_n, w_re, w_im, s_fi_h, s_fi_b, s_fi_n, ACC)
        a, b, c, e = _length_sums(g_ptr, 0, h, offs_l, mask_l, steps, ecos, esin, s_g_d, s_g_h, s_g_l, ACC)
        w_c0, w_s0, v_c0, v_s0 = w_c0 + a, w_s0 + b, v_c0 + c, v_s0 + e
        if DIR == 2:
            a, b, c, e = _length_sums(g_ptr, 1, h, offs_l, mask_l, steps, ecos, esin, s_g_d, s_g_h, s_g_l, ACC)
            w_c1, w_s1, v_c1, v_s1 = w_c1 + a, w_s1 + b, v_c1 + c, v_s1 + e
    part = part_ptr + split * s_p_s
    _store_sums(part, 0, h, offs_n, mask_n, w_c0, w_s0, v_c0, v_s0, s_p_k, s_p_d, s_p_h, s_p_n)
    if DIR == 2:
        _store_sums(part, 1, h, offs_n, mask_n, w_c1, w_s1, v_c1, v_s1, s_p_k, s_p_d, s_p_h, s_p_n)

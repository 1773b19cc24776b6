"""The diagonal linear recurrence in Triton: the chunked scan kernel (forward and adjoint) and its autograd.Function.

Imported only when Triton imports (the dispatcher checks :func:`seqzoo.kernels.dispatch.triton_available`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, sm_count


BLOCK_CHANNELS = 256
"""Channels per program (one contiguous, coalesced load per time step)."""

MIN_CHUNK = 16
"""Shortest time chunk a program scans when time is split for parallelism."""


class LinearRecurrenceFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None):
        acc = accumulation_dtype(b.dtype)
        start = h0.to(acc) if h0 is not None else torch.zeros((b.shape[0], *b.shape[2:]), dtype=acc, device=b.device)
        h = torch.empty_like(b, memory_format=torch.contiguous_format)
        ends = _chunked_scan(a.contiguous(), b.contiguous(), start, h, adjoint=False)
        ctx.save_for_backward(a, h, h0)
        return h, ends[:, -1]

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_final: Tensor):
        a, h, h0 = ctx.saved_tensors
        a_fixed = a.dim() == h.dim() - 2
        grad_b = torch.empty_like(h, memory_format=torch.contiguous_format)
        grad_a = None if a_fixed else torch.empty_like(h, memory_format=torch.contiguous_format)
        ends, grad_a_parts = _chunked_scan(
            a.contiguous(), grad_h.contiguous(), grad_final.to(accumulation_dtype(h.dtype)).contiguous(), grad_b,
            adjoint=True, h=h, h0=h0, grad_a=grad_a,
        )
        if a_fixed:
            grad_a = grad_a_parts.sum((0, 1))
        grad_h0 = ends[:, 0].to(h0.dtype) if h0 is not None else None
        return grad_a.to(a.dtype), grad_b, grad_h0


def _chunked_scan(a, b, start, out, *, adjoint, h=None, h0=None, grad_a=None, chunks=None):
    """Run the recurrence (``adjoint=False``: h_t = a_t h_{t-1} + b_t forwards in time, into
    ``out``) or its adjoint (``adjoint=True``: λ_t = b_t + conj(a_{t+1}) λ_{t+1} backwards,
    ``b`` holding the output gradient, λ into ``out``, ∂a from the saved ``h``).

    Time is cut into chunks when batch × channel blocks alone cannot fill the device: a
    summary pass gives each chunk's end state from zero and its transition product, a
    sequential pass over chunks (this function again, with one chunk) gives the state
    entering each chunk, and the output pass rescans every chunk from it. Returns the
    state after each chunk (B, n_chunks, *channels) in processing order's terms: its last
    chunk holds the final state (forwards) and its first the gradient of h_{-1} (adjoint);
    with ``adjoint`` also the per-chunk partial sums of ∂a for a fixed ``a``.
    """
    B, T = b.shape[:2]
    channels = b.shape[2:]
    D = int(torch.Size(channels).numel())
    acc = start.dtype
    a_fixed = a.dim() == b.dim() - 2
    n = chunks or _num_chunks(T, B, D, b.device)
    chunk = triton.cdiv(T, n)
    n = triton.cdiv(T, chunk)
    grid = (triton.cdiv(D, BLOCK_CHANNELS), n, B)
    flags = dict(A_FIXED=a_fixed, COMPLEX=b.is_complex(), ACC=_tl_acc(b.dtype), BLOCK_D=BLOCK_CHANNELS,
                 ADJOINT=adjoint, HAS_H0=h0 is not None)
    if n > 1:
        ends = torch.empty((B, n, *channels), dtype=acc, device=b.device)
        products = torch.empty_like(ends)
        a_, b_ = _planes(a), _planes(b)
        _chunk_scan_kernel[grid](a_, b_, b_, b_, _planes(ends), _planes(products), b_, b_, b_, T, D, chunk,
                                 SUMMARY=True, **flags)
        if adjoint:  # chunks are processed from the last one
            ends, products = ends.flip(1), products.flip(1)
        after = torch.empty_like(ends)  # the state after each chunk, sequentially over chunks
        _chunked_scan(products.contiguous(), ends.contiguous(), start, after, adjoint=False, chunks=1)
        enters = torch.cat([start[:, None], after[:, :-1]], dim=1)
        if adjoint:
            enters = enters.flip(1)
    else:
        enters = start[:, None]
    enters = _planes(enters.contiguous())
    ends = torch.empty((B, n, *channels), dtype=acc, device=b.device)
    grad_a_parts = torch.empty_like(ends) if adjoint and a_fixed else None
    h_c = _planes(h if h is not None else b)  # (a placeholder when unused)
    _chunk_scan_kernel[grid](
        _planes(a), _planes(b), enters, _planes(out), _planes(ends), _planes(ends), h_c,
        _planes(h0.to(acc).contiguous()) if h0 is not None else h_c,
        _planes(grad_a if grad_a is not None else grad_a_parts) if adjoint else h_c,
        T, D, chunk, SUMMARY=False, **flags,
    )
    return (ends, grad_a_parts) if adjoint else ends


def _num_chunks(T: int, rows: int, D: int, device: torch.device) -> int:
    """Time chunks per sequence: enough programs to fill the device (4 per SM), none when
    batch × channel blocks already do. Depends on the parallelism, not on tuning by T."""
    programs = rows * triton.cdiv(D, BLOCK_CHANNELS)
    target = 4 * sm_count(device, cpu_default=4)  # 16 programs under the interpreter
    if programs >= target or T < 2 * MIN_CHUNK:
        return 1
    return min(T // MIN_CHUNK, triton.cdiv(target, programs))


def _planes(x: Tensor) -> Tensor:
    """Complex tensors as interleaved real/imag planes (a view); real tensors unchanged."""
    return torch.view_as_real(x) if x.is_complex() else x


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype in (torch.float64, torch.complex128) else tl.float32


@triton.jit(do_not_specialize=["T", "CHUNK"])
def _chunk_scan_kernel(
    a_ptr, b_ptr, enter_ptr, out_ptr, end_ptr, prod_ptr, h_ptr, h0_ptr, ga_ptr, T, D, CHUNK,
    SUMMARY: tl.constexpr, ADJOINT: tl.constexpr, A_FIXED: tl.constexpr, HAS_H0: tl.constexpr,
    COMPLEX: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One (channel block, time chunk, batch row). Forwards: s <- a s + b, out = s. Adjoint,
    backwards in time: λ = b + s, out = λ, ∂a = λ conj(h_{t-1}), s <- conj(a) λ.
    SUMMARY: start from zero, write only the end state and the product of the a's."""
    W: tl.constexpr = 2 if COMPLEX else 1
    pid_d = tl.program_id(0)
    c = tl.program_id(1)
    n_chunks = tl.num_programs(1)
    row = tl.program_id(2).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    live = d < D
    lo = c * CHUNK
    steps = tl.minimum(CHUNK, T - lo)
    chunk_off = ((row * n_chunks + c) * D + d) * W
    s_re = tl.zeros([BLOCK_D], dtype=ACC)
    s_im = tl.zeros([BLOCK_D], dtype=ACC)
    p_re = tl.zeros([BLOCK_D], dtype=ACC) + 1.0
    p_im = tl.zeros([BLOCK_D], dtype=ACC)
    ga_re = tl.zeros([BLOCK_D], dtype=ACC)
    ga_im = tl.zeros([BLOCK_D], dtype=ACC)
    a_re = tl.zeros([BLOCK_D], dtype=ACC)
    a_im = tl.zeros([BLOCK_D], dtype=ACC)
    if not SUMMARY:
        s_re = tl.load(enter_ptr + chunk_off, mask=live, other=0.0).to(ACC)
        if COMPLEX:
            s_im = tl.load(enter_ptr + chunk_off + 1, mask=live, other=0.0).to(ACC)
    if A_FIXED:
        a_re = tl.load(a_ptr + d * W, mask=live, other=0.0).to(ACC)
        if COMPLEX:
            a_im = tl.load(a_ptr + d * W + 1, mask=live, other=0.0).to(ACC)
    for i in tl.range(0, steps, num_stages=3):  # loads run ahead of the recurrence
        if ADJOINT:
            t = lo + steps - 1 - i
        else:
            t = lo + i
        off = ((row * T + t) * D + d) * W
        if not A_FIXED:
            a_re = tl.load(a_ptr + off, mask=live, other=0.0).to(ACC)
            if COMPLEX:
                a_im = tl.load(a_ptr + off + 1, mask=live, other=0.0).to(ACC)
        b_re = tl.load(b_ptr + off, mask=live, other=0.0).to(ACC)
        b_im = tl.zeros([BLOCK_D], dtype=ACC)
        if COMPLEX:
            b_im = tl.load(b_ptr + off + 1, mask=live, other=0.0).to(ACC)
        if ADJOINT:
            lam_re = b_re + s_re
            lam_im = b_im + s_im
            if not SUMMARY:
                tl.store(out_ptr + off, lam_re.to(out_ptr.dtype.element_ty), mask=live)
                if COMPLEX:
                    tl.store(out_ptr + off + 1, lam_im.to(out_ptr.dtype.element_ty), mask=live)
                prev = off - D * W
                has_prev = live & (t > 0)
                if HAS_H0:
                    hp_re = tl.where(t > 0, tl.load(h_ptr + prev, mask=has_prev, other=0.0),
                                     tl.load(h0_ptr + (row * D + d) * W, mask=live, other=0.0)).to(ACC)
                else:
                    hp_re = tl.load(h_ptr + prev, mask=has_prev, other=0.0).to(ACC)
                hp_im = tl.zeros([BLOCK_D], dtype=ACC)
                if COMPLEX:
                    if HAS_H0:
                        hp_im = tl.where(t > 0, tl.load(h_ptr + prev + 1, mask=has_prev, other=0.0),
                                         tl.load(h0_ptr + (row * D + d) * W + 1, mask=live, other=0.0)).to(ACC)
                    else:
                        hp_im = tl.load(h_ptr + prev + 1, mask=has_prev, other=0.0).to(ACC)
                da_re = lam_re * hp_re + lam_im * hp_im  # λ conj(h_{t-1})
                da_im = lam_im * hp_re - lam_re * hp_im
                if A_FIXED:
                    ga_re += da_re
                    ga_im += da_im
                else:
                    tl.store(ga_ptr + off, da_re.to(ga_ptr.dtype.element_ty), mask=live)
                    if COMPLEX:
                        tl.store(ga_ptr + off + 1, da_im.to(ga_ptr.dtype.element_ty), mask=live)
            s_re = a_re * lam_re + a_im * lam_im  # conj(a) λ
            s_im = a_re * lam_im - a_im * lam_re
            if SUMMARY:
                new_re = a_re * p_re + a_im * p_im
                p_im = a_re * p_im - a_im * p_re
                p_re = new_re
        else:
            new_re = a_re * s_re - a_im * s_im + b_re
            s_im = a_re * s_im + a_im * s_re + b_im
            s_re = new_re
            if SUMMARY:
                new_re = a_re * p_re - a_im * p_im
                p_im = a_re * p_im + a_im * p_re
                p_re = new_re
            else:
                tl.store(out_ptr + off, s_re.to(out_ptr.dtype.element_ty), mask=live)
                if COMPLEX:
                    tl.store(out_ptr + off + 1, s_im.to(out_ptr.dtype.element_ty), mask=live)
    tl.store(end_ptr + chunk_off, s_re.to(end_ptr.dtype.element_ty), mask=live)
    if COMPLEX:
        tl.store(end_ptr + chunk_off + 1, s_im.to(end_ptr.dtype.element_ty), mask=live)
    if SUMMARY:
        tl.store(prod_ptr + chunk_off, p_re.to(prod_ptr.dtype.element_ty), mask=live)
        if COMPLEX:
            tl.store(prod_ptr + chunk_off + 1, p_im.to(prod_ptr.dtype.element_ty), mask=live)
    if ADJOINT and A_FIXED and not SUMMARY:
        tl.store(ga_ptr + chunk_off, ga_re.to(ga_ptr.dtype.element_ty), mask=live)
        if COMPLEX:
            tl.store(ga_ptr + chunk_off + 1, ga_im.to(ga_ptr.dtype.element_ty), mask=live)

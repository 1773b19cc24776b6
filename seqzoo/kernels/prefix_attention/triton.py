"""Aaren's prefix attention in Triton: segment and carry kernels, forward and backward, and their autograd.Function.

Imported only when Triton imports (the dispatcher checks :func:`seqzoo.kernels.dispatch.triton_available`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqzoo.kernels.dispatch import accumulation_dtype, dot_precision, sm_count
from seqzoo.kernels.prefix_attention.reference import _finite, identity_state


SEGMENT_WARPS = 8
"""Warps of the segment kernels, every dtype: at 4, the 16-bit output passes needed all 255
registers on sm_80 (compile gate), leaving one block per SM scheduler."""


def max_chunk(dtype: torch.dtype) -> int:
    """Tokens per chunk in the Triton kernels (a larger ``chunk_size`` is cut to this): 64 for
    16-bit values, 32 for fp32 and fp64, so that the (chunk, chunk) weights and the (chunk, 64)
    value tiles fit in registers on sm_80 / sm_90 (compile gate: at 64 with tf32x3 products,
    fp32 spilled 384-576 B per thread on sm_80)."""
    return 32 if dtype in (torch.float32, torch.float64) else 64


class PrefixAttentionFunction(torch.autograd.Function):
    """Segmented prefix scan in Triton; backward from the saved output and log-normaliser."""

    @staticmethod
    def forward(ctx, s, v, m0, u0, w0, chunk_size):
        B, T, H, D = v.shape
        chunk_size = min(chunk_size, max_chunk(v.dtype))
        s, v = s.contiguous(), v.contiguous()
        sdt = accumulation_dtype(v.dtype)
        has_init = m0 is not None
        if has_init:
            init = tuple(x.detach().to(sdt).contiguous() for x in (m0, u0, w0))
        else:
            init = identity_state(B, H, D, device=v.device, dtype=sdt)
        layout = _Layout(B, T, H, D, chunk_size, v.device)
        o = torch.empty_like(v)
        lse = torch.empty(B, T, H, device=v.device, dtype=sdt)
        final = tuple(torch.empty_like(x) for x in init)
        carry = _forward_carries(s, v, init, layout)
        _prefix_forward_segment_kernel[layout.grid](
            s, v, *carry, o, lse, *final, T, layout.segment_chunks,
            H=H, D=D, BT=chunk_size, BD=layout.block_d, OUTPUT=True, PREC=dot_precision(v.dtype),
            num_warps=SEGMENT_WARPS,
        )
        ctx.save_for_backward(s, v, o, lse, *init, *final)
        ctx.has_init, ctx.chunk_size = has_init, chunk_size
        ctx.init_dtypes = tuple(x.dtype for x in (m0, u0, w0)) if has_init else None
        ctx.set_materialize_grads(False)
        return (o, *final)

    @staticmethod
    def backward(ctx, d_o, d_m, d_u, d_w):
        s, v, o, lse, m0, u0, w0, m_T, u_T, w_T = ctx.saved_tensors
        B, T, H, D = v.shape
        sdt = lse.dtype
        layout = _Layout(B, T, H, D, ctx.chunk_size, v.device)
        d_o = torch.zeros_like(v) if d_o is None else d_o.contiguous()
        delta = (d_o.to(sdt) * o.to(sdt)).sum(-1).contiguous()  # dO_t · o_t
        # the final state is a pseudo-output at level m_T: "dO" = dw_T, "dO · o" = -du_T
        end_r = torch.zeros(B, H, D, device=v.device, dtype=sdt) if d_w is None else d_w.to(sdt).contiguous()
        end_rho = torch.zeros(B, H, device=v.device, dtype=sdt) if d_u is None else -d_u.to(sdt)
        # the level of a reverse carry is +inf where it carries nothing (see _carry_level)
        if d_w is None and d_u is None:
            end_level = torch.full_like(m_T, float("inf"))
        else:
            end_level = m_T.masked_fill(torch.isneginf(m_T), float("inf"))
        carry = _backward_carries(lse, d_o, delta, (end_r, end_rho.contiguous(), end_level), layout)
        dv = torch.empty_like(v)
        ds_parts = torch.empty(layout.n_d_blocks, B, T, H, device=v.device, dtype=sdt)
        r_first = torch.empty(B, H, D, device=v.device, dtype=sdt)
        rho_first = torch.empty(B, H, device=v.device, dtype=sdt)
        _prefix_backward_segment_kernel[layout.grid](
            s, v, lse, d_o, delta, *carry, dv, ds_parts, r_first, rho_first, T, layout.segment_chunks,
            H=H, D=D, BT=ctx.chunk_size, BD=layout.block_d, OUTPUT=True, PREC=dot_precision(v.dtype),
            num_warps=SEGMENT_WARPS,
        )
        ds = ds_parts.sum(dim=0)
        # m_T = max(m0, max_t s_t) also moves u_T and w_T: route that gradient to the argmax
        to_max = _max_gradient(d_m, d_u, d_w, u_T, w_T)
        d_init = [None, None, None]
        if to_max is not None:
            s_max, arg = s.to(sdt).max(dim=1)
            from_scores = s_max >= m0
            ds.scatter_add_(1, arg[:, None], (to_max * from_scores)[:, None])
        if ctx.has_init:
            f0 = torch.exp(m0 - _finite(lse[:, 0])).masked_fill(torch.isneginf(m0), 0.0)  # e^{m0 - lse_0}
            d_w0 = f0[..., None] * r_first
            d_u0 = -f0 * rho_first
            d_m0 = f0 * ((w0 * r_first).sum(-1) - u0 * rho_first)
            if to_max is not None:
                d_m0 = d_m0 + to_max * ~from_scores
            d_init = [g.to(dt) for g, dt in zip((d_m0, d_u0, d_w0), ctx.init_dtypes)]
        return ds.to(s.dtype), dv, *d_init, None


def _max_gradient(d_m, d_u, d_w, u_T, w_T):
    """dL/dm_T in total: dm_T - du_T · u_T - dw_T · w_T (None when the final state is unused)."""
    if d_m is None and d_u is None and d_w is None:
        return None
    total = torch.zeros_like(u_T) if d_m is None else d_m.to(u_T.dtype).clone()
    if d_u is not None:
        total = total - d_u.to(u_T.dtype) * u_T
    if d_w is not None:
        total = total - (d_w.to(w_T.dtype) * w_T).sum(-1)
    return total


class _Layout:
    """Chunks of ``chunk_size`` grouped into segments; segments and D-tiles run in parallel."""

    def __init__(self, B, T, H, D, chunk_size, device):
        self.block_d = max(16, min(64, triton.next_power_of_2(D)))
        self.n_d_blocks = triton.cdiv(D, self.block_d)
        n_chunks = triton.cdiv(T, chunk_size)
        self.segment_chunks = _segment_chunks(n_chunks, B * H * self.n_d_blocks, device)
        self.n_segments = triton.cdiv(n_chunks, self.segment_chunks)
        self.grid = (self.n_segments, B * H, self.n_d_blocks)
        self.B, self.H, self.D, self.T, self.chunk_size = B, H, D, T, chunk_size


def _segment_chunks(n_chunks: int, parallel: int, device: torch.device) -> int:
    """Chunks per segment: enough segments to give every SM a few programs."""
    sms = sm_count(device, cpu_default=1)
    n_segments = max(1, min(n_chunks, -(-4 * sms // parallel)))
    return -(-n_chunks // n_segments)


def _forward_carries(s, v, init, layout):
    """The state entering each segment (B·H, NS[, D]): segment totals, then a short scan."""
    B, H, D = layout.B, layout.H, layout.D
    NS = layout.n_segments
    sdt = init[0].dtype
    carry = (torch.empty(B * H, NS, device=v.device, dtype=sdt), torch.empty(B * H, NS, device=v.device, dtype=sdt),
             torch.empty(B * H, NS, D, device=v.device, dtype=sdt))
    if NS == 1:
        for dst, src in zip(carry, init):
            dst.copy_(src.reshape(dst.shape))
        return carry
    totals = tuple(torch.empty_like(x) for x in carry)
    _prefix_forward_segment_kernel[layout.grid](
        s, v, *totals, v, totals[0], *totals, layout.T, layout.segment_chunks,
        H=H, D=D, BT=layout.chunk_size, BD=layout.block_d, OUTPUT=False, PREC=dot_precision(v.dtype),
            num_warps=SEGMENT_WARPS,
    )
    _prefix_forward_carry_kernel[(B * H, layout.n_d_blocks)](
        *totals, *init, *carry, NS, D=D, BD=layout.block_d,
    )
    return carry


def _backward_carries(lse, d_o, delta, end, layout):
    """(R, ρ, level) entering each segment from its right, scanning segment totals in reverse."""
    B, H, D = layout.B, layout.H, layout.D
    NS = layout.n_segments
    sdt = lse.dtype
    carry = (torch.empty(B * H, NS, D, device=lse.device, dtype=sdt),
             torch.empty(B * H, NS, device=lse.device, dtype=sdt),
             torch.empty(B * H, NS, device=lse.device, dtype=sdt))
    if NS == 1:
        for dst, src in zip(carry, end):
            dst.copy_(src.reshape(dst.shape))
        return carry
    totals = tuple(torch.empty_like(x) for x in carry[:2])
    _prefix_backward_segment_kernel[layout.grid](
        lse, d_o, lse, d_o, delta, *carry, d_o, lse, *totals, layout.T, layout.segment_chunks,
        H=H, D=D, BT=layout.chunk_size, BD=layout.block_d, OUTPUT=False, PREC=dot_precision(d_o.dtype),
            num_warps=SEGMENT_WARPS,
    )
    _prefix_backward_carry_kernel[(B * H, layout.n_d_blocks)](
        *totals, lse, *end, *carry, layout.T, NS, layout.segment_chunks * layout.chunk_size,
        H=H, D=D, BD=layout.block_d,
    )
    return carry


@triton.jit
def _exp_below_tl(x, m):
    """exp(x - m), taking m = 0 where m = -inf (x <= m, so then exp(-inf) = 0)."""
    return tl.exp(x - tl.where(m == float("-inf"), 0.0, m))

@triton.jit
def _combine_chunk(m, u, w, s, v):
    """(m, u, w) ⊕ the chunk's leaves (s_i, 1, v_i): a (BT,) and v (BT, BD)."""
    m_new = tl.maximum(m, tl.max(s, axis=0))
    p = _exp_below_tl(s, m_new)
    f = _exp_below_tl(m, m_new)
    return m_new, u * f + tl.sum(p, axis=0), w * f + tl.sum(p[:, None] * v.to(p.dtype), axis=0)

@triton.jit(do_not_specialize=["T", "segment_chunks"])
def _prefix_forward_segment_kernel(
    s_ptr, v_ptr, m_in_ptr, u_in_ptr, w_in_ptr, o_ptr, lse_ptr, m_out_ptr, u_out_ptr, w_out_ptr,
    T, segment_chunks,
    H: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, OUTPUT: tl.constexpr,
    PREC: tl.constexpr,
):
    """One segment of one head and D-tile.

    OUTPUT=False: the segment's total from the identity -> (m, u, w)_out[segment].
    OUTPUT=True: from the carry (m, u, w)_in[segment], write o and lse per token; the
    last segment writes the final state to (m, u, w)_out.
    """
    i_seg, i_bh, i_d = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_batch, i_head = i_bh // H, i_bh % H
    n_segments = tl.num_programs(0)
    offs_t = tl.arange(0, BT)
    offs_d = i_d * BD + tl.arange(0, BD)
    d_ok = offs_d < D
    causal = offs_t[None, :] <= offs_t[:, None]
    carry_at = i_bh * n_segments + i_seg
    sdt = lse_ptr.dtype.element_ty
    if OUTPUT:
        m = tl.load(m_in_ptr + carry_at)
        u = tl.load(u_in_ptr + carry_at)
        w = tl.load(w_in_ptr + carry_at * D + offs_d, mask=d_ok, other=0.0)
    else:
        m = tl.full([], float("-inf"), sdt)
        u = tl.zeros([], sdt)
        w = tl.zeros([BD], sdt)
    first = i_seg * segment_chunks * BT
    last = tl.minimum(first + segment_chunks * BT, T)
    for t0 in tl.range(first, last, BT, num_stages=2):
        valid = t0 + offs_t < T
        rows = i_batch * T + t0 + offs_t
        s = tl.load(s_ptr + rows * H + i_head, mask=valid, other=float("-inf")).to(sdt)
        v = tl.load(v_ptr + (rows[:, None] * H + i_head) * D + offs_d[None, :],
                    mask=valid[:, None] & d_ok[None, :], other=0.0)
        if OUTPUT:
            running = tl.maximum(m, tl.max(tl.where(causal, s[None, :], float("-inf")), axis=1))  # (BT,)
            p = tl.where(causal, _exp_below_tl(s[None, :], running[:, None]), 0.0)  # (BT, BT)
            f = _exp_below_tl(m, running)
            u_t = u * f + tl.sum(p, axis=1)
            w_t = f[:, None] * w[None, :] + tl.dot(p.to(v.dtype), v, input_precision=PREC).to(sdt)
            o = w_t / tl.where(u_t > 0, u_t, 1.0)[:, None]
            tl.store(o_ptr + (rows[:, None] * H + i_head) * D + offs_d[None, :], o.to(v.dtype),
                     mask=valid[:, None] & d_ok[None, :])
            if i_d == 0:
                log_u = tl.where(u_t > 0, tl.log(tl.where(u_t > 0, u_t, 1.0)), float("-inf"))
                tl.store(lse_ptr + rows * H + i_head, running + log_u, mask=valid)
        m, u, w = _combine_chunk(m, u, w, s, v)
    if OUTPUT:
        if i_seg == n_segments - 1:
            _store_state(m_out_ptr, u_out_ptr, w_out_ptr, i_bh, m, u, w, offs_d, i_d == 0, D)
    else:
        _store_state(m_out_ptr, u_out_ptr, w_out_ptr, carry_at, m, u, w, offs_d, i_d == 0, D)

@triton.jit
def _carry_level(lse):
    """The level a reverse carry is measured at; +inf for a -inf lse (the carry is then 0),
    so that exp(lse_i - level) is never exp(inf)."""
    return tl.where(lse == float("-inf"), float("inf"), lse)

@triton.jit
def _store_state(m_ptr, u_ptr, w_ptr, at, m, u, w, offs_d, with_scalars, D: tl.constexpr):
    if with_scalars:
        tl.store(m_ptr + at, m)
        tl.store(u_ptr + at, u)
    tl.store(w_ptr + at * D + offs_d, w, mask=offs_d < D)

@triton.jit(do_not_specialize=["n_segments"])
def _prefix_forward_carry_kernel(
    m_tot_ptr, u_tot_ptr, w_tot_ptr, m0_ptr, u0_ptr, w0_ptr, m_in_ptr, u_in_ptr, w_in_ptr, n_segments,
    D: tl.constexpr, BD: tl.constexpr,
):
    """Exclusive scan of the segment totals from the initial state: the carry into each segment."""
    i_bh, i_d = tl.program_id(0), tl.program_id(1)
    offs_d = i_d * BD + tl.arange(0, BD)
    d_ok = offs_d < D
    m = tl.load(m0_ptr + i_bh)
    u = tl.load(u0_ptr + i_bh)
    w = tl.load(w0_ptr + i_bh * D + offs_d, mask=d_ok, other=0.0)
    for i_seg in range(n_segments):
        at = i_bh * n_segments + i_seg
        if i_d == 0:
            tl.store(m_in_ptr + at, m)
            tl.store(u_in_ptr + at, u)
        tl.store(w_in_ptr + at * D + offs_d, w, mask=d_ok)
        m_b = tl.load(m_tot_ptr + at)
        u_b = tl.load(u_tot_ptr + at)
        w_b = tl.load(w_tot_ptr + at * D + offs_d, mask=d_ok, other=0.0)
        m_new = tl.maximum(m, m_b)
        f_a, f_b = _exp_below_tl(m, m_new), _exp_below_tl(m_b, m_new)
        m, u, w = m_new, u * f_a + u_b * f_b, w * f_a + w_b * f_b

@triton.jit(do_not_specialize=["T", "segment_chunks"])
def _prefix_backward_segment_kernel(
    s_ptr, v_ptr, lse_ptr, do_ptr, delta_ptr, r_in_ptr, rho_in_ptr, level_in_ptr, dv_ptr, ds_ptr,
    r_out_ptr, rho_out_ptr, T, segment_chunks,
    H: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, OUTPUT: tl.constexpr,
    PREC: tl.constexpr,
):
    """One segment, chunks in reverse, of R_i = Σ_{t>=i} dO_t exp(lse_i - lse_t) (and ρ with dO·o).

    OUTPUT=False: the segment's own total at its first token -> (R, ρ)_out[segment].
    OUTPUT=True: from the carry (R, ρ, level)_in[segment] write dv, the D-tile's part of
    ds, and (segment 0) R and ρ at token 0 for the initial state's gradient.
    """
    i_seg, i_bh, i_d = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_batch, i_head = i_bh // H, i_bh % H
    n_segments = tl.num_programs(0)
    offs_t = tl.arange(0, BT)
    offs_d = i_d * BD + tl.arange(0, BD)
    d_ok = offs_d < D
    causal = offs_t[None, :] >= offs_t[:, None]  # [i, t]: t >= i
    carry_at = i_bh * n_segments + i_seg
    sdt = lse_ptr.dtype.element_ty
    if OUTPUT:
        r = tl.load(r_in_ptr + carry_at * D + offs_d, mask=d_ok, other=0.0)
        rho = tl.load(rho_in_ptr + carry_at)
        level = tl.load(level_in_ptr + carry_at)
    else:
        r = tl.zeros([BD], sdt)
        rho = tl.zeros([], sdt)
        level = tl.full([], float("inf"), sdt)
    first = i_seg * segment_chunks * BT
    n_here = tl.cdiv(tl.minimum(first + segment_chunks * BT, T) - first, BT)
    for i_step in tl.range(0, n_here, num_stages=2):
        t0 = first + (n_here - 1 - i_step) * BT
        valid = t0 + offs_t < T
        rows = i_batch * T + t0 + offs_t
        lse = tl.load(lse_ptr + rows * H + i_head, mask=valid, other=0.0)
        do = tl.load(do_ptr + (rows[:, None] * H + i_head) * D + offs_d[None, :],
                     mask=valid[:, None] & d_ok[None, :], other=0.0)
        delta = tl.load(delta_ptr + rows * H + i_head, mask=valid, other=0.0)
        live = valid & (lse != float("-inf"))
        # Q[i, t] = exp(lse_i - lse_t) for t >= i (<= 1); 0 where lse_t = -inf (then lse_i is too)
        q = tl.where(causal & live[None, :], tl.exp(lse[:, None] - tl.where(live, lse, 0.0)[None, :]), 0.0)
        back = tl.where(live, tl.exp(lse - level), 0.0)  # (BT,); level is finite or +inf
        if OUTPUT:
            r_i = tl.dot(q.to(do.dtype), do, input_precision=PREC).to(sdt) + back[:, None] * r[None, :]
            rho_i = tl.sum(q * delta[None, :], axis=1) + back * rho
            s = tl.load(s_ptr + rows * H + i_head, mask=valid, other=float("-inf")).to(sdt)
            v = tl.load(v_ptr + (rows[:, None] * H + i_head) * D + offs_d[None, :],
                        mask=valid[:, None] & d_ok[None, :], other=0.0)
            alpha = tl.where(live, tl.exp(s - tl.where(live, lse, 0.0)), 0.0)
            tl.store(dv_ptr + (rows[:, None] * H + i_head) * D + offs_d[None, :],
                     (alpha[:, None] * r_i).to(v.dtype), mask=valid[:, None] & d_ok[None, :])
            ds = tl.sum(v.to(sdt) * r_i, axis=1)
            if i_d == 0:
                ds -= rho_i
            n_batch = tl.num_programs(1) // H
            tl.store(ds_ptr + (i_d * n_batch * T + rows) * H + i_head, alpha * ds, mask=valid)
        # carry to the chunk's first token (row 0 of the above); lse_0 = -inf zeroes it
        lse_0 = tl.sum(tl.where(offs_t == 0, lse, 0.0), axis=0)
        q_0 = tl.where(live, tl.exp(lse_0 - tl.where(live, lse, 0.0)), 0.0)
        back_0 = tl.exp(lse_0 - level)
        r = tl.sum(q_0[:, None] * do.to(sdt), axis=0) + back_0 * r
        rho = tl.sum(q_0 * delta, axis=0) + back_0 * rho
        level = _carry_level(lse_0)
    if OUTPUT:
        if i_seg == 0:
            tl.store(r_out_ptr + i_bh * D + offs_d, r, mask=d_ok)
            if i_d == 0:
                tl.store(rho_out_ptr + i_bh, rho)
    else:
        tl.store(r_out_ptr + carry_at * D + offs_d, r, mask=d_ok)
        if i_d == 0:
            tl.store(rho_out_ptr + carry_at, rho)

@triton.jit(do_not_specialize=["T", "n_segments", "segment_len"])
def _prefix_backward_carry_kernel(
    r_tot_ptr, rho_tot_ptr, lse_ptr, r_end_ptr, rho_end_ptr, level_end_ptr, r_in_ptr, rho_in_ptr,
    level_in_ptr, T, n_segments, segment_len,
    H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
):
    """Reverse exclusive scan of segment totals from the final state's gradient."""
    i_bh, i_d = tl.program_id(0), tl.program_id(1)
    i_batch, i_head = i_bh // H, i_bh % H
    offs_d = i_d * BD + tl.arange(0, BD)
    d_ok = offs_d < D
    r = tl.load(r_end_ptr + i_bh * D + offs_d, mask=d_ok, other=0.0)
    rho = tl.load(rho_end_ptr + i_bh)
    level = tl.load(level_end_ptr + i_bh)
    for i_step in range(n_segments):
        i_seg = n_segments - 1 - i_step
        at = i_bh * n_segments + i_seg
        tl.store(r_in_ptr + at * D + offs_d, r, mask=d_ok)
        if i_d == 0:
            tl.store(rho_in_ptr + at, rho)
            tl.store(level_in_ptr + at, level)
        lse_first = tl.load(lse_ptr + (i_batch * T + i_seg * segment_len) * H + i_head)
        back = tl.exp(lse_first - level)
        r = tl.load(r_tot_ptr + at * D + offs_d, mask=d_ok, other=0.0) + back * r
        rho = tl.load(rho_tot_ptr + at) + back * rho
        level = _carry_level(lse_first)

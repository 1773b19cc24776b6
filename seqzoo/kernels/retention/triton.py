"""Chunkwise retention in Triton: the state, output and gradient kernels and their autograd.Function.

Tiles (checked by :mod:`seqzoo.kernels.compile_gate`: no spills on sm_80 / sm_90 / sm_100):
chunks of BT = min(chunk_size, 64) tokens; head dims are cut into tiles of 64 (32 for fp32
and fp64) and the kernels loop over the other head dim's tiles (a loop, not unrolled, so one
tile is live at a time), accumulating in fp32 (fp64); no program holds a whole (Dk, Dv)
state or a whole 128-wide row. ``tl.dot`` runs on tensor cores: bf16/fp16 as they are, fp32
as TF32 (see :func:`seqzoo.kernels.dispatch.dot_precision` for the tolerance), fp64 in full
precision. The sequential state pass pipelines its chunk loads (``tl.range(..., num_stages=2)``).

Imported only when Triton imports (the dispatcher checks :func:`seqzoo.kernels.dispatch.triton_available`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqzoo.kernels.dispatch import accumulation_dtype, dot_precision, dot_warps, sm_count


MAX_HEAD_DIM = 256
"""Largest Dk/Dv the Triton kernels take."""

MAX_CHUNK = 64
"""Tokens per chunk in the Triton kernels (a larger ``chunk_size`` is cut to this)."""


def head_tile(dtype: torch.dtype) -> int:
    """Width of a head-dim tile: 64 for 16-bit inputs, 32 for fp32 (twice the bytes), 16 for
    fp64 (at 32 the fp64 output kernel spilled 16 B on sm_80)."""
    return {torch.float32: 32, torch.float64: 16}.get(dtype, 64)


class RetentionFunction(torch.autograd.Function):
    """Chunkwise retention in Triton: forward and backward (states recomputed)."""

    @staticmethod
    def forward(ctx, q, k, v, gamma, initial_state, scale, chunk_size):
        _check_head_dims(q.shape[-1], v.shape[-1])
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        sdt = accumulation_dtype(q.dtype)
        log2_gamma = torch.log2(gamma.detach().to(device=q.device, dtype=sdt)).contiguous()
        h0 = None if initial_state is None else initial_state.detach().to(sdt).contiguous()
        chunk_size = min(chunk_size, MAX_CHUNK)
        states, final = _chunk_states(k, v, log2_gamma, h0, 1.0, chunk_size, reverse=False)
        o = _chunk_outputs(q, k, v, log2_gamma, states, scale, chunk_size)
        ctx.save_for_backward(q, k, v, log2_gamma, h0)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        ctx.initial_dtype = None if initial_state is None else initial_state.dtype
        ctx.set_materialize_grads(False)
        return o, final

    @staticmethod
    def backward(ctx, d_o, d_final):
        q, k, v, log2_gamma, h0 = ctx.saved_tensors
        scale, C = ctx.scale, ctx.chunk_size
        d_o = torch.zeros_like(v) if d_o is None else d_o.contiguous()
        states, _ = _chunk_states(k, v, log2_gamma, h0, 1.0, C, reverse=False)
        d_final = None if d_final is None else d_final.to(log2_gamma.dtype).contiguous()
        d_states, d_initial = _chunk_states(q, d_o, log2_gamma, d_final, scale, C, reverse=True)
        dq, dk, dv = _chunk_grads(q, k, v, d_o, log2_gamma, states, d_states, scale, C)
        if ctx.initial_dtype is not None:
            d_initial = d_initial.to(ctx.initial_dtype)
        else:
            d_initial = None
        return dq, dk, dv, None, d_initial, None, None


def _check_head_dims(dk: int, dv: int) -> None:
    if dk > MAX_HEAD_DIM or dv > MAX_HEAD_DIM:
        raise ValueError(f"retention: the Triton kernels take head dims up to {MAX_HEAD_DIM}, got Dk={dk}, Dv={dv}; "
                         "use impl='torch' or more heads")


def _block(n: int, cap: int | None = None) -> int:
    """Tile width: a power of two >= 16 (tensor-core minimum) covering ``n``, at most ``cap``."""
    size = max(16, triton.next_power_of_2(n))
    return min(size, cap) if cap else size


def _state_tiles(batch_heads: int, dk: int, dv: int, device: torch.device, dtype: torch.dtype) -> tuple[int, int]:
    """(BK, BV) for the sequential state pass: tiles small enough to give every SM work."""
    cap = 32 if dtype == torch.float64 else 64  # (64, 64) fp64 spilled 8-64 B on sm_80
    bk, bv = _block(dk, cap), _block(dv, cap)
    target = 2 * sm_count(device, cpu_default=1)
    while batch_heads * triton.cdiv(dk, bk) * triton.cdiv(dv, bv) < target and max(bk, bv) > 16:
        if bv >= bk:
            bv //= 2
        else:
            bk //= 2
    return bk, bv


def _chunk_states(a, b, log2_gamma, init, scale, chunk_size, *, reverse):
    """Per-chunk states (B, H, NT, A, B) and the state after the last chunk (or, reversed, before the first).

    Forward (``a=k, b=v``): entry n is the state entering chunk n. Reverse (``a=q, b=dO``):
    entry n is the gradient of the state leaving chunk n; the result is the gradient of
    the initial state.
    """
    B, T, H, A = a.shape
    Bd = b.shape[-1]
    n_chunks = triton.cdiv(T, chunk_size)
    states = torch.empty(B, H, n_chunks, A, Bd, device=a.device, dtype=log2_gamma.dtype)
    last = torch.empty(B, H, A, Bd, device=a.device, dtype=log2_gamma.dtype)
    ba, bb = _state_tiles(B * H, A, Bd, a.device, log2_gamma.dtype)
    grid = (triton.cdiv(A, ba), triton.cdiv(Bd, bb), B * H)
    _retention_states_kernel[grid](
        a, b, log2_gamma, init if init is not None else last, states, last, scale, T,
        H=H, A_DIM=A, B_DIM=Bd, BT=chunk_size, BA=ba, BB=bb, REVERSE=reverse, HAS_INIT=init is not None,
        PREC=dot_precision(a.dtype),
    )
    return states, last


def _chunk_outputs(q, k, v, log2_gamma, states, scale, chunk_size):
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.empty_like(v)
    tile = head_tile(q.dtype)
    bk, bv = _block(K, tile), _block(V, tile)
    grid = (triton.cdiv(V, bv), triton.cdiv(T, chunk_size), B * H)
    _retention_output_kernel[grid](
        q, k, v, log2_gamma, states, o, scale, T,
        H=H, K=K, V=V, BT=chunk_size, BK=bk, BV=bv, PREC=dot_precision(q.dtype), num_warps=dot_warps(q.dtype),
    )
    return o


def _chunk_grads(q, k, v, d_o, log2_gamma, states, d_states, scale, chunk_size):
    B, T, H, K = q.shape
    V = v.shape[-1]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    tile = head_tile(q.dtype)
    bk, bv = _block(K, tile), _block(V, tile)
    n_chunks = triton.cdiv(T, chunk_size)
    # 8 warps for every dtype (compile gate: fewer registers than 4 on sm_90 for bf16)
    common = dict(H=H, K=K, V=V, BT=chunk_size, BK=bk, BV=bv, PREC=dot_precision(q.dtype), num_warps=8)
    # the dq/dk kernel holds (BT, BT) dP beside two (BT, BK) accumulators: narrower Dk tiles
    # (32), as at 64 bf16 / fp16 spilled 120 B on sm_80; fp32 at 32 (TF32 dots, 255 registers)
    # still spilled 16 B on sm_80 at D = 128, so fp32 and fp64 use 16 (compile gate)
    bk_qk = min(bk, 32 if q.element_size() <= 2 else 16)
    _retention_grad_qk_kernel[(triton.cdiv(K, bk_qk), n_chunks, B * H)](
        q, k, v, d_o, log2_gamma, states, d_states, dq, dk, scale, T, **(common | {"BK": bk_qk}))
    _retention_grad_v_kernel[(triton.cdiv(V, bv), n_chunks, B * H)](
        q, k, d_o, log2_gamma, d_states, dv, scale, T, **common)
    return dq, dk, dv


@triton.jit(do_not_specialize=["T"])
def _retention_states_kernel(
    a_ptr, b_ptr, log2_gamma_ptr, init_ptr, states_ptr, last_ptr, scale, T,
    H: tl.constexpr, A_DIM: tl.constexpr, B_DIM: tl.constexpr, BT: tl.constexpr, BA: tl.constexpr,
    BB: tl.constexpr, REVERSE: tl.constexpr, HAS_INIT: tl.constexpr, PREC: tl.constexpr,
):
    """One (A, B) state tile of one head, carried over the chunks in order (or reversed).

    Forward: S <- γ^L S + Σ_i γ^{L-1-i} a_i^T b_i. Reverse: G <- γ^L G + s Σ_i γ^{i+1} a_i^T b_i.
    Each chunk's incoming value is stored before the update.
    """
    i_a, i_b, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_batch, i_head = i_bh // H, i_bh % H
    n_chunks = tl.cdiv(T, BT)
    offs_a = i_a * BA + tl.arange(0, BA)
    offs_b = i_b * BB + tl.arange(0, BB)
    offs_t = tl.arange(0, BT)
    tile = (offs_a[:, None] < A_DIM) & (offs_b[None, :] < B_DIM)
    tile_offs = offs_a[:, None] * B_DIM + offs_b[None, :]
    lg = tl.load(log2_gamma_ptr + i_head)
    state = tl.zeros([BA, BB], dtype=lg.dtype)
    if HAS_INIT:
        state += tl.load(init_ptr + i_bh * A_DIM * B_DIM + tile_offs, mask=tile, other=0.0).to(lg.dtype)
    for i_step in tl.range(0, n_chunks, num_stages=2):
        if REVERSE:
            i_chunk = n_chunks - 1 - i_step
        else:
            i_chunk = i_step
        t0 = i_chunk * BT
        length = tl.minimum(T - t0, BT)
        tl.store(states_ptr + (i_bh * n_chunks + i_chunk) * A_DIM * B_DIM + tile_offs, state, mask=tile)
        valid = offs_t < length
        rows = i_batch * T + t0 + offs_t
        a = tl.load(a_ptr + (rows[None, :] * H + i_head) * A_DIM + offs_a[:, None],
                    mask=valid[None, :] & (offs_a[:, None] < A_DIM), other=0.0)  # (BA, BT)
        b = tl.load(b_ptr + (rows[:, None] * H + i_head) * B_DIM + offs_b[None, :],
                    mask=valid[:, None] & (offs_b[None, :] < B_DIM), other=0.0)  # (BT, BB)
        pos = offs_t.to(lg.dtype)
        if REVERSE:
            weight = tl.exp2((pos + 1) * lg) * scale
        else:
            weight = tl.exp2((length - 1 - pos) * lg)
        weight = tl.where(valid, weight, 0.0)
        a = (a * weight[None, :]).to(a_ptr.dtype.element_ty)
        update = tl.dot(a, b, input_precision=PREC)
        state = state * tl.exp2(length.to(lg.dtype) * lg) + update.to(lg.dtype)
    tl.store(last_ptr + i_bh * A_DIM * B_DIM + tile_offs, state, mask=tile)


@triton.jit(do_not_specialize=["T"])
def _retention_output_kernel(
    q_ptr, k_ptr, v_ptr, log2_gamma_ptr, states_ptr, o_ptr, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, PREC: tl.constexpr,
):
    """o = s · [(q ⊙ γ^{i+1}) S_in + (q k^T ⊙ M) v] for one chunk and one Dv tile, over Dk tiles."""
    i_v, i_chunk, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_batch, i_head = i_bh // H, i_bh % H
    n_chunks = tl.cdiv(T, BT)
    offs_t = tl.arange(0, BT)
    offs_v = i_v * BV + tl.arange(0, BV)
    valid = i_chunk * BT + offs_t < T
    rows = i_batch * T + i_chunk * BT + offs_t
    v_mask = valid[:, None] & (offs_v[None, :] < V)
    lg = tl.load(log2_gamma_ptr + i_head)
    pos = offs_t.to(lg.dtype)
    from_start = tl.exp2((pos + 1) * lg)
    out = tl.zeros([BT, BV], dtype=lg.dtype)
    scores = tl.zeros([BT, BT], dtype=lg.dtype)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        qk_mask = valid[:, None] & (offs_k[None, :] < K)
        q = tl.load(q_ptr + (rows[:, None] * H + i_head) * K + offs_k[None, :], mask=qk_mask, other=0.0)
        k = tl.load(k_ptr + (rows[:, None] * H + i_head) * K + offs_k[None, :], mask=qk_mask, other=0.0)
        state = tl.load(states_ptr + ((i_bh * n_chunks + i_chunk) * K + offs_k[:, None]) * V + offs_v[None, :],
                        mask=(offs_k[:, None] < K) & (offs_v[None, :] < V), other=0.0)
        q_decayed = (q * from_start[:, None]).to(q.dtype)
        out += tl.dot(q_decayed, state.to(q.dtype), input_precision=PREC).to(lg.dtype)
        scores += tl.dot(q, tl.trans(k), input_precision=PREC).to(lg.dtype)
    v = tl.load(v_ptr + (rows[:, None] * H + i_head) * V + offs_v[None, :], mask=v_mask, other=0.0)
    scores = scores * _decay_mask(pos, lg)
    out += tl.dot(scores.to(v.dtype), v, input_precision=PREC).to(lg.dtype)
    tl.store(o_ptr + (rows[:, None] * H + i_head) * V + offs_v[None, :], (out * scale).to(v.dtype), mask=v_mask)


@triton.jit(do_not_specialize=["T"])
def _retention_grad_qk_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, log2_gamma_ptr, states_ptr, d_states_ptr, dq_ptr, dk_ptr, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, PREC: tl.constexpr,
):
    """dq, dk of one chunk and one Dk tile, summing over Dv tiles.

    With dP = dO v^T ⊙ M (entering state S_in, the leaving state's gradient G_out):
    dq = s [dP k + γ^{i+1} dO S_in^T],  dk = s dP^T q + γ^{L-1-j} v G_out^T.
    """
    i_k, i_chunk, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_batch, i_head = i_bh // H, i_bh % H
    n_chunks = tl.cdiv(T, BT)
    t0 = i_chunk * BT
    offs_t = tl.arange(0, BT)
    offs_k = i_k * BK + tl.arange(0, BK)
    valid = t0 + offs_t < T
    rows = i_batch * T + t0 + offs_t
    lg = tl.load(log2_gamma_ptr + i_head)
    d_scores = tl.zeros([BT, BT], dtype=lg.dtype)
    dq = tl.zeros([BT, BK], dtype=lg.dtype)
    dk = tl.zeros([BT, BK], dtype=lg.dtype)
    for v0 in tl.range(0, V, BV, num_stages=1):  # not software-pipelined: bf16 spilled on sm_80 with it
        offs_v = v0 + tl.arange(0, BV)
        v_mask = valid[:, None] & (offs_v[None, :] < V)
        v_offs = (rows[:, None] * H + i_head) * V + offs_v[None, :]
        v = tl.load(v_ptr + v_offs, mask=v_mask, other=0.0)
        do = tl.load(do_ptr + v_offs, mask=v_mask, other=0.0)
        state_offs = ((i_bh * n_chunks + i_chunk) * K + offs_k[:, None]) * V + offs_v[None, :]
        state_mask = (offs_k[:, None] < K) & (offs_v[None, :] < V)
        state_in = tl.load(states_ptr + state_offs, mask=state_mask, other=0.0).to(v.dtype)
        d_state_out = tl.load(d_states_ptr + state_offs, mask=state_mask, other=0.0).to(v.dtype)
        d_scores += tl.dot(do, tl.trans(v), input_precision=PREC).to(lg.dtype)
        dq += tl.dot(do, tl.trans(state_in), input_precision=PREC).to(lg.dtype)
        dk += tl.dot(v, tl.trans(d_state_out), input_precision=PREC).to(lg.dtype)
    qk_mask = valid[:, None] & (offs_k[None, :] < K)
    qk_offs = (rows[:, None] * H + i_head) * K + offs_k[None, :]
    q = tl.load(q_ptr + qk_offs, mask=qk_mask, other=0.0)
    k = tl.load(k_ptr + qk_offs, mask=qk_mask, other=0.0)
    pos = offs_t.to(lg.dtype)
    length = tl.minimum(T - t0, BT)
    from_start = tl.exp2((pos + 1) * lg)
    to_end = tl.where(valid, tl.exp2((length - 1 - pos) * lg), 0.0)
    d_scores = (d_scores * _decay_mask(pos, lg)).to(q.dtype)
    dq = dq * from_start[:, None] + tl.dot(d_scores, k, input_precision=PREC).to(lg.dtype)
    dk = dk * to_end[:, None] + tl.dot(tl.trans(d_scores), q, input_precision=PREC).to(lg.dtype) * scale
    tl.store(dq_ptr + qk_offs, (dq * scale).to(q.dtype), mask=qk_mask)
    tl.store(dk_ptr + qk_offs, dk.to(k.dtype), mask=qk_mask)


@triton.jit(do_not_specialize=["T"])
def _retention_grad_v_kernel(
    q_ptr, k_ptr, do_ptr, log2_gamma_ptr, d_states_ptr, dv_ptr, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, PREC: tl.constexpr,
):
    """dv = A^T dO + γ^{L-1-j} k G_out for one chunk and one Dv tile, with A = s (q k^T ⊙ M)
    summed over Dk tiles."""
    i_v, i_chunk, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_batch, i_head = i_bh // H, i_bh % H
    n_chunks = tl.cdiv(T, BT)
    t0 = i_chunk * BT
    offs_t = tl.arange(0, BT)
    offs_v = i_v * BV + tl.arange(0, BV)
    valid = t0 + offs_t < T
    rows = i_batch * T + t0 + offs_t
    lg = tl.load(log2_gamma_ptr + i_head)
    scores = tl.zeros([BT, BT], dtype=lg.dtype)
    dv = tl.zeros([BT, BV], dtype=lg.dtype)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        qk_mask = valid[:, None] & (offs_k[None, :] < K)
        qk_offs = (rows[:, None] * H + i_head) * K + offs_k[None, :]
        q = tl.load(q_ptr + qk_offs, mask=qk_mask, other=0.0)
        k = tl.load(k_ptr + qk_offs, mask=qk_mask, other=0.0)
        d_state_out = tl.load(d_states_ptr + ((i_bh * n_chunks + i_chunk) * K + offs_k[:, None]) * V + offs_v[None, :],
                              mask=(offs_k[:, None] < K) & (offs_v[None, :] < V), other=0.0).to(k.dtype)
        scores += tl.dot(q, tl.trans(k), input_precision=PREC).to(lg.dtype)
        dv += tl.dot(k, d_state_out, input_precision=PREC).to(lg.dtype)
    v_mask = valid[:, None] & (offs_v[None, :] < V)
    v_offs = (rows[:, None] * H + i_head) * V + offs_v[None, :]
    do = tl.load(do_ptr + v_offs, mask=v_mask, other=0.0)
    pos = offs_t.to(lg.dtype)
    length = tl.minimum(T - t0, BT)
    to_end = tl.where(valid, tl.exp2((length - 1 - pos) * lg), 0.0)
    scores = (scores * _decay_mask(pos, lg) * scale).to(do.dtype)
    dv = dv * to_end[:, None] + tl.dot(tl.trans(scores), do, input_precision=PREC).to(lg.dtype)
    tl.store(dv_ptr + v_offs, dv.to(do.dtype), mask=v_mask)


@triton.jit
def _decay_mask(pos, lg):
    """(BT, BT) with γ^{i-j} for i >= j, else 0."""
    diff = pos[:, None] - pos[None, :]
    return tl.where(diff >= 0, tl.exp2(tl.maximum(diff, 0.0) * lg), 0.0)

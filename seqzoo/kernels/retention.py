"""Decayed retention (RetNet, ViR) with a fixed decay γ_h per head.

With S_t the (Dk, Dv) state of one head and s = ``scale`` (default Dk^-1/2):

    recurrent   S_t = γ S_{t-1} + k_t^T v_t,        o_t = s · q_t S_t
    parallel    O = s · (Q K^T ⊙ M) V,              M_ts = γ^{t-u} for t >= u, else 0
    chunkwise   inside a chunk the parallel form; across chunks the state, decayed

The three forms are equal (Sun et al. 2023, eqs. 1-7); there is no softmax after
the decay mask. An initial state S_{-1} adds s · γ^{t+1} q_t S_{-1} to o_t; the
final state is S_{T-1}. Layout ``[B, T, H, D]``; states ``[B, H, Dk, Dv]`` in fp32
(fp64 for fp64 inputs). γ is a constant: no gradient flows to it.

* :func:`retention` -- the public op: Triton on CUDA, the chunkwise reference on CPU.
* :func:`retention_ref` -- the chunkwise form in plain torch, loop-free (the inter-chunk
  recurrence is a decay-weighted sum over earlier chunks), so ``torch.export`` keeps a
  symbolic length; it is the CPU and export path.
* :func:`retention_parallel_ref`, :func:`retention_recurrent_ref` -- the other two
  forms, oracles for the tests.

The Triton path has three kernels: the chunk states (a sequential pass over chunks
per head and state tile), the outputs (parallel over chunks), and the gradients
(parallel over chunks, after a reverse pass of the same state kernel that carries
the gradient of the state backwards). Backward recomputes the chunk states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, chunk_for, dot_precision, is_export_mode, resolve_impl, sm_count

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

MAX_HEAD_DIM = 256
"""Largest Dk/Dv the Triton gradient kernel holds in one tile."""


def retention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gamma: Tensor,
    *,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int = 64,
    impl: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Retention of ``q, k`` (B, T, H, Dk) and ``v`` (B, T, H, Dv) with per-head decay ``gamma`` (H,).

    Returns ``o`` (B, T, H, Dv), and the final state (B, H, Dk, Dv) when
    ``return_final_state``. ``initial_state`` (B, H, Dk, Dv) continues an earlier call.
    """
    scale = _check_args(q, k, v, gamma, scale, initial_state, chunk_size)
    if resolve_impl(impl, q, k, v, op="retention") == "torch":
        o, final = retention_ref(q, k, v, gamma, scale=scale, initial_state=initial_state, chunk_size=chunk_size,
                                 return_final_state=return_final_state)
    else:
        o, final = _RetentionTriton.apply(q, k, v, gamma, initial_state, scale, chunk_size)
    return (o, final) if return_final_state else o


# ---------------------------------------------------------------------------------------
# References: chunkwise (CPU/export path), parallel, recurrent
# ---------------------------------------------------------------------------------------


state_dtype = accumulation_dtype
"""States accumulate in fp32, or fp64 for fp64 inputs (the name the backbones import)."""


def retention_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gamma: Tensor,
    *,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,
    return_final_state: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Chunkwise retention in torch, without a loop over time or chunks.

    The length is padded to a multiple of the chunk C. Inside chunk n the parallel
    form; the state entering chunk n is γ^{Cn} S_{-1} + Σ_{j<n} γ^{C(n-1-j)} ΔS_j with
    ΔS_j = Σ_i γ^{C-1-i} k_i^T v_i, a weighted sum over earlier chunks.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_for(T, chunk_size)
    q, k, v, log_g, scale = _prepare(q, k, v, gamma, scale)
    n_chunks = (T + C - 1) // C
    pad = n_chunks * C - T
    qc, kc, vc = (F.pad(x, (0, 0, 0, 0, 0, pad)).reshape(B, n_chunks, C, H, -1) for x in (q, k, v))
    i = torch.arange(C, device=q.device, dtype=q.dtype)
    intra = torch.einsum("bnihk,bnjhk->bnhij", qc, kc) * _decay_matrix(i, i, log_g)
    o = torch.einsum("bnhij,bnjhv->bnihv", intra, vc)
    # state entering each chunk (B, N, H, K, V)
    to_end = torch.exp((C - 1 - i)[:, None] * log_g)  # (C, H)
    chunk_delta = torch.einsum("bnihk,bnihv->bnhkv", kc * to_end[..., None], vc)
    n = torch.arange(n_chunks, device=q.device, dtype=q.dtype)
    across = _decay_matrix(n, n + 1, log_g * C)  # γ^{C(n-1-j)} for j < n, (H, N, N)
    states = torch.einsum("hnj,bjhkv->bnhkv", across, chunk_delta)
    if initial_state is not None:
        s0 = initial_state.to(q.dtype)
        states = states + torch.exp(n[:, None] * C * log_g)[None, :, :, None, None] * s0[:, None]
    from_start = torch.exp((i + 1)[:, None] * log_g)  # (C, H)
    o = o + torch.einsum("bnihk,bnhkv->bnihv", qc * from_start[..., None], states)
    o = (o * scale).reshape(B, n_chunks * C, H, V)[:, :T]
    return o.to(v.dtype), _final_state(k, v, log_g, initial_state) if return_final_state else None


def retention_parallel_ref(
    q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, *, scale: float | None = None, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """O = s · (Q K^T ⊙ M) V with the (T, T) decay mask M; O(T^2) memory."""
    T = q.shape[1]
    q, k, v, log_g, scale = _prepare(q, k, v, gamma, scale)
    t = torch.arange(T, device=q.device, dtype=q.dtype)
    scores = torch.einsum("bthk,bshk->bhts", q, k) * _decay_matrix(t, t, log_g)
    o = torch.einsum("bhts,bshv->bthv", scores, v)
    if initial_state is not None:
        from_start = torch.exp((t + 1)[:, None] * log_g)[..., None]  # (T, H, 1)
        o = o + torch.einsum("bthk,bhkv->bthv", q * from_start, initial_state.to(q.dtype))
    return (o * scale).to(v.dtype), _final_state(k, v, log_g, initial_state)


def retention_recurrent_ref(
    q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, *, scale: float | None = None, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """S_t = γ S_{t-1} + k_t^T v_t, o_t = s · q_t S_t, one step at a time (an oracle)."""
    B, T, H, K = q.shape
    q, k, v, log_g, scale = _prepare(q, k, v, gamma, scale)
    g = torch.exp(log_g)[None, :, None, None]
    state = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)
    outs = []
    for t in range(T):
        state = g * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], state) * scale)
    return torch.stack(outs, dim=1).to(v.dtype), state


def retention_step(q_t: Tensor, k_t: Tensor, v_t: Tensor, gamma: Tensor, state: Tensor, *,
                   scale: float | None = None) -> tuple[Tensor, Tensor]:
    """One recurrent step for streaming: ``q_t, k_t`` (B, H, Dk), ``v_t`` (B, H, Dv), state (B, H, Dk, Dv)."""
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    state = gamma.to(state.dtype)[None, :, None, None] * state + k_t.to(state.dtype)[..., None] * v_t.to(state.dtype)[..., None, :]
    o = torch.einsum("bhk,bhkv->bhv", q_t.to(state.dtype), state) * scale
    return o.to(v_t.dtype), state


def _prepare(q, k, v, gamma, scale):
    sdt = state_dtype(q.dtype)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    log_g = torch.log(gamma.detach().to(device=q.device, dtype=sdt))
    return q.to(sdt), k.to(sdt), v.to(sdt), log_g, scale


def _decay_matrix(rows: Tensor, cols: Tensor, log_g: Tensor) -> Tensor:
    """(H, R, C) with exp((r - c) · log γ_h) where r >= c, else 0 (masked before exp: no inf)."""
    diff = rows[:, None] - cols[None, :]
    causal = diff >= 0
    return torch.exp(diff.clamp(min=0)[None] * log_g[:, None, None]) * causal


def _final_state(k: Tensor, v: Tensor, log_g: Tensor, initial_state: Tensor | None) -> Tensor:
    """S_{T-1} = γ^T S_{-1} + Σ_s γ^{T-1-s} k_s^T v_s."""
    T = k.shape[1]
    s = torch.arange(T, device=k.device, dtype=k.dtype)
    weights = torch.exp((T - 1 - s)[:, None] * log_g)[..., None]  # (T, H, 1)
    final = torch.einsum("bshk,bshv->bhkv", k * weights, v)
    if initial_state is not None:
        final = final + torch.exp(T * log_g)[None, :, None, None] * initial_state.to(k.dtype)
    return final


def _check_args(q, k, v, gamma, scale, initial_state, chunk_size) -> float:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"retention: q and k must both be (B, T, H, Dk), got {tuple(q.shape)} and {tuple(k.shape)}")
    B, T, H, K = q.shape
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"retention: v must be (B, T, H, Dv) = ({B}, {T}, {H}, Dv), got {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_floating_point:
        raise ValueError(f"retention: q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if T < 1:
        raise ValueError("retention: the sequence is empty (T = 0)")
    if not isinstance(gamma, Tensor) or gamma.shape != (H,):
        raise ValueError(f"retention: gamma must be a tensor of shape (H,) = ({H},), got "
                         f"{tuple(gamma.shape) if isinstance(gamma, Tensor) else type(gamma).__name__}")
    checkable = gamma.device.type == "cpu" and not (is_export_mode() or torch.compiler.is_compiling())
    if checkable and not bool(((gamma > 0) & (gamma <= 1)).all()):
        raise ValueError(f"retention: every decay gamma must lie in (0, 1], got {gamma.tolist()}")
    if initial_state is not None and initial_state.shape != (B, H, K, v.shape[-1]):
        raise ValueError(f"retention: initial_state must be (B, H, Dk, Dv) = {(B, H, K, v.shape[-1])}, "
                         f"got {tuple(initial_state.shape)}")
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"retention: chunk_size must be a power of two >= 16, got {chunk_size}")
    return K**-0.5 if scale is None else float(scale)


# ---------------------------------------------------------------------------------------
# Triton
# ---------------------------------------------------------------------------------------


class _RetentionTriton(torch.autograd.Function):
    """Chunkwise retention in Triton: forward and backward (states recomputed)."""

    @staticmethod
    def forward(ctx, q, k, v, gamma, initial_state, scale, chunk_size):
        _check_head_dims(q.shape[-1], v.shape[-1])
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        sdt = state_dtype(q.dtype)
        log2_gamma = torch.log2(gamma.detach().to(device=q.device, dtype=sdt)).contiguous()
        h0 = None if initial_state is None else initial_state.detach().to(sdt).contiguous()
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


def _state_tiles(batch_heads: int, dk: int, dv: int, device: torch.device) -> tuple[int, int]:
    """(BK, BV) for the sequential state pass: tiles small enough to give every SM work."""
    bk, bv = _block(dk, 64), _block(dv, 64)
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
    ba, bb = _state_tiles(B * H, A, Bd, a.device)
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
    bv = _block(V, 64)
    grid = (triton.cdiv(V, bv), triton.cdiv(T, chunk_size), B * H)
    _retention_output_kernel[grid](
        q, k, v, log2_gamma, states, o, scale, T,
        H=H, K=K, V=V, BT=chunk_size, BK=_block(K), BV=bv, PREC=dot_precision(q.dtype),
    )
    return o


def _chunk_grads(q, k, v, d_o, log2_gamma, states, d_states, scale, chunk_size):
    B, T, H, K = q.shape
    V = v.shape[-1]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    grid = (triton.cdiv(T, chunk_size), B * H)
    _retention_grad_kernel[grid](
        q, k, v, d_o, log2_gamma, states, d_states, dq, dk, dv, scale, T,
        H=H, K=K, V=V, BT=chunk_size, BK=_block(K), BV=_block(V), PREC=dot_precision(q.dtype),
    )
    return dq, dk, dv


if triton is not None:

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
        for i_step in range(n_chunks):
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
        """o = s · [(q ⊙ γ^{i+1}) S_in + (q k^T ⊙ M) v] for one chunk and one tile of Dv."""
        i_v, i_chunk, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        i_batch, i_head = i_bh // H, i_bh % H
        n_chunks = tl.cdiv(T, BT)
        offs_t = tl.arange(0, BT)
        offs_k = tl.arange(0, BK)
        offs_v = i_v * BV + tl.arange(0, BV)
        valid = i_chunk * BT + offs_t < T
        rows = i_batch * T + i_chunk * BT + offs_t
        qk_mask = valid[:, None] & (offs_k[None, :] < K)
        v_mask = valid[:, None] & (offs_v[None, :] < V)
        q = tl.load(q_ptr + (rows[:, None] * H + i_head) * K + offs_k[None, :], mask=qk_mask, other=0.0)
        k = tl.load(k_ptr + (rows[:, None] * H + i_head) * K + offs_k[None, :], mask=qk_mask, other=0.0)
        v = tl.load(v_ptr + (rows[:, None] * H + i_head) * V + offs_v[None, :], mask=v_mask, other=0.0)
        state = tl.load(states_ptr + ((i_bh * n_chunks + i_chunk) * K + offs_k[:, None]) * V + offs_v[None, :],
                        mask=(offs_k[:, None] < K) & (offs_v[None, :] < V), other=0.0)
        lg = tl.load(log2_gamma_ptr + i_head)
        pos = offs_t.to(lg.dtype)
        q_decayed = (q * tl.exp2((pos + 1) * lg)[:, None]).to(q.dtype)
        out = tl.dot(q_decayed, state.to(q.dtype), input_precision=PREC).to(lg.dtype)
        scores = tl.dot(q, tl.trans(k), input_precision=PREC).to(lg.dtype) * _decay_mask(pos, lg)
        out += tl.dot(scores.to(v.dtype), v, input_precision=PREC).to(lg.dtype)
        tl.store(o_ptr + (rows[:, None] * H + i_head) * V + offs_v[None, :], (out * scale).to(v.dtype), mask=v_mask)

    @triton.jit(do_not_specialize=["T"])
    def _retention_grad_kernel(
        q_ptr, k_ptr, v_ptr, do_ptr, log2_gamma_ptr, states_ptr, d_states_ptr, dq_ptr, dk_ptr, dv_ptr, scale, T,
        H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
        BV: tl.constexpr, PREC: tl.constexpr,
    ):
        """dq, dk, dv of one chunk from the entering state S_in and the leaving state's gradient G_out.

        With A = s (q k^T ⊙ M) and dP = dO v^T ⊙ M:
        dq = s [dP k + γ^{i+1} dO S_in^T],  dk = s dP^T q + γ^{L-1-j} v G_out^T,
        dv = A^T dO + γ^{L-1-j} k G_out.
        """
        i_chunk, i_bh = tl.program_id(0), tl.program_id(1)
        i_batch, i_head = i_bh // H, i_bh % H
        n_chunks = tl.cdiv(T, BT)
        t0 = i_chunk * BT
        offs_t = tl.arange(0, BT)
        offs_k = tl.arange(0, BK)
        offs_v = tl.arange(0, BV)
        valid = t0 + offs_t < T
        rows = i_batch * T + t0 + offs_t
        qk_mask = valid[:, None] & (offs_k[None, :] < K)
        v_mask = valid[:, None] & (offs_v[None, :] < V)
        qk_offs = (rows[:, None] * H + i_head) * K + offs_k[None, :]
        v_offs = (rows[:, None] * H + i_head) * V + offs_v[None, :]
        q = tl.load(q_ptr + qk_offs, mask=qk_mask, other=0.0)
        k = tl.load(k_ptr + qk_offs, mask=qk_mask, other=0.0)
        v = tl.load(v_ptr + v_offs, mask=v_mask, other=0.0)
        do = tl.load(do_ptr + v_offs, mask=v_mask, other=0.0)
        state_offs = ((i_bh * n_chunks + i_chunk) * K + offs_k[:, None]) * V + offs_v[None, :]
        state_mask = (offs_k[:, None] < K) & (offs_v[None, :] < V)
        state_in = tl.load(states_ptr + state_offs, mask=state_mask, other=0.0).to(q.dtype)
        d_state_out = tl.load(d_states_ptr + state_offs, mask=state_mask, other=0.0).to(q.dtype)
        lg = tl.load(log2_gamma_ptr + i_head)
        pos = offs_t.to(lg.dtype)
        length = tl.minimum(T - t0, BT)
        from_start = tl.exp2((pos + 1) * lg)
        to_end = tl.where(valid, tl.exp2((length - 1 - pos) * lg), 0.0)
        mask = _decay_mask(pos, lg)
        scores = (tl.dot(q, tl.trans(k), input_precision=PREC).to(lg.dtype) * mask * scale).to(q.dtype)
        d_scores = (tl.dot(do, tl.trans(v), input_precision=PREC).to(lg.dtype) * mask).to(q.dtype)
        dq = tl.dot(d_scores, k, input_precision=PREC).to(lg.dtype)
        dq += tl.dot(do, tl.trans(state_in), input_precision=PREC).to(lg.dtype) * from_start[:, None]
        dk = tl.dot(tl.trans(d_scores), q, input_precision=PREC).to(lg.dtype) * scale
        dk += tl.dot(v, tl.trans(d_state_out), input_precision=PREC).to(lg.dtype) * to_end[:, None]
        dv = tl.dot(tl.trans(scores), do, input_precision=PREC).to(lg.dtype)
        dv += tl.dot(k, d_state_out, input_precision=PREC).to(lg.dtype) * to_end[:, None]
        tl.store(dq_ptr + qk_offs, (dq * scale).to(q.dtype), mask=qk_mask)
        tl.store(dk_ptr + qk_offs, dk.to(k.dtype), mask=qk_mask)
        tl.store(dv_ptr + v_offs, dv.to(v.dtype), mask=v_mask)

    @triton.jit
    def _decay_mask(pos, lg):
        """(BT, BT) with γ^{i-j} for i >= j, else 0."""
        diff = pos[:, None] - pos[None, :]
        return tl.where(diff >= 0, tl.exp2(tl.maximum(diff, 0.0) * lg), 0.0)

"""Triton kernels of the selective scan (see :mod:`seqzoo.kernels.selective_scan` for the math).

One program per (batch, block of BLOCK_E channels) walks time in chunks of BLOCK_T steps.
In a chunk it loads (BLOCK_T, BLOCK_E) tiles of u, Δ, z and (BLOCK_T, N) tiles of B, C,
forms decay exp(Δ A) and drive Δ u B as (BLOCK_T, BLOCK_E, N) tiles, and runs
``tl.associative_scan`` over time with the affine combine (a1, b1) ∘ (a2, b2) =
(a1 a2, b1 a2 + b2); the carried state enters as h_t = a_t h_in + b_t. Everything
accumulates in float32 (float64 for float64 inputs).

The forward writes the state at the start of every chunk (B, T/BLOCK_T, E, N) when a
backward will follow; the backward walks the chunks in reverse, recomputes the chunk's
states from that checkpoint, and runs the adjoint recurrence
q_t = C_t^T ∂y_t + exp(Δ_{t+1} A) q_{t+1} with a reverse associative scan. Gradients of
B and C sum over channels across programs (atomic adds in float32); those of A, D and the
Δ bias are per-batch partial sums reduced in torch.

Lengths are runtime values (``do_not_specialize``) and nothing is autotuned on them; the
chunk length is 16, 32 or 64 steps (shorter only for sequences shorter than the tile), so
at most three compiled variants serve every T.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype

LOG2E = 1.4426950408889634
_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


# ---------------------------------------------------------------------------------------
# public entry points (called by seqzoo.kernels.selective_scan)
# ---------------------------------------------------------------------------------------


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False,
                          initial_state=None) -> tuple[Tensor, Tensor]:
    """(y, final state) through :class:`SelectiveScanFunction`."""
    return SelectiveScanFunction.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus))


def selective_state_update_triton(state, u, delta, A, B, C, D=None, z=None, *, delta_bias=None,
                                  delta_softplus=False, inplace=False) -> tuple[Tensor, Tensor]:
    batch, E = u.shape
    N = A.shape[1]
    B3, C3 = _grouped(B, 1), _grouped(C, 1)  # (batch, G, N)
    groups = B3.shape[1]
    acc = accumulation_dtype(u.dtype)
    new_state = state if inplace else torch.empty_like(state)
    y = torch.empty_like(u)
    block_e, block_n = _block_e(E, groups), triton.next_power_of_2(N)
    # u stands in for absent D, z, Δ bias: pointers behind false HAS_* flags are never read
    _state_update_kernel[(triton.cdiv(E, block_e), batch)](
        state, u, delta, A, B3, C3, _or(D, u), _or(z, u), _or(delta_bias, u), y, new_state,
        E, N, E // groups,
        *state.stride(), *u.stride(), *delta.stride(), *_strides(z, 2), *y.stride(), *new_state.stride(),
        *B3.stride(), *C3.stride(), *A.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        BLOCK_E=block_e, BLOCK_N=block_n, ACC=_TL_DTYPE[acc],
    )
    return y, new_state


class SelectiveScanFunction(torch.autograd.Function):
    """Triton forward and backward of the selective scan; gradients for every tensor input."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
        save = any(ctx.needs_input_grad)
        y, final, checkpoints = _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save)
        ctx.delta_softplus = delta_softplus
        ctx.b_shape, ctx.c_shape = B.shape, C.shape
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, checkpoints)
        ctx.set_materialize_grads(False)  # an unused y or final state comes back as None
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
        grads = _backward(u, delta, A, B, C, D, z, delta_bias, checkpoints, ctx.delta_softplus, dy, dfinal)
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = grads
        need = ctx.needs_input_grad
        keep = lambda g, i: g if need[i] else None  # noqa: E731
        return (keep(du, 0), keep(ddelta, 1), keep(dA, 2), keep(dB.reshape(ctx.b_shape), 3),
                keep(dC.reshape(ctx.c_shape), 4), keep(dD, 5), keep(dz, 6), keep(dbias, 7), keep(dh0, 8), None)


# ---------------------------------------------------------------------------------------
# launch helpers
# ---------------------------------------------------------------------------------------


def _grouped(x: Tensor, lead: int) -> Tensor:
    """(lead..., N) -> (lead..., 1, N): B and C as grouped views, (batch, [T,] G, N)."""
    return x.unsqueeze(lead) if x.dim() == lead + 1 else x


def _or(t: Tensor | None, dummy: Tensor) -> Tensor:
    return dummy if t is None else t


def _strides(t: Tensor | None, ndim: int) -> tuple[int, ...]:
    return (0,) * ndim if t is None else t.stride()


def _block_e(E: int, groups: int) -> int:
    """Channels per program: a power of two that stays inside one B/C group."""
    per_group = E // groups
    block = 8
    while block > 1 and (groups > 1 and per_group % block):
        block //= 2
    return min(block, triton.next_power_of_2(E))


def _block_t(block_e: int, block_n: int, T: int) -> int:
    """Steps per chunk: a (BLOCK_T, BLOCK_E, N) tile of about 4096 elements (registers), and
    no longer than the sequence needs (16, 32 or 64: at most three compiled variants)."""
    cap = max(16, min(64, 4096 // (block_e * block_n)))
    return min(cap, max(16, triton.next_power_of_2(T)))


def _launch_dims(u, A, B, C):
    """What the scan kernels' launches share: sizes, B and C as (batch, T, G, N) views, the
    group count, the accumulation dtype and the block sizes (BLOCK_T, BLOCK_E, BLOCK_N)."""
    batch, T, E = u.shape
    N = A.shape[1]
    B4, C4 = _grouped(B, 2), _grouped(C, 2)  # (batch, T, G, N)
    groups = B4.shape[2]
    block_e, block_n = _block_e(E, groups), triton.next_power_of_2(N)
    block_t = _block_t(block_e, block_n, T)
    return batch, T, E, N, B4, C4, groups, accumulation_dtype(u.dtype), (block_t, block_e, block_n)


def _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save):
    batch, T, E, N, B4, C4, groups, acc, (block_t, block_e, block_n) = _launch_dims(u, A, B, C)
    n_chunks = triton.cdiv(T, block_t)
    y = torch.empty_like(u, memory_format=torch.contiguous_format)
    final = torch.empty(batch, E, N, device=u.device, dtype=acc)
    checkpoints = torch.empty(batch, n_chunks if save else 0, E, N, device=u.device, dtype=acc)
    h0 = None if initial_state is None else initial_state.to(acc).contiguous()
    dummy = u.new_empty(0)
    _scan_fwd_kernel[(triton.cdiv(E, block_e), batch)](
        u, delta, A, B4, C4, _or(D, dummy), _or(z, dummy), _or(delta_bias, dummy), _or(h0, final),
        y, final, checkpoints,
        T, E, N, E // groups,
        *u.stride(), *delta.stride(), *_strides(z, 3), *y.stride(), *B4.stride(), *C4.stride(), *A.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        HAS_H0=h0 is not None, SAVE=save, BLOCK_T=block_t, BLOCK_E=block_e, BLOCK_N=block_n, ACC=_TL_DTYPE[acc],
    )
    return y, final, checkpoints


def _backward(u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus, dy, dfinal):
    batch, T, E, N, B4, C4, groups, acc, (block_t, block_e, block_n) = _launch_dims(u, A, B, C)
    dev = u.device
    dy = torch.zeros_like(u) if dy is None else dy  # any strides: the kernel reads dy's
    du = torch.empty_like(u, memory_format=torch.contiguous_format)
    ddelta = torch.empty_like(delta, memory_format=torch.contiguous_format)
    dz = torch.empty_like(z, memory_format=torch.contiguous_format) if z is not None else None
    dB = torch.zeros(batch, T, groups, N, device=dev, dtype=acc)
    dC = torch.zeros(batch, T, groups, N, device=dev, dtype=acc)
    dA_part = torch.empty(batch, E, N, device=dev, dtype=acc)
    dD_part = torch.empty(batch, E, device=dev, dtype=acc)
    dbias_part = torch.empty(batch, E, device=dev, dtype=acc)
    dh0 = torch.empty(batch, E, N, device=dev, dtype=acc)
    dfinal = None if dfinal is None else dfinal.to(acc).contiguous()
    dummy = u.new_empty(0)
    _scan_bwd_kernel[(triton.cdiv(E, block_e), batch)](
        u, delta, A, B4, C4, _or(D, dummy), _or(z, dummy), _or(delta_bias, dummy), checkpoints, dy,
        _or(dfinal, dh0), du, ddelta, _or(dz, dummy), dA_part, dB, dC, dD_part, dbias_part, dh0,
        T, E, N, E // groups,
        *u.stride(), *delta.stride(), *_strides(z, 3), *dy.stride(), *B4.stride(), *C4.stride(), *A.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        HAS_DFINAL=dfinal is not None, BLOCK_T=block_t, BLOCK_E=block_e, BLOCK_N=block_n, ACC=_TL_DTYPE[acc],
    )

    def cast(g, like):
        return None if like is None else g.to(like.dtype)

    return (du, ddelta, cast(dA_part.sum(0), A), cast(dB, B), cast(dC, C), cast(dD_part.sum(0), D), dz,
            cast(dbias_part.sum(0), delta_bias), dh0)


# ---------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """Compose x -> a1 x + b1 then x -> a2 x + b2."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _softplus(x):
    # torch's softplus with threshold 20: x itself above it (and no overflow in exp).
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _tile(base, rows, cols, mask, stride_row, stride_col, ACC: tl.constexpr):
    """A (rows, cols) tile in the accumulation dtype, 0 where masked."""
    return tl.load(base + rows[:, None] * stride_row + cols[None, :] * stride_col, mask=mask, other=0.0).to(ACC)


@triton.jit
def _load_delta(ptr, offs_t, offs_e, mask, stride_t, stride_e, bias, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """Δ for a (BLOCK_T, BLOCK_E) tile: (raw + bias, Δ); Δ is 0 outside the sequence."""
    raw = _tile(ptr, offs_t, offs_e, mask, stride_t, stride_e, ACC)
    if HAS_BIAS:
        raw = raw + bias[None, :]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return raw, tl.where(mask, dt, 0.0)


@triton.jit
def _chunk_states(dt, u, Bt, A2, h_in):
    """One chunk's states h_t (BLOCK_T, BLOCK_E, N) from the state before it, and the drive
    Δ_t u_t B_t: a scan of h -> exp(Δ_t A) h + Δ_t u_t B_t over the chunk's steps."""
    decay = tl.exp2(dt[:, :, None] * A2[None, :, :])
    drive = (dt * u)[:, :, None] * Bt[:, None, :]
    a, b = tl.associative_scan((decay, drive), 0, _affine_combine)
    return drive, a * h_in[None, :, :] + b


@triton.jit(do_not_specialize=["T", "stride_u_b", "stride_d_b", "stride_z_b", "stride_y_b", "stride_B_b",
                               "stride_C_b"])
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    y_ptr, final_ptr, ckpt_ptr,
    T, E, N, group_size,
    stride_u_b, stride_u_t, stride_u_e,
    stride_d_b, stride_d_t, stride_d_e,
    stride_z_b, stride_z_t, stride_z_e,
    stride_y_b, stride_y_t, stride_y_e,
    stride_B_b, stride_B_t, stride_B_g, stride_B_n,
    stride_C_b, stride_C_t, stride_C_g, stride_C_n,
    stride_A_e, stride_A_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, SAVE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_e, mask_n = offs_e < E, offs_n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    group = (pid_e * BLOCK_E) // group_size
    # A in log2 units: exp(Δ A) = exp2(Δ A log2 e). Padded n: A = 0, B = C = 0 -> no effect.
    A2 = tl.load(A_ptr + offs_e[:, None] * stride_A_e + offs_n[None, :] * stride_A_n, mask=mask_en,
                 other=0.0).to(ACC) * LOG2E
    D = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(ACC) if HAS_D else None
    bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(ACC) if HAS_BIAS else None
    state_offs = (pid_b * E + offs_e[:, None]) * N + offs_n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + state_offs, mask=mask_en, other=0.0).to(ACC)
    else:
        h = tl.zeros((BLOCK_E, BLOCK_N), dtype=ACC)
    u_base = u_ptr + pid_b * stride_u_b
    d_base = delta_ptr + pid_b * stride_d_b
    z_base = z_ptr + pid_b * stride_z_b
    y_base = y_ptr + pid_b * stride_y_b
    B_base = B_ptr + pid_b * stride_B_b + group * stride_B_g
    C_base = C_ptr + pid_b * stride_C_b + group * stride_C_g
    n_chunks = tl.cdiv(T, BLOCK_T)
    for c in range(0, n_chunks):
        t = c * BLOCK_T + offs_t
        mask_t = t < T
        mask_te = mask_t[:, None] & mask_e[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        u = _tile(u_base, t, offs_e, mask_te, stride_u_t, stride_u_e, ACC)
        _, dt = _load_delta(d_base, t, offs_e, mask_te, stride_d_t, stride_d_e, bias, HAS_BIAS, SOFTPLUS, ACC)
        Bt = _tile(B_base, t, offs_n, mask_tn, stride_B_t, stride_B_n, ACC)
        Ct = _tile(C_base, t, offs_n, mask_tn, stride_C_t, stride_C_n, ACC)
        if SAVE:
            tl.store(ckpt_ptr + ((pid_b * n_chunks + c) * E + offs_e[:, None]) * N + offs_n[None, :], h,
                     mask=mask_en)
        _, states = _chunk_states(dt, u, Bt, A2, h)
        y = tl.sum(states * Ct[:, None, :], axis=2)
        if HAS_D:
            y += u * D[None, :]
        if HAS_Z:
            zt = _tile(z_base, t, offs_e, mask_te, stride_z_t, stride_z_e, ACC)
            y *= zt * tl.sigmoid(zt)
        tl.store(y_base + t[:, None] * stride_y_t + offs_e[None, :] * stride_y_e,
                 y.to(y_ptr.dtype.element_ty), mask=mask_te)
        # steps past T have decay 1 and drive 0, so the last row is the state after step T-1
        h = tl.sum(tl.where((offs_t == BLOCK_T - 1)[:, None, None], states, 0.0), axis=0)
    tl.store(final_ptr + state_offs, h, mask=mask_en)


@triton.jit(do_not_specialize=["T", "stride_u_b", "stride_d_b", "stride_z_b", "stride_g_b", "stride_B_b",
                               "stride_C_b"])
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, dy_ptr, dfinal_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    T, E, N, group_size,
    stride_u_b, stride_u_t, stride_u_e,
    stride_d_b, stride_d_t, stride_d_e,
    stride_z_b, stride_z_t, stride_z_e,
    stride_g_b, stride_g_t, stride_g_e,
    stride_B_b, stride_B_t, stride_B_g, stride_B_n,
    stride_C_b, stride_C_t, stride_C_g, stride_C_n,
    stride_A_e, stride_A_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DFINAL: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    # Gradient buffers du, ddelta, dz are contiguous (B, T, E); dB, dC are (B, T, G, N) with
    # G = E / group_size; dA, dh0 are (B, E, N) and dD, dbias (B, E) per-batch partials.
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_e, mask_n = offs_e < E, offs_n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    group = (pid_e * BLOCK_E) // group_size
    n_groups = E // group_size
    A = tl.load(A_ptr + offs_e[:, None] * stride_A_e + offs_n[None, :] * stride_A_n, mask=mask_en,
                other=0.0).to(ACC)
    A2 = A * LOG2E
    D = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(ACC) if HAS_D else None
    bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(ACC) if HAS_BIAS else None
    state_offs = (pid_b * E + offs_e[:, None]) * N + offs_n[None, :]
    if HAS_DFINAL:
        q_next = tl.load(dfinal_ptr + state_offs, mask=mask_en, other=0.0).to(ACC)
    else:
        q_next = tl.zeros((BLOCK_E, BLOCK_N), dtype=ACC)
    dA_acc = tl.zeros((BLOCK_E, BLOCK_N), dtype=ACC)
    dD_acc = tl.zeros((BLOCK_E,), dtype=ACC)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=ACC)
    u_base = u_ptr + pid_b * stride_u_b
    d_base = delta_ptr + pid_b * stride_d_b
    z_base = z_ptr + pid_b * stride_z_b
    g_base = dy_ptr + pid_b * stride_g_b
    B_base = B_ptr + pid_b * stride_B_b + group * stride_B_g
    C_base = C_ptr + pid_b * stride_C_b + group * stride_C_g
    out_base = pid_b * T * E  # du, ddelta, dz: contiguous (B, T, E)
    bc_base = (pid_b * T * n_groups + group) * N  # dB, dC: contiguous (B, T, G, N)
    n_chunks = tl.cdiv(T, BLOCK_T)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t = c * BLOCK_T + offs_t
        mask_t = t < T
        mask_te = mask_t[:, None] & mask_e[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        te_offs = t[:, None] * E + offs_e[None, :]
        u = _tile(u_base, t, offs_e, mask_te, stride_u_t, stride_u_e, ACC)
        raw, dt = _load_delta(d_base, t, offs_e, mask_te, stride_d_t, stride_d_e, bias, HAS_BIAS, SOFTPLUS, ACC)
        # Δ of the next step: the adjoint recurrence decays by exp(Δ_{t+1} A); 0 past the end
        mask_next = (t + 1 < T)[:, None] & mask_e[None, :]
        _, dt_next = _load_delta(d_base, t + 1, offs_e, mask_next, stride_d_t, stride_d_e, bias, HAS_BIAS,
                                 SOFTPLUS, ACC)
        Bt = _tile(B_base, t, offs_n, mask_tn, stride_B_t, stride_B_n, ACC)
        Ct = _tile(C_base, t, offs_n, mask_tn, stride_C_t, stride_C_n, ACC)
        g = _tile(g_base, t, offs_e, mask_te, stride_g_t, stride_g_e, ACC)
        # recompute the chunk's states from its checkpoint
        h0 = tl.load(ckpt_ptr + ((pid_b * n_chunks + c) * E + offs_e[:, None]) * N + offs_n[None, :],
                     mask=mask_en, other=0.0).to(ACC)
        drive, states = _chunk_states(dt, u, Bt, A2, h0)
        # output gate and skip
        if HAS_Z:
            zt = _tile(z_base, t, offs_e, mask_te, stride_z_t, stride_z_e, ACC)
            y = tl.sum(states * Ct[:, None, :], axis=2)
            if HAS_D:
                y += u * D[None, :]
            sig = tl.sigmoid(zt)
            tl.store(dz_ptr + out_base + te_offs, (g * y * sig * (1.0 + zt * (1.0 - sig))).to(dz_ptr.dtype.element_ty),
                     mask=mask_te)
            g = g * zt * sig
        du = tl.zeros((BLOCK_T, BLOCK_E), dtype=ACC)
        if HAS_D:
            dD_acc += tl.sum(g * u, axis=0)
            du = g * D[None, :]
        tl.atomic_add(dC_ptr + bc_base + t[:, None] * (n_groups * N) + offs_n[None, :],
                      tl.sum(g[:, :, None] * states, axis=1), mask=mask_tn)
        # adjoint: q_t = C_t g_t + exp(Δ_{t+1} A) q_{t+1}, entering the chunk with q_next
        qa, qb = tl.associative_scan((tl.exp2(dt_next[:, :, None] * A2[None, :, :]), g[:, :, None] * Ct[:, None, :]),
                                     0, _affine_combine, reverse=True)
        q = qb + qa * q_next[None, :, :]
        q_next = tl.sum(tl.where((offs_t == 0)[:, None, None], q, 0.0), axis=0)
        du += dt * tl.sum(q * Bt[:, None, :], axis=2)
        tl.store(du_ptr + out_base + te_offs, du.to(du_ptr.dtype.element_ty), mask=mask_te)
        # ∂h_t/∂Δ_t = A exp(Δ_t A) h_{t-1} + u_t B_t, and exp(Δ_t A) h_{t-1} = h_t - Δ_t u_t B_t
        decayed = states - drive
        ddt = tl.sum(q * (decayed * A[None, :, :] + u[:, :, None] * Bt[:, None, :]), axis=2)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask_te, ddt, 0.0)
        tl.store(ddelta_ptr + out_base + te_offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_te)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=0)
        dA_acc += tl.sum(q * decayed * dt[:, :, None], axis=0)
        tl.atomic_add(dB_ptr + bc_base + t[:, None] * (n_groups * N) + offs_n[None, :],
                      tl.sum(q * (dt * u)[:, :, None], axis=1), mask=mask_tn)
    # initial state: h_0 = exp(Δ_0 A) h_init + ..., so ∂L/∂h_init = exp(Δ_0 A) q_0
    dt0 = tl.load(d_base + offs_e * stride_d_e, mask=mask_e, other=0.0).to(ACC)
    if HAS_BIAS:
        dt0 += bias
    if SOFTPLUS:
        dt0 = _softplus(dt0)
    tl.store(dh0_ptr + state_offs, tl.exp2(dt0[:, None] * A2) * q_next, mask=mask_en)
    tl.store(dA_ptr + state_offs, dA_acc, mask=mask_en)
    tl.store(dD_ptr + pid_b * E + offs_e, dD_acc, mask=mask_e)
    tl.store(dbias_ptr + pid_b * E + offs_e, dbias_acc, mask=mask_e)


@triton.jit
def _state_update_kernel(
    state_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, out_ptr,
    E, N, group_size,
    stride_s_b, stride_s_e, stride_s_n,
    stride_u_b, stride_u_e,
    stride_d_b, stride_d_e,
    stride_z_b, stride_z_e,
    stride_y_b, stride_y_e,
    stride_o_b, stride_o_e, stride_o_n,
    stride_B_b, stride_B_g, stride_B_n,
    stride_C_b, stride_C_g, stride_C_n,
    stride_A_e, stride_A_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    """One step for a (batch, channel block): reads its block of the state, then writes it
    (so ``out_ptr`` may be ``state_ptr``: in place)."""
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    mask_e, mask_n = offs_e < E, offs_n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    group = (pid_e * BLOCK_E) // group_size
    h = tl.load(state_ptr + pid_b * stride_s_b + offs_e[:, None] * stride_s_e + offs_n[None, :] * stride_s_n,
                mask=mask_en, other=0.0).to(ACC)
    A2 = tl.load(A_ptr + offs_e[:, None] * stride_A_e + offs_n[None, :] * stride_A_n, mask=mask_en,
                 other=0.0).to(ACC) * LOG2E
    u = tl.load(u_ptr + pid_b * stride_u_b + offs_e * stride_u_e, mask=mask_e, other=0.0).to(ACC)
    dt = tl.load(delta_ptr + pid_b * stride_d_b + offs_e * stride_d_e, mask=mask_e, other=0.0).to(ACC)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)
    if SOFTPLUS:
        dt = _softplus(dt)
    Bt = tl.load(B_ptr + pid_b * stride_B_b + group * stride_B_g + offs_n * stride_B_n, mask=mask_n, other=0.0).to(ACC)
    Ct = tl.load(C_ptr + pid_b * stride_C_b + group * stride_C_g + offs_n * stride_C_n, mask=mask_n, other=0.0).to(ACC)
    h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bt[None, :]
    y = tl.sum(h * Ct[None, :], axis=1)
    if HAS_D:
        y += u * tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)
    if HAS_Z:
        zt = tl.load(z_ptr + pid_b * stride_z_b + offs_e * stride_z_e, mask=mask_e, other=0.0).to(ACC)
        y *= zt * tl.sigmoid(zt)
    tl.store(y_ptr + pid_b * stride_y_b + offs_e * stride_y_e, y.to(y_ptr.dtype.element_ty), mask=mask_e)
    tl.store(out_ptr + pid_b * stride_o_b + offs_e[:, None] * stride_o_e + offs_n[None, :] * stride_o_n,
             h.to(out_ptr.dtype.element_ty), mask=mask_en)

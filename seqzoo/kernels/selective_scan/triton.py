"""Triton kernels of the selective scan (the math and layout: :mod:`seqzoo.kernels.selective_scan`).

Work split (that of mamba_ssm's CUDA ``selective_scan``, laid out for time-major tensors):

* one program per (batch, block of ``BLOCK_E`` = 32 channels): one warp, **one channel per
  lane**, so every load of a (BLOCK_T, BLOCK_E) tile of u, Δ, z is one 32-wide coalesced
  row per step;
* **time inside each thread**: a lane holds its channel's ``BLOCK_T`` steps in registers and
  ``tl.associative_scan`` along that axis is a sequential in-register scan (no shuffles,
  no shared memory);
* **a loop over the state index n** (unrolled, ``N`` is a compile-time constant): the state
  column h[n, :] (one register per lane) is advanced over the chunk and y += C[:, n] h[:, n]
  accumulates in registers -- no cross-lane reduction for y. B[t, n] and C[t, n] are the
  same for every channel of a group: each lane loads them (broadcast from L1);
* state tiles are (N, BLOCK_E): the state index in each lane's registers, so picking or
  replacing row n is a select on registers.

Every stride of a tile-shaped access is a runtime (unspecialised) argument: the compiler
then sees no contiguity and keeps the layout above (one element per lane along channels,
the rest in registers); the strides along N of A, B, C (read one n at a time) stay
specialised, so with stride 1 a step's N reads are constant offsets from one address.
D, the Δ bias, the initial state, the final state's gradient and checkpoint saving are
runtime options (absent = a masked load of 0), so the compiled variants are only dtype x
z gate x softplus (x blocks spanning B/C groups in the backward). The compile gate checks
every one for spills (``variants.py``).

Backward. The forward saves the state every ``SEGMENT`` = 128 steps (B, T/128, E, N) (4x
fewer bytes than the old checkpoint every 32 steps, 1/8 of u's bytes in fp32 at N = 16;
mamba_ssm saves one every 2048). The backward
walks the segments in reverse: it recomputes the segment's states from its checkpoint,
keeping the state at the start of each ``BLOCK_T``-step chunk in a per-program scratch
(33 x N x 32 values: 66 KB per program in fp32 at N = 16, 13 MB in all at B = 4, E = 1536
-- meant to stay in L2), then walks those chunks in reverse with the adjoint
p_t = ∂L/∂h_t:

    p_t = C_t g_t + exp(Δ_{t+1} A) p_{t+1},     g_t = ∂L/∂y_t (times SiLU(z_t) with a gate),

as a reverse associative scan whose elements (v, P, f) = (C_t g_t, 1, exp(Δ_t A)) carry
the decay of a segment's first step, so exp(Δ_{t+1} A) needs no shifted reload or second
exponential. The carry between chunks is r = exp(Δ_0 A) p_0 of the later chunk (= ∂L/∂h
of the state entering it); after the first chunk it is ∂L/∂h_init. Gradients:

    ∂u_t = Δ_t Σ_n p B_t (+ D g_t),   ∂Δ_t = Σ_n p (A exp(Δ_t A) h_{t-1} + u_t B_t) (x σ(raw) for softplus),
    ∂A = Σ_t p Δ_t exp(Δ_t A) h_{t-1},   ∂B_t = Σ_e p Δ_t u_t,   ∂C_t = Σ_e g_t h_t,

with exp(Δ_t A) h_{t-1} = h_t - Δ_t u_t B_t. ∂B, ∂C sum over the block's 32 channels
(warp reduction) and then over blocks (float32 atomic adds); ∂A, ∂D, ∂bias are per-batch
partial sums reduced in torch. In the backward the loop over n is rolled (not unrolled):
the values per (n, channel) that live across chunks -- chunk-entry states, the carry r,
the ∂A sums -- stay in memory that only their lane touches (the scratch, and the dh0 and
∂A outputs themselves), one load and one store per n and chunk; registers then hold one
n's tiles, and the kernel compiles in seconds rather than minutes.

Numerics: everything in float32 (float64 for float64 inputs); inputs in bf16/fp16 are read
as such (half the bytes) and converted in registers; outputs are written in the input
dtype, the final state and ∂h_init in the accumulation dtype. Chunk lengths: 8 steps
forward and 4 backward (4 and 2 in float64: the longest without register spills on sm_80
and sm_90), fixed, so one compiled variant serves every T (see
:func:`~seqzoo.kernels.selective_scan.triton_blocks.launch_config`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype
from seqzoo.kernels.selective_scan.triton_blocks import (
    _TL_DTYPE, LOG2E, WARPS, _add_bc_grad, _adjoint_combine, _advance, _affine_combine, _bc_column, _ckpt_strides,
    _grouped, _load_chunk, _or, _row, _runtime_ints, _softplus, _state_tile, _strides, _time_tile, launch_config,
)


# ---------------------------------------------------------------------------------------
# public entry points (called by seqzoo.kernels.selective_scan)
# ---------------------------------------------------------------------------------------


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False,
                          initial_state=None) -> tuple[Tensor, Tensor]:
    """(y, final state) through :class:`SelectiveScanFunction`."""
    return SelectiveScanFunction.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus))


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


def selective_state_update_triton(state, u, delta, A, B, C, D=None, z=None, *, delta_bias=None,
                                  delta_softplus=False, inplace=False) -> tuple[Tensor, Tensor]:
    """One decoding step: (y (B, E), new state (B, E, N)); the state is overwritten if ``inplace``."""
    batch, E = u.shape
    N = A.shape[1]
    B3, C3 = _grouped(B, 1), _grouped(C, 1)  # (batch, G, N)
    groups = B3.shape[1]
    acc = accumulation_dtype(u.dtype)
    new_state = state if inplace else torch.empty_like(state)
    y = torch.empty_like(u)
    block_e = launch_config(u.dtype, E)["block_e"]
    # u stands in for absent D, z, Δ bias: pointers behind false HAS_* flags are never read
    _state_update_kernel[(triton.cdiv(E, block_e), batch)](
        state, u, delta, A, B3, C3, _or(D, u), _or(z, u), _or(delta_bias, u), y, new_state,
        E, E // groups,
        *state.stride(), *u.stride(), *delta.stride(), *_strides(z, 2), *y.stride(), *new_state.stride(),
        *B3.stride(), *C3.stride(), *A.stride(), int(D is not None), int(delta_bias is not None),
        N=N, HAS_Z=z is not None, SOFTPLUS=delta_softplus,
        BLOCK_E=block_e, BLOCK_N=triton.next_power_of_2(N), ACC=_TL_DTYPE[acc], num_warps=WARPS,
    )
    return y, new_state


# ---------------------------------------------------------------------------------------
# launch helpers
# ---------------------------------------------------------------------------------------


def _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save):
    batch, T, E = u.shape
    N = A.shape[1]
    B4, C4 = _grouped(B, 2), _grouped(C, 2)  # (batch, T, G, N)
    groups = B4.shape[2]
    acc = accumulation_dtype(u.dtype)
    cfg = launch_config(u.dtype, E)
    n_segments = triton.cdiv(T, cfg["segment"])
    y = torch.empty_like(u, memory_format=torch.contiguous_format)
    final = torch.empty(batch, E, N, device=u.device, dtype=acc)
    checkpoints = torch.empty(batch, n_segments if save else 0, E, N, device=u.device, dtype=acc)
    h0 = final if initial_state is None else initial_state  # read only when has_h0
    dummy = u.new_empty(0)
    _scan_fwd_kernel[(triton.cdiv(E, cfg["block_e"]), batch)](
        u, delta, A, B4, C4, _or(D, dummy), _or(z, dummy), _or(delta_bias, dummy), h0, y, final, checkpoints,
        T, E, E // groups,
        *u.stride(), *delta.stride(), *_strides(z, 3), *y.stride(), *B4.stride(), *C4.stride(), *A.stride(),
        *h0.stride(), *final.stride(), *_ckpt_strides(checkpoints),
        int(D is not None), int(delta_bias is not None), int(initial_state is not None), int(save),
        N=N, HAS_Z=z is not None, SOFTPLUS=delta_softplus, BLOCK_T=cfg["fwd_t"], BLOCK_E=cfg["block_e"],
        BLOCK_N=triton.next_power_of_2(N), SEG_CHUNKS=cfg["fwd_seg"], ACC=_TL_DTYPE[acc], num_warps=WARPS,
    )
    return y, final, checkpoints


def _backward(u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus, dy, dfinal):
    batch, T, E = u.shape
    N = A.shape[1]
    B4, C4 = _grouped(B, 2), _grouped(C, 2)
    groups = B4.shape[2]
    acc = accumulation_dtype(u.dtype)
    cfg = launch_config(u.dtype, E)
    block_e, block_n = cfg["block_e"], triton.next_power_of_2(N)
    programs_e = triton.cdiv(E, block_e)
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
    scratch = torch.empty(batch * programs_e, cfg["bwd_seg"] + 1, block_n, block_e, device=dev, dtype=acc)
    dfinal_t = dh0 if dfinal is None else dfinal  # read only when has_dfinal
    dummy = u.new_empty(0)
    _scan_bwd_kernel[(programs_e, batch)](
        u, delta, A, B4, C4, _or(D, dummy), _or(z, dummy), _or(delta_bias, dummy), checkpoints, dy, dfinal_t, scratch,
        du, ddelta, _or(dz, du), dA_part, dB, dC, dD_part, dbias_part, dh0,
        T, E, E // groups, checkpoints.shape[1],
        *u.stride(), *delta.stride(), *_strides(z, 3), *dy.stride(), *B4.stride(), *C4.stride(), *A.stride(),
        *_ckpt_strides(checkpoints), *dfinal_t.stride(), *scratch.stride(), *du.stride(), *dB.stride(),
        *dA_part.stride(), *dD_part.stride(),
        int(D is not None), int(delta_bias is not None), int(dfinal is not None),
        N=N, HAS_Z=z is not None, SOFTPLUS=delta_softplus, ONE_GROUP=groups == 1 or (E // groups) % block_e == 0,
        BLOCK_T=cfg["bwd_t"], BLOCK_E=block_e, BLOCK_N=block_n, SEG_CHUNKS=cfg["bwd_seg"], ACC=_TL_DTYPE[acc],
        num_warps=WARPS,
    )

    def cast(g, like):
        return None if like is None else g.to(like.dtype)

    return (du, ddelta, cast(dA_part.sum(0), A), cast(dB, B), cast(dC, C), cast(dD_part.sum(0), D), dz,
            cast(dbias_part.sum(0), delta_bias), dh0)


# ---------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------


@_runtime_ints
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, y_ptr, final_ptr, ckpt_ptr,
    T, E, group_size,
    s_u_b, s_u_t, s_u_e, s_d_b, s_d_t, s_d_e, s_z_b, s_z_t, s_z_e, s_y_b, s_y_t, s_y_e,
    s_B_b, s_B_t, s_B_g, s_B_n, s_C_b, s_C_t, s_C_g, s_C_n, s_A_e, s_A_n,
    s_h0_b, s_h0_e, s_h0_n, s_f_b, s_f_e, s_f_n, s_k_b, s_k_s, s_k_e, s_k_n,
    has_d, has_bias, has_h0, save,
    N: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr, SEG_CHUNKS: tl.constexpr, ACC: tl.constexpr,
):
    """y and the final state; with ``save`` the state before every segment of SEG_CHUNKS chunks.
    D, the Δ bias and the initial state are runtime options (absent = 0: one masked load per
    program), so they add no compiled variants."""
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_e = offs_e < E
    mask_ne = (offs_n < N)[:, None] & mask_e[None, :]
    A_rows = A_ptr + offs_e * s_A_e
    h = _state_tile(h0_ptr + pid_b * s_h0_b, offs_n, offs_e, mask_ne & (has_h0 != 0), s_h0_n, s_h0_e, ACC)
    D = tl.load(D_ptr + offs_e, mask=mask_e & (has_d != 0), other=0.0).to(ACC)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e & (has_bias != 0), other=0.0).to(ACC)
    u_base = u_ptr + pid_b * s_u_b
    d_base = delta_ptr + pid_b * s_d_b
    z_base = z_ptr + pid_b * s_z_b
    y_base = y_ptr + pid_b * s_y_b
    B_base = B_ptr + pid_b * s_B_b
    C_base = C_ptr + pid_b * s_C_b
    b_group = (offs_e // group_size) * s_B_g
    c_group = (offs_e // group_size) * s_C_g
    ckpt_offs = offs_n[:, None] * s_k_n + offs_e[None, :] * s_k_e
    for c in tl.range(0, tl.cdiv(T, BLOCK_T)):
        if (save != 0) & (c % SEG_CHUNKS == 0):
                tl.store(ckpt_ptr + pid_b * s_k_b + (c // SEG_CHUNKS) * s_k_s + ckpt_offs, h, mask=mask_ne)
        t = c * BLOCK_T + offs_t
        mask = (t < T)[:, None] & mask_e[None, :]
        u, _, dt = _load_chunk(u_base, d_base, t, offs_e, mask, s_u_t, s_u_e, s_d_t, s_d_e, bias, SOFTPLUS, ACC)
        h, y = _advance(h, A_rows, s_A_n, mask_e, dt, dt * u, u * D[None, :], B_base, C_base, t, b_group, c_group, mask, offs_n, offs_t,
                        s_B_t, s_B_n, s_C_t, s_C_n, N, BLOCK_T, True, ACC)
        if HAS_Z:
            zt = _time_tile(z_base, t, offs_e, mask, s_z_t, s_z_e, ACC)
            y = y * zt * tl.sigmoid(zt)
        tl.store(y_base + t[:, None] * s_y_t + offs_e[None, :] * s_y_e, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(final_ptr + pid_b * s_f_b + offs_n[:, None] * s_f_n + offs_e[None, :] * s_f_e,
             h.to(final_ptr.dtype.element_ty), mask=mask_ne)


@_runtime_ints
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, dy_ptr, dfinal_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    T, E, group_size, n_segments,
    s_u_b, s_u_t, s_u_e, s_d_b, s_d_t, s_d_e, s_z_b, s_z_t, s_z_e, s_g_b, s_g_t, s_g_e,
    s_B_b, s_B_t, s_B_g, s_B_n, s_C_b, s_C_t, s_C_g, s_C_n, s_A_e, s_A_n,
    s_k_b, s_k_s, s_k_e, s_k_n,  # checkpoints (B, S, E, N)
    s_df_b, s_df_e, s_df_n,  # ∂ final state (B, E, N)
    s_w_p, s_w_c, s_w_n, s_w_e,  # scratch (programs, SEG_CHUNKS + 1, BLOCK_N, BLOCK_E)
    s_o_b, s_o_t, s_o_e,  # du, dΔ, dz: (B, T, E)
    s_x_b, s_x_t, s_x_g, s_x_n,  # dB, dC: (B, T, G, N)
    s_st_b, s_st_e, s_st_n,  # dA partials, dh0: (B, E, N)
    s_v_b, s_v_e,  # dD, dbias partials: (B, E)
    has_d, has_bias, has_dfinal,
    N: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, ONE_GROUP: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, SEG_CHUNKS: tl.constexpr, ACC: tl.constexpr,
):
    """The loop over n is a real (rolled) loop: the per-(n, channel) values that live across
    chunks -- the states entering each chunk, the adjoint carry r and the ∂A sums -- are kept
    by each lane in memory it alone touches (the scratch, and the dh0 and dA outputs
    themselves), one load and store per n and chunk, so registers hold one n's tiles only
    and the kernel compiles quickly."""
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_e = offs_e < E
    mask_ne = (offs_n < N)[:, None] & mask_e[None, :]
    A_rows = A_ptr + offs_e * s_A_e
    D = tl.load(D_ptr + offs_e, mask=mask_e & (has_d != 0), other=0.0).to(ACC)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e & (has_bias != 0), other=0.0).to(ACC)
    # r = ∂L/∂(state entering the chunk after the current one), kept in dh0: first ∂L/∂(final state)
    state_offs = pid_b * s_st_b + offs_e * s_st_e  # + n * s_st_n
    r0 = _state_tile(dfinal_ptr + pid_b * s_df_b, offs_n, offs_e, mask_ne & (has_dfinal != 0), s_df_n, s_df_e, ACC)
    tl.store(dh0_ptr + state_offs[None, :] + offs_n[:, None] * s_st_n, r0, mask=mask_ne)
    tl.store(dA_ptr + state_offs[None, :] + offs_n[:, None] * s_st_n, tl.zeros((BLOCK_N, BLOCK_E), ACC),
             mask=mask_ne)
    tl.debug_barrier()
    dD_acc = tl.zeros((BLOCK_E,), dtype=ACC)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=ACC)
    u_base = u_ptr + pid_b * s_u_b
    d_base = delta_ptr + pid_b * s_d_b
    z_base = z_ptr + pid_b * s_z_b
    g_base = dy_ptr + pid_b * s_g_b
    B_base = B_ptr + pid_b * s_B_b
    C_base = C_ptr + pid_b * s_C_b
    dB_base = dB_ptr + pid_b * s_x_b
    dC_base = dC_ptr + pid_b * s_x_b
    b_group = (offs_e // group_size) * s_B_g
    c_group = (offs_e // group_size) * s_C_g
    x_group = (offs_e // group_size) * s_x_g
    x_group0 = ((pid_e * BLOCK_E) // group_size) * s_x_g
    scratch_base = scratch_ptr + (pid_b * tl.num_programs(0) + pid_e) * s_w_p
    scratch_lane = scratch_base + (offs_e - pid_e * BLOCK_E) * s_w_e  # + k * s_w_c + n * s_w_n
    for si in range(0, n_segments):
        seg = n_segments - 1 - si
        start = seg * (SEG_CHUNKS * BLOCK_T)
        n_chunks = tl.minimum(SEG_CHUNKS, tl.cdiv(T - start, BLOCK_T))
        # 1. the segment's states from its checkpoint: scratch[k] = the state entering chunk k
        h = tl.load(ckpt_ptr + pid_b * s_k_b + seg * s_k_s + offs_n[:, None] * s_k_n + offs_e[None, :] * s_k_e,
                    mask=mask_ne, other=0.0).to(ACC)
        tl.store(scratch_lane[None, :] + offs_n[:, None] * s_w_n, h, mask=mask_ne)
        tl.debug_barrier()  # the rows are read back one n at a time, maybe by another lane layout
        for k in range(0, n_chunks):
            t = start + k * BLOCK_T + offs_t
            mask = (t < T)[:, None] & mask_e[None, :]
            u, _, dt = _load_chunk(u_base, d_base, t, offs_e, mask, s_u_t, s_u_e, s_d_t, s_d_e, bias, SOFTPLUS, ACC)
            dtu = dt * u
            for n in tl.range(0, N):
                A_n = tl.load(A_rows + n * s_A_n, mask=mask_e, other=0.0).to(ACC)
                h_n = tl.load(scratch_lane + k * s_w_c + n * s_w_n, mask=mask_e, other=0.0)
                decay = tl.exp2(dt * (A_n * LOG2E)[None, :])
                drive = dtu * _bc_column(B_base, t, b_group, n, mask, s_B_t, s_B_n, ACC)
                cum_decay, cum_drive = tl.associative_scan((decay, drive), 0, _affine_combine)
                last = _row(cum_decay, offs_t, BLOCK_T - 1) * h_n + _row(cum_drive, offs_t, BLOCK_T - 1)
                tl.store(scratch_lane + (k + 1) * s_w_c + n * s_w_n, last, mask=mask_e)
        # 2. the chunks in reverse: adjoint scan and gradients
        for ki in range(0, n_chunks):
            k = n_chunks - 1 - ki
            t = start + k * BLOCK_T + offs_t
            mask_t = t < T
            mask = mask_t[:, None] & mask_e[None, :]
            u, raw, dt = _load_chunk(u_base, d_base, t, offs_e, mask, s_u_t, s_u_e, s_d_t, s_d_e, bias, SOFTPLUS,
                                     ACC)
            dtu = dt * u
            g_ssm = _time_tile(g_base, t, offs_e, mask, s_g_t, s_g_e, ACC)
            if HAS_Z:
                zt = _time_tile(z_base, t, offs_e, mask, s_z_t, s_z_e, ACC)
                g_ssm = g_ssm * zt * tl.sigmoid(zt)  # ∂L/∂(C h + D u)
            du = g_ssm * D[None, :]
            ddt = tl.zeros((BLOCK_T, BLOCK_E), dtype=ACC)
            y = u * D[None, :]
            for n in tl.range(0, N):
                A_n = tl.load(A_rows + n * s_A_n, mask=mask_e, other=0.0).to(ACC)[None, :]
                h_in = tl.load(scratch_lane + k * s_w_c + n * s_w_n, mask=mask_e, other=0.0)
                r_n = tl.load(dh0_ptr + state_offs + n * s_st_n, mask=mask_e, other=0.0)
                Bn = _bc_column(B_base, t, b_group, n, mask, s_B_t, s_B_n, ACC)
                Cn = _bc_column(C_base, t, c_group, n, mask, s_C_t, s_C_n, ACC)
                decay = tl.exp2(dt * (A_n * LOG2E))
                drive = dtu * Bn
                cum_decay, cum_drive = tl.associative_scan((decay, drive), 0, _affine_combine)
                states = cum_decay * h_in[None, :] + cum_drive
                if HAS_Z:
                    y += Cn * states
                _add_bc_grad(dC_base, t, x_group, x_group0, n, g_ssm * states, mask_t, mask, s_x_t, s_x_n, ONE_GROUP)
                v, w, _ = tl.associative_scan((g_ssm * Cn, tl.full((BLOCK_T, BLOCK_E), 1.0, ACC), decay), 0,
                                              _adjoint_combine, reverse=True)
                p = v + w * r_n[None, :]  # ∂L/∂h_t
                pB = p * Bn
                decayed = states - drive  # exp(Δ_t A) h_{t-1}
                du += dt * pB
                ddt += p * decayed * A_n + u * pB
                _add_bc_grad(dB_base, t, x_group, x_group0, n, p * dtu, mask_t, mask, s_x_t, s_x_n, ONE_GROUP)
                dA_n = tl.load(dA_ptr + state_offs + n * s_st_n, mask=mask_e, other=0.0)
                tl.store(dA_ptr + state_offs + n * s_st_n, dA_n + tl.sum(p * decayed * dt, axis=0), mask=mask_e)
                tl.store(dh0_ptr + state_offs + n * s_st_n, _row(decay * p, offs_t, 0), mask=mask_e)
            out_offs = pid_b * s_o_b + t[:, None] * s_o_t + offs_e[None, :] * s_o_e
            dD_acc += tl.sum(g_ssm * u, axis=0)
            if HAS_Z:  # g and z again (cache hits) rather than held in registers through the loop
                g = _time_tile(g_base, t, offs_e, mask, s_g_t, s_g_e, ACC)
                zt = _time_tile(z_base, t, offs_e, mask, s_z_t, s_z_e, ACC)
                gate_sig = tl.sigmoid(zt)
                dz = g * y * gate_sig * (1.0 + zt * (1.0 - gate_sig))
                tl.store(dz_ptr + out_offs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            ddt = tl.where(mask, ddt, 0.0)
            dbias_acc += tl.sum(ddt, axis=0)
            tl.store(du_ptr + out_offs, du.to(du_ptr.dtype.element_ty), mask=mask)
            tl.store(ddelta_ptr + out_offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)
    tl.store(dD_ptr + pid_b * s_v_b + offs_e * s_v_e, dD_acc, mask=mask_e)
    tl.store(dbias_ptr + pid_b * s_v_b + offs_e * s_v_e, dbias_acc, mask=mask_e)


@triton.jit(do_not_specialize=["E", "group_size", "has_d", "has_bias"])
def _state_update_kernel(
    state_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, out_ptr,
    E, group_size,
    stride_s_b, stride_s_e, stride_s_n,
    stride_u_b, stride_u_e,
    stride_d_b, stride_d_e,
    stride_z_b, stride_z_e,
    stride_y_b, stride_y_e,
    stride_o_b, stride_o_e, stride_o_n,
    stride_B_b, stride_B_g, stride_B_n,
    stride_C_b, stride_C_g, stride_C_n,
    stride_A_e, stride_A_n, has_d, has_bias,
    N: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):
    """One step for a (batch, channel block): each lane reads its channel's state (N values),
    then writes it (so ``out_ptr`` may be ``state_ptr``: in place)."""
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    mask_e = offs_e < E
    mask_en = mask_e[:, None] & (offs_n < N)[None, :]
    group = offs_e // group_size
    h = tl.load(state_ptr + pid_b * stride_s_b + offs_e[:, None] * stride_s_e + offs_n[None, :] * stride_s_n,
                mask=mask_en, other=0.0).to(ACC)
    A2 = tl.load(A_ptr + offs_e[:, None] * stride_A_e + offs_n[None, :] * stride_A_n, mask=mask_en,
                 other=0.0).to(ACC) * LOG2E
    u = tl.load(u_ptr + pid_b * stride_u_b + offs_e * stride_u_e, mask=mask_e, other=0.0).to(ACC)
    dt = tl.load(delta_ptr + pid_b * stride_d_b + offs_e * stride_d_e, mask=mask_e, other=0.0).to(ACC)
    dt += tl.load(bias_ptr + offs_e, mask=mask_e & (has_bias != 0), other=0.0).to(ACC)
    if SOFTPLUS:
        dt = _softplus(dt)
    Bt = tl.load(B_ptr + pid_b * stride_B_b + group[:, None] * stride_B_g + offs_n[None, :] * stride_B_n,
                 mask=mask_en, other=0.0).to(ACC)
    Ct = tl.load(C_ptr + pid_b * stride_C_b + group[:, None] * stride_C_g + offs_n[None, :] * stride_C_n,
                 mask=mask_en, other=0.0).to(ACC)
    h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bt
    y = tl.sum(h * Ct, axis=1)
    y += u * tl.load(D_ptr + offs_e, mask=mask_e & (has_d != 0), other=0.0).to(ACC)
    if HAS_Z:
        zt = tl.load(z_ptr + pid_b * stride_z_b + offs_e * stride_z_e, mask=mask_e, other=0.0).to(ACC)
        y *= zt * tl.sigmoid(zt)
    tl.store(y_ptr + pid_b * stride_y_b + offs_e * stride_y_e, y.to(y_ptr.dtype.element_ty), mask=mask_e)
    tl.store(out_ptr + pid_b * stride_o_b + offs_e[:, None] * stride_o_e + offs_n[None, :] * stride_o_n,
             h.to(out_ptr.dtype.element_ty), mask=mask_en)

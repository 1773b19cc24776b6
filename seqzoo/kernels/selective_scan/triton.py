"""Triton kernels of the selective scan (the math and layout: :mod:`seqzoo.kernels.selective_scan`).

Work split: **one lane per (channel, state) pair**. A program holds ``BLOCK_E`` channels x
``BLOCK_N`` states (N = 16: 2 channels x 16 states, one warp), so a call launches
batch x E / BLOCK_E programs -- 3,072 one-warp programs at B = 4, E = 1,536, all resident
at once at 64-70 registers -- to hide the latency of a step (the earlier layout, one lane
per channel walking all N states, ran 192 warps there and was latency-bound, 7-15x slower
than mamba_ssm on an H200; this one is 4x faster forward, 3.5x forward + backward:
docs/benchmarks.md).

* **time inside each thread**: tiles are (BLOCK_T, BLOCK_E, BLOCK_N) with the BLOCK_T steps
  of a chunk in each lane's registers, so ``tl.associative_scan`` along time is a
  sequential in-register scan (no shuffles, no shared memory);
* per-channel inputs (u, Δ, z, the output gradient) are read as tiles of the same shape,
  equal along the states (each lane reads its channel's value: one address per channel, a
  broadcast), so every tile has one layout and no layout conversion is needed;
* sums over the states (y = Σ_n C h, ∂u, ∂Δ) are warp shuffles (``keep_dims`` keeps them in
  the tile's layout); sums over the block's channels (∂B, ∂C) likewise, then float32 atomic
  adds across blocks.

Every stride is a runtime (unspecialised) argument: the compiler then sees no contiguity
and keeps the default layout (time in registers, states then channels across lanes). D,
the Δ bias, the initial state, the final state's gradient and checkpoint saving are runtime
options (absent = a masked load of 0), so the compiled variants are dtype x z gate (forward)
x softplus (x blocks spanning B/C groups in the backward). The compile gate checks every
one for spills (``variants.py``).

Backward. The forward saves the state every ``SEGMENT`` = 128 steps (B, T/128, E, N) (1/8
of u's bytes in fp32 at N = 16; mamba_ssm saves one every 2048) and, with a z gate, the
output before the gate (what ∂z needs; mamba_ssm keeps it too). The backward walks the
segments in reverse: it recomputes the segment's states from its checkpoint, keeping the
state entering each ``BLOCK_T``-step chunk in a per-program scratch (one value per lane
and chunk: 33 x 32 values per program at N = 16, meant to stay in L1/L2), then walks those
chunks in reverse with the adjoint p_t = ∂L/∂h_t:

    p_t = C_t g_t + exp(Δ_{t+1} A) p_{t+1},     g_t = ∂L/∂y_t (times SiLU(z_t) with a gate),

as a reverse associative scan whose elements (v, P, f) = (C_t g_t, 1, exp(Δ_t A)) carry
the decay of a segment's first step, so exp(Δ_{t+1} A) needs no shifted reload or second
exponential. The carry between chunks is r = exp(Δ_0 A) p_0 of the later chunk (= ∂L/∂h
of the state entering it), one register per lane; after the first chunk it is ∂L/∂h_init.
Gradients:

    ∂u_t = Δ_t Σ_n p B_t + D g_t,   ∂Δ_t = Σ_n p (A exp(Δ_t A) h_{t-1} + u_t B_t) (x σ(raw) for softplus),
    ∂A = Σ_t p Δ_t exp(Δ_t A) h_{t-1},   ∂B_t = Σ_e p Δ_t u_t,   ∂C_t = Σ_e g_t h_t,

with exp(Δ_t A) h_{t-1} = h_t - Δ_t u_t B_t. ∂A is summed in each lane's registers over
the whole sequence; ∂A, ∂D, ∂bias leave as per-batch partial sums reduced in torch. The
gate's own gradient ∂z = ∂L/∂y y_pre SiLU'(z) and g = ∂L/∂y SiLU(z) are elementwise, in
torch around the kernel.

Numerics: everything in float32 (float64 for float64 inputs); inputs in bf16/fp16 are read
as such (half the bytes) and converted in registers; outputs are written in the input
dtype, the final state and ∂h_init in the accumulation dtype. Chunk lengths: 4 steps
forward (the next chunk's inputs loaded while one is computed) and 4 backward (2 in
float64), fixed, so one compiled variant serves every T (see
:func:`~seqzoo.kernels.selective_scan.triton_blocks.launch_config`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype
from seqzoo.kernels.selective_scan.triton_blocks import (
    _TL_DTYPE, LOG2E, _add_bc_grad, _adjoint_combine, _chunk_states, _ckpt_strides, _grouped, _load_chunk, _or,
    _fwd_inputs, _per_channel, _per_state, _row, _runtime_ints, _softplus, _store_per_channel, _strides, launch_config,
)

STEP_BLOCK_E = 32  # the decoding step: one warp, one channel per lane


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
        y, y_pre, final, checkpoints = _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                                                save)
        ctx.delta_softplus = delta_softplus
        ctx.b_shape, ctx.c_shape = B.shape, C.shape
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, checkpoints, y_pre)
        ctx.set_materialize_grads(False)  # an unused y or final state comes back as None
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        u, delta, A, B, C, D, z, delta_bias, checkpoints, y_pre = ctx.saved_tensors
        grads = _backward(u, delta, A, B, C, D, z, delta_bias, checkpoints, y_pre, ctx.delta_softplus, dy, dfinal)
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
    block_e = min(STEP_BLOCK_E, triton.next_power_of_2(E))
    # u stands in for absent D, z, Δ bias: pointers behind false HAS_* flags are never read
    _state_update_kernel[(triton.cdiv(E, block_e), batch)](
        state, u, delta, A, B3, C3, _or(D, u), _or(z, u), _or(delta_bias, u), y, new_state,
        E, E // groups,
        *state.stride(), *u.stride(), *delta.stride(), *_strides(z, 2), *y.stride(), *new_state.stride(),
        *B3.stride(), *C3.stride(), *A.stride(), int(D is not None), int(delta_bias is not None),
        N=N, HAS_Z=z is not None, SOFTPLUS=delta_softplus,
        BLOCK_E=block_e, BLOCK_N=triton.next_power_of_2(N), ACC=_TL_DTYPE[acc], num_warps=1,
    )
    return y, new_state


# ---------------------------------------------------------------------------------------
# launch helpers
# ---------------------------------------------------------------------------------------


def _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save):
    """(y, y before the z gate when saved for the backward (else None), final state, checkpoints)."""
    batch, T, E = u.shape
    N = A.shape[1]
    B4, C4 = _grouped(B, 2), _grouped(C, 2)  # (batch, T, G, N)
    groups = B4.shape[2]
    acc = accumulation_dtype(u.dtype)
    cfg = launch_config(u.dtype, E, N)
    n_segments = triton.cdiv(T, cfg["segment"])
    y = torch.empty_like(u, memory_format=torch.contiguous_format)
    y_pre = torch.empty_like(y) if save and z is not None else None
    final = torch.empty(batch, E, N, device=u.device, dtype=acc)
    checkpoints = torch.empty(batch, n_segments if save else 0, E, N, device=u.device, dtype=acc)
    h0 = final if initial_state is None else initial_state  # read only when has_h0
    dummy = u.new_empty(0)
    _scan_fwd_kernel[(triton.cdiv(E, cfg["block_e"]), batch)](
        u, delta, A, B4, C4, _or(D, dummy), _or(z, dummy), _or(delta_bias, dummy), h0, y, _or(y_pre, y), final,
        checkpoints, T, E, E // groups,
        *u.stride(), *delta.stride(), *_strides(z, 3), *y.stride(), *B4.stride(), *C4.stride(), *A.stride(),
        *h0.stride(), *final.stride(), *_ckpt_strides(checkpoints),
        int(D is not None), int(delta_bias is not None), int(initial_state is not None), int(save),
        N=N, HAS_Z=z is not None, SOFTPLUS=delta_softplus, BLOCK_T=cfg["fwd_t"], BLOCK_E=cfg["block_e"],
        BLOCK_N=cfg["block_n"], SEG_CHUNKS=cfg["fwd_seg"], PREFETCH=cfg["prefetch"], ACC=_TL_DTYPE[acc],
        num_warps=cfg["warps"],
    )
    return y, y_pre, final, checkpoints


def _backward(u, delta, A, B, C, D, z, delta_bias, checkpoints, y_pre, delta_softplus, dy, dfinal):
    batch, T, E = u.shape
    N = A.shape[1]
    B4, C4 = _grouped(B, 2), _grouped(C, 2)
    groups = B4.shape[2]
    acc = accumulation_dtype(u.dtype)
    cfg = launch_config(u.dtype, E, N)
    block_e, block_n = cfg["bwd_block_e"], cfg["block_n"]
    programs_e = triton.cdiv(E, block_e)
    dev = u.device
    dz = None
    if dy is None:
        dy = torch.zeros_like(u)  # any strides: the kernel reads dy's
    elif z is not None:  # the gate y = y_pre SiLU(z), elementwise: g = ∂L/∂y_pre and ∂z here
        zf, dyf = z.to(acc), dy.to(acc)
        gate = torch.sigmoid(zf)
        dz = (dyf * y_pre.to(acc) * gate * (1.0 + zf * (1.0 - gate))).to(z.dtype)
        dy = dyf * zf * gate
    if z is not None and dz is None:
        dz = torch.zeros_like(z)
    du = torch.empty_like(u, memory_format=torch.contiguous_format)
    ddelta = torch.empty_like(delta, memory_format=torch.contiguous_format)
    dB = torch.zeros(batch, T, groups, N, device=dev, dtype=acc)
    dC = torch.zeros(batch, T, groups, N, device=dev, dtype=acc)
    dA_part = torch.empty(batch, E, N, device=dev, dtype=acc)
    dD_part = torch.empty(batch, E, device=dev, dtype=acc)
    dbias_part = torch.empty(batch, E, device=dev, dtype=acc)
    dh0 = torch.empty(batch, E, N, device=dev, dtype=acc)
    scratch = torch.empty(batch * programs_e, cfg["bwd_seg"] + 1, block_e, block_n, device=dev, dtype=acc)
    dfinal_t = dh0 if dfinal is None else dfinal  # read only when has_dfinal
    dummy = u.new_empty(0)
    _scan_bwd_kernel[(programs_e, batch)](
        u, delta, A, B4, C4, _or(D, dummy), _or(delta_bias, dummy), checkpoints, dy, dfinal_t, scratch,
        du, ddelta, dA_part, dB, dC, dD_part, dbias_part, dh0,
        T, E, E // groups, checkpoints.shape[1],
        *u.stride(), *delta.stride(), *dy.stride(), *B4.stride(), *C4.stride(), *A.stride(),
        *_ckpt_strides(checkpoints), *dfinal_t.stride(), *scratch.stride(), *du.stride(), *dB.stride(),
        *dA_part.stride(), *dD_part.stride(),
        int(D is not None), int(delta_bias is not None), int(dfinal is not None),
        N=N, SOFTPLUS=delta_softplus, ONE_GROUP=groups == 1 or (E // groups) % block_e == 0,
        BLOCK_T=cfg["bwd_t"], BLOCK_E=block_e, BLOCK_N=block_n, SEG_CHUNKS=cfg["bwd_seg"], ACC=_TL_DTYPE[acc],
        num_warps=cfg["bwd_warps"],
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
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, y_ptr, ypre_ptr, final_ptr, ckpt_ptr,
    T, E, group_size,
    s_u_b, s_u_t, s_u_e, s_d_b, s_d_t, s_d_e, s_z_b, s_z_t, s_z_e, s_y_b, s_y_t, s_y_e,
    s_B_b, s_B_t, s_B_g, s_B_n, s_C_b, s_C_t, s_C_g, s_C_n, s_A_e, s_A_n,
    s_h0_b, s_h0_e, s_h0_n, s_f_b, s_f_e, s_f_n, s_k_b, s_k_s, s_k_e, s_k_n,
    has_d, has_bias, has_h0, save,
    N: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr, SEG_CHUNKS: tl.constexpr, PREFETCH: tl.constexpr, ACC: tl.constexpr,
):
    """y and the final state; with ``save`` the state before every segment of SEG_CHUNKS
    chunks and, with the z gate, y before the gate (``ypre_ptr``, same strides as y). D, the
    Δ bias and the initial state are runtime options (absent = 0: one masked load per
    program), so they add no compiled variants."""
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_e = offs_e < E
    mask_en = mask_e[:, None] & (offs_n < N)[None, :]
    state_offs = offs_e[:, None] * s_h0_e + offs_n[None, :] * s_h0_n
    h = tl.load(h0_ptr + pid_b * s_h0_b + state_offs, mask=mask_en & (has_h0 != 0), other=0.0).to(ACC)
    A2 = tl.load(A_ptr + offs_e[:, None] * s_A_e + offs_n[None, :] * s_A_n, mask=mask_en, other=0.0).to(ACC) * LOG2E
    D = tl.load(D_ptr + offs_e, mask=mask_e & (has_d != 0), other=0.0).to(ACC)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e & (has_bias != 0), other=0.0).to(ACC)
    u_base = u_ptr + pid_b * s_u_b
    d_base = delta_ptr + pid_b * s_d_b
    z_base = z_ptr + pid_b * s_z_b
    y_base = y_ptr + pid_b * s_y_b
    ypre_base = ypre_ptr + pid_b * s_y_b
    B_base = B_ptr + pid_b * s_B_b
    C_base = C_ptr + pid_b * s_C_b
    b_group = (offs_e // group_size) * s_B_g
    c_group = (offs_e // group_size) * s_C_g
    ckpt_offs = offs_e[:, None] * s_k_e + offs_n[None, :] * s_k_n
    if PREFETCH:  # the next chunk's inputs are loaded while this one is computed
        nu, ndt, nB, nC, nz = _fwd_inputs(u_base, d_base, B_base, C_base, z_base, offs_t, T, offs_e, offs_n, mask_en,
                                          b_group, c_group, bias, s_u_t, s_u_e, s_d_t, s_d_e, s_B_t, s_B_n, s_C_t,
                                          s_C_n, s_z_t, s_z_e, HAS_Z, SOFTPLUS, ACC)
    for c in tl.range(0, tl.cdiv(T, BLOCK_T)):
        if (save != 0) & (c % SEG_CHUNKS == 0):
            tl.store(ckpt_ptr + pid_b * s_k_b + (c // SEG_CHUNKS) * s_k_s + ckpt_offs, h, mask=mask_en)
        t = c * BLOCK_T + offs_t
        mask = (t < T)[:, None, None] & mask_en[None, :, :]
        if PREFETCH:
            u, dt, B_t, C_t, zt = nu, ndt, nB, nC, nz
            nu, ndt, nB, nC, nz = _fwd_inputs(u_base, d_base, B_base, C_base, z_base, t + BLOCK_T, T, offs_e, offs_n,
                                              mask_en, b_group, c_group, bias, s_u_t, s_u_e, s_d_t, s_d_e, s_B_t,
                                              s_B_n, s_C_t, s_C_n, s_z_t, s_z_e, HAS_Z, SOFTPLUS, ACC)
        else:
            u, dt, B_t, C_t, zt = _fwd_inputs(u_base, d_base, B_base, C_base, z_base, t, T, offs_e, offs_n, mask_en,
                                              b_group, c_group, bias, s_u_t, s_u_e, s_d_t, s_d_e, s_B_t, s_B_n, s_C_t,
                                              s_C_n, s_z_t, s_z_e, HAS_Z, SOFTPLUS, ACC)
        states, _ = _chunk_states(h, A2, dt, dt * u * B_t)
        y = tl.sum(C_t * states, axis=2, keep_dims=True) + u * D[None, :, None]
        h = _row(states, offs_t, BLOCK_T - 1)
        if HAS_Z:
            if save != 0:
                _store_per_channel(ypre_base, t, offs_e, offs_n, y, mask, s_y_t, s_y_e)
            y = y * zt * tl.sigmoid(zt)
        _store_per_channel(y_base, t, offs_e, offs_n, y, mask, s_y_t, s_y_e)
    tl.store(final_ptr + pid_b * s_f_b + offs_e[:, None] * s_f_e + offs_n[None, :] * s_f_n,
             h.to(final_ptr.dtype.element_ty), mask=mask_en)


@_runtime_ints
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, ckpt_ptr, g_ptr, dfinal_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    T, E, group_size, n_segments,
    s_u_b, s_u_t, s_u_e, s_d_b, s_d_t, s_d_e, s_g_b, s_g_t, s_g_e,
    s_B_b, s_B_t, s_B_g, s_B_n, s_C_b, s_C_t, s_C_g, s_C_n, s_A_e, s_A_n,
    s_k_b, s_k_s, s_k_e, s_k_n,  # checkpoints (B, S, E, N)
    s_df_b, s_df_e, s_df_n,  # ∂ final state (B, E, N)
    s_w_p, s_w_c, s_w_e, s_w_n,  # scratch (programs, SEG_CHUNKS + 1, BLOCK_E, BLOCK_N)
    s_o_b, s_o_t, s_o_e,  # du, dΔ: (B, T, E)
    s_x_b, s_x_t, s_x_g, s_x_n,  # dB, dC: (B, T, G, N)
    s_st_b, s_st_e, s_st_n,  # dA partials, dh0: (B, E, N)
    s_v_b, s_v_e,  # dD, dbias partials: (B, E)
    has_d, has_bias, has_dfinal,
    N: tl.constexpr, SOFTPLUS: tl.constexpr, ONE_GROUP: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, SEG_CHUNKS: tl.constexpr, ACC: tl.constexpr,
):
    """``g_ptr`` is ∂L/∂(C h + D u) (the gate's factor already applied). Per lane, one
    (channel, state) pair: the adjoint carry r and the ∂A sum stay in registers for the
    whole sequence; the states entering each chunk of a segment go through the scratch."""
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_e = offs_e < E
    mask_en = mask_e[:, None] & (offs_n < N)[None, :]
    A = tl.load(A_ptr + offs_e[:, None] * s_A_e + offs_n[None, :] * s_A_n, mask=mask_en, other=0.0).to(ACC)
    A2 = A * LOG2E
    D = tl.load(D_ptr + offs_e, mask=mask_e & (has_d != 0), other=0.0).to(ACC)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e & (has_bias != 0), other=0.0).to(ACC)
    # r = ∂L/∂(state entering the chunk after the current one): first ∂L/∂(final state)
    r = tl.load(dfinal_ptr + pid_b * s_df_b + offs_e[:, None] * s_df_e + offs_n[None, :] * s_df_n,
                mask=mask_en & (has_dfinal != 0), other=0.0).to(ACC)
    dA_acc = tl.zeros((BLOCK_E, BLOCK_N), dtype=ACC)
    dD_acc = tl.zeros((1, BLOCK_E, 1), dtype=ACC)
    dbias_acc = tl.zeros((1, BLOCK_E, 1), dtype=ACC)
    u_base = u_ptr + pid_b * s_u_b
    d_base = delta_ptr + pid_b * s_d_b
    g_base = g_ptr + pid_b * s_g_b
    B_base = B_ptr + pid_b * s_B_b
    C_base = C_ptr + pid_b * s_C_b
    dB_base = dB_ptr + pid_b * s_x_b
    dC_base = dC_ptr + pid_b * s_x_b
    du_base = du_ptr + pid_b * s_o_b
    dd_base = ddelta_ptr + pid_b * s_o_b
    b_group = (offs_e // group_size) * s_B_g
    c_group = (offs_e // group_size) * s_C_g
    x_group = (offs_e // group_size) * s_x_g
    x_group0 = ((pid_e * BLOCK_E) // group_size) * s_x_g
    scratch_lanes = (scratch_ptr + (pid_b * tl.num_programs(0) + pid_e) * s_w_p
                     + (offs_e - pid_e * BLOCK_E)[:, None] * s_w_e + offs_n[None, :] * s_w_n)  # + k * s_w_c
    for si in range(0, n_segments):
        seg = n_segments - 1 - si
        start = seg * (SEG_CHUNKS * BLOCK_T)
        n_chunks = tl.minimum(SEG_CHUNKS, tl.cdiv(T - start, BLOCK_T))
        # 1. the segment's states from its checkpoint: scratch[k] = the state entering chunk k
        h = tl.load(ckpt_ptr + pid_b * s_k_b + seg * s_k_s + offs_e[:, None] * s_k_e + offs_n[None, :] * s_k_n,
                    mask=mask_en, other=0.0).to(ACC)
        tl.store(scratch_lanes, h, mask=mask_en)
        for k in range(0, n_chunks):
            t = start + k * BLOCK_T + offs_t
            mask = (t < T)[:, None, None] & mask_en[None, :, :]
            u, _, dt = _load_chunk(u_base, d_base, t, offs_e, offs_n, mask, s_u_t, s_u_e, s_d_t, s_d_e, bias,
                                   SOFTPLUS, ACC)
            B_t = _per_state(B_base, t, b_group, offs_n, mask, s_B_t, s_B_n, ACC)
            states, _ = _chunk_states(h, A2, dt, dt * u * B_t)
            h = _row(states, offs_t, BLOCK_T - 1)
            tl.store(scratch_lanes + (k + 1) * s_w_c, h, mask=mask_en)
        tl.debug_barrier()  # the scratch is read back below (each lane its own values)
        # 2. the chunks in reverse: adjoint scan and gradients
        for ki in range(0, n_chunks):
            k = n_chunks - 1 - ki
            t = start + k * BLOCK_T + offs_t
            mask_t = t < T
            mask = mask_t[:, None, None] & mask_en[None, :, :]
            u, raw, dt = _load_chunk(u_base, d_base, t, offs_e, offs_n, mask, s_u_t, s_u_e, s_d_t, s_d_e, bias,
                                     SOFTPLUS, ACC)
            dtu = dt * u
            g = _per_channel(g_base, t, offs_e, offs_n, mask, s_g_t, s_g_e, ACC)
            h_in = tl.load(scratch_lanes + k * s_w_c, mask=mask_en, other=0.0)
            B_t = _per_state(B_base, t, b_group, offs_n, mask, s_B_t, s_B_n, ACC)
            drive = dtu * B_t
            states, decay = _chunk_states(h_in, A2, dt, drive)
            C_t = _per_state(C_base, t, c_group, offs_n, mask, s_C_t, s_C_n, ACC)
            mask_tn = mask_t[:, None, None] & (offs_n < N)[None, None, :]
            _add_bc_grad(dC_base, t, x_group, x_group0, offs_n, g * states, mask_tn, mask, s_x_t, s_x_n, ONE_GROUP)
            v, w, _ = tl.associative_scan((g * C_t, tl.full((BLOCK_T, BLOCK_E, BLOCK_N), 1.0, ACC), decay), 0,
                                          _adjoint_combine, reverse=True)
            p = v + w * r[None, :, :]  # ∂L/∂h_t
            pB = p * B_t
            decayed = states - drive  # exp(Δ_t A) h_{t-1}
            _add_bc_grad(dB_base, t, x_group, x_group0, offs_n, p * dtu, mask_tn, mask, s_x_t, s_x_n, ONE_GROUP)
            dA_acc += tl.sum(p * decayed * dt, axis=0)
            r = _row(decay * p, offs_t, 0)
            du = tl.sum(dt * pB, axis=2, keep_dims=True) + g * D[None, :, None]
            ddt = tl.sum(p * decayed * A[None, :, :] + u * pB, axis=2, keep_dims=True)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            ddt = tl.where(mask, ddt, 0.0)
            first = offs_n[None, None, :] == 0  # one lane per channel: these tiles are equal along the states
            dD_acc += tl.sum(tl.sum(tl.where(first, g * u, 0.0), axis=2, keep_dims=True), axis=0, keep_dims=True)
            dbias_acc += tl.sum(tl.sum(tl.where(first, ddt, 0.0), axis=2, keep_dims=True), axis=0, keep_dims=True)
            _store_per_channel(du_base, t, offs_e, offs_n, du, mask, s_o_t, s_o_e)
            _store_per_channel(dd_base, t, offs_e, offs_n, ddt, mask, s_o_t, s_o_e)
        tl.debug_barrier()  # the next segment overwrites the scratch
    state_offs = pid_b * s_st_b + offs_e[:, None] * s_st_e + offs_n[None, :] * s_st_n
    tl.store(dA_ptr + state_offs, dA_acc, mask=mask_en)
    tl.store(dh0_ptr + state_offs, r, mask=mask_en)
    v_offs = pid_b * s_v_b + offs_e[None, :, None] * s_v_e + offs_n[None, None, :] * 0
    v_mask = mask_e[None, :, None] & (offs_n == 0)[None, None, :]
    tl.store(dD_ptr + v_offs, tl.broadcast_to(dD_acc, (1, BLOCK_E, BLOCK_N)), mask=v_mask)
    tl.store(dbias_ptr + v_offs, tl.broadcast_to(dbias_acc, (1, BLOCK_E, BLOCK_N)), mask=v_mask)


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
    N: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
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

"""Shared pieces of the selective-scan Triton kernels (:mod:`.triton`): block sizes
(:func:`launch_config`), the launch helpers, the decorator that leaves lengths and strides
unspecialised (:func:`_runtime_ints`), and the ``@triton.jit`` building blocks the forward,
backward and decoding-step kernels are made of. The layout they assume is described in
:mod:`.triton`."""

from __future__ import annotations

import inspect

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, triton_interpreted

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
SEGMENT = 128  # steps between the states the forward saves for the backward
WARPS = 1  # one warp per program: BLOCK_E = 32 channels, one per lane
_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


def launch_config(dtype: torch.dtype, E: int) -> dict[str, int]:
    """Block sizes for inputs of ``dtype`` with E channels: BLOCK_E (channels per program),
    the forward and backward chunk lengths, the steps between checkpoints and the chunks per
    checkpoint segment.

    On a GPU the chunks are as short as keeps the kernels free of register spills (checked
    by the compile gate). Under the Triton interpreter (CPU tests) registers do not exist
    and its cost is per chunk, so chunks are longer and segments shorter (64 steps): the
    tests then cross several checkpoint segments at small T; the code path is the same.
    """
    wide = accumulation_dtype(dtype) == torch.float64
    if triton_interpreted():
        fwd_t, bwd_t, segment = 16, 8, 64
    else:
        (fwd_t, bwd_t), segment = ((4, 2) if wide else (8, 4)), SEGMENT
    return dict(block_e=min(32 * WARPS, triton.next_power_of_2(E)), fwd_t=fwd_t, bwd_t=bwd_t, segment=segment,
                fwd_seg=segment // fwd_t, bwd_seg=segment // bwd_t)

def _grouped(x: Tensor, lead: int) -> Tensor:
    """(lead..., N) -> (lead..., 1, N): B and C as grouped views, (batch, [T,] G, N)."""
    return x.unsqueeze(lead) if x.dim() == lead + 1 else x


def _or(t: Tensor | None, dummy: Tensor) -> Tensor:
    return dummy if t is None else t


def _strides(t: Tensor | None, ndim: int) -> tuple[int, ...]:
    return (0,) * ndim if t is None else t.stride()

def _ckpt_strides(checkpoints: Tensor) -> tuple[int, ...]:
    """(B, S, E, N) strides, with S's stride valid even when no checkpoint is kept."""
    batch, _, E, N = checkpoints.shape
    return (checkpoints.stride(0), E * N, N, 1)


# Strides along the state index of tensors read one n at a time (A, B, C, dB, dC): left to
# Triton's usual specialisation, so with the common stride 1 the N reads of a step are
# constant offsets from one address (fewer registers); they do not shape any tile's layout.
_PER_N_STRIDES = ("s_A_n", "s_B_n", "s_C_n", "s_x_n")


def _runtime_ints(fn):
    """``triton.jit`` with every length, size and stride argument unspecialised: one
    compiled variant per flag set whatever T, and no contiguity the layout would follow."""
    names = [p for p in inspect.signature(fn).parameters
             if (p.startswith(("s_", "has_")) and p not in _PER_N_STRIDES)
             or p in ("T", "E", "group_size", "n_segments", "save")]
    return triton.jit(do_not_specialize=names)(fn)


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """Compose x -> a1 x + b1 then x -> a2 x + b2."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _adjoint_combine(v_later, w_later, f_later, v_here, w_here, f_here):
    """The reverse scan of p_t = v_t + f_{t+1} p_{t+1}: a segment [s, e] is (v, w, f) with
    p_s = v + w f_{e+1} p_{e+1}, w = prod_{s<k<=e} f_k, f = f_s (its first step's decay);
    ``here`` (earlier steps) followed by ``later``."""
    link = w_here * f_later
    return v_here + link * v_later, link * w_later, f_here


@triton.jit
def _softplus(x):
    # torch's softplus with threshold 20: x itself above it (and no overflow in exp).
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _row(x, offs, i):
    """x[i, :] of an (R, BLOCK_E) tile whose R rows sit in each lane's registers."""
    return tl.sum(tl.where(offs[:, None] == i, x, 0.0), axis=0)


@triton.jit
def _set_row(x, offs, i, v):
    """x with row i replaced by v."""
    return tl.where(offs[:, None] == i, v[None, :], x)


@triton.jit
def _state_tile(ptr, offs_n, offs_e, mask, s_n, s_e, ACC: tl.constexpr):
    """An (N, BLOCK_E) state-shaped tile (A^T, a state), 0 where masked."""
    return tl.load(ptr + offs_n[:, None] * s_n + offs_e[None, :] * s_e, mask=mask, other=0.0).to(ACC)


@triton.jit
def _time_tile(base, t, offs_e, mask, s_t, s_e, ACC: tl.constexpr):
    """A (BLOCK_T, BLOCK_E) tile of a (T, E) input, 0 where masked."""
    return tl.load(base + t[:, None] * s_t + offs_e[None, :] * s_e, mask=mask, other=0.0).to(ACC)


@triton.jit
def _bc_column(base, t, group_off, n, mask, s_t, s_n, ACC: tl.constexpr):
    """B[t, group(e), n] or C[...] as a (BLOCK_T, BLOCK_E) tile (equal across a group's lanes)."""
    return tl.load(base + t[:, None] * s_t + group_off[None, :] + n * s_n, mask=mask, other=0.0).to(ACC)


@triton.jit
def _load_chunk(u_base, d_base, t, offs_e, mask, s_u_t, s_u_e, s_d_t, s_d_e, bias,
                SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """u and Δ of a chunk, and Δ before the softplus; Δ is 0 outside the sequence (decay 1)."""
    u = _time_tile(u_base, t, offs_e, mask, s_u_t, s_u_e, ACC)
    raw = _time_tile(d_base, t, offs_e, mask, s_d_t, s_d_e, ACC) + bias[None, :]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return u, raw, tl.where(mask, dt, 0.0)


@triton.jit
def _advance(h, A_rows, s_A_n, mask_e, dt, dtu, y, B_base, C_base, t, b_group, c_group, mask, offs_n, offs_t,
             s_B_t, s_B_n, s_C_t, s_C_n,
             N: tl.constexpr, BLOCK_T: tl.constexpr, WITH_Y: tl.constexpr, ACC: tl.constexpr):
    """Advance the state h (N, BLOCK_E) over one chunk; with WITH_Y add C_t h_t to y.
    A[e, n] is read per n (a cache hit) rather than held in N more registers."""
    for n in tl.static_range(N):
        A_n = tl.load(A_rows + n * s_A_n, mask=mask_e, other=0.0).to(ACC)
        decay = tl.exp2(dt * (A_n * LOG2E)[None, :])
        drive = dtu * _bc_column(B_base, t, b_group, n, mask, s_B_t, s_B_n, ACC)
        cum_decay, cum_drive = tl.associative_scan((decay, drive), 0, _affine_combine)
        states = cum_decay * _row(h, offs_n, n)[None, :] + cum_drive
        if WITH_Y:
            y += _bc_column(C_base, t, c_group, n, mask, s_C_t, s_C_n, ACC) * states
        h = _set_row(h, offs_n, n, _row(states, offs_t, BLOCK_T - 1))
    return h, y


@triton.jit
def _add_bc_grad(ptr, t, group_off, group0, n, x, mask_t, mask_te, s_t, s_n, ONE_GROUP: tl.constexpr):
    """dB or dC [t, group, n] += sum over the block's channels of x (BLOCK_T, BLOCK_E)."""
    if ONE_GROUP:
        # keep_dims: the sum stays in the tile's layout (no shared-memory layout conversion)
        tl.atomic_add(ptr + t[:, None] * s_t + group0 + n * s_n, tl.sum(x, axis=1, keep_dims=True),
                      mask=mask_t[:, None], sem="relaxed")
    else:
        tl.atomic_add(ptr + t[:, None] * s_t + group_off[None, :] + n * s_n, x, mask=mask_te, sem="relaxed")

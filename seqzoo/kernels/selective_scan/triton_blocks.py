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
LANES = 32  # a warp: BLOCK_E x BLOCK_N (channel, state) pairs, one per lane
# Replaces launch_config's choices (keys fwd_t, bwd_t, prefetch, bwd_e: channels per backward
# program) where set: for tuning runs (bench/scan_tuning.py) and the tests of the other
# settings; never set by seqzoo itself.
TUNING: dict[str, int] = {}
_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


def launch_config(dtype: torch.dtype, E: int, N: int) -> dict[str, int]:
    """Block sizes for inputs of ``dtype`` with E channels and N states: BLOCK_N (the states,
    padded to a power of two), BLOCK_E (channels per program: a warp's lanes hold BLOCK_E x
    BLOCK_N (channel, state) pairs), the warps, the forward and backward chunk lengths,
    whether the forward loads the next chunk's inputs while computing one (prefetch), the
    steps between checkpoints and the chunks per checkpoint segment.

    On a GPU: chunks of 4 steps and the prefetch, the fastest of ten candidates on an H200
    (bench/scan_tuning.py, docs/benchmarks.md): short chunks keep the kernels at 64-70
    registers, so all 3,072 one-warp programs of B = 4, E = 1,536 are resident at once, and
    the prefetch hides a chunk's load latency. Under the Triton interpreter (CPU tests)
    registers do not exist and its cost is per chunk, so chunks are longer and segments
    shorter (64 steps): the tests then cross several checkpoint segments at small T; the code
    path (prefetch included) is the same. ``TUNING`` replaces the chunk lengths, the prefetch
    and the backward's channels per program (``bwd_block_e``, ``bwd_warps``; the forward's by
    default: wider ones were slower on the H200).
    """
    wide = accumulation_dtype(dtype) == torch.float64
    if triton_interpreted():
        fwd_t, bwd_t, segment = 16, 8, 64
    else:
        (fwd_t, bwd_t), segment = ((4, 2) if wide else (4, 4)), SEGMENT
    fwd_t, bwd_t, prefetch = (TUNING.get(k, v) for k, v in (("fwd_t", fwd_t), ("bwd_t", bwd_t), ("prefetch", 1)))
    block_n = triton.next_power_of_2(N)
    block_e = min(max(1, LANES // block_n), triton.next_power_of_2(E))
    bwd_e = min(TUNING.get("bwd_e", block_e), triton.next_power_of_2(E))
    return dict(block_e=block_e, block_n=block_n, warps=max(1, block_e * block_n // LANES), fwd_t=fwd_t,
                bwd_t=bwd_t, prefetch=prefetch, segment=segment, fwd_seg=segment // fwd_t, bwd_seg=segment // bwd_t,
                bwd_block_e=bwd_e, bwd_warps=max(1, bwd_e * block_n // LANES))


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


def _runtime_ints(fn):
    """``triton.jit`` with every length, size and stride argument unspecialised: one
    compiled variant per flag set whatever T, and no contiguity the layout would follow
    (the tiles keep the default layout: time in each lane's registers, (channel, state)
    across lanes)."""
    names = [p for p in inspect.signature(fn).parameters
             if p.startswith(("s_", "has_")) or p in ("T", "E", "group_size", "n_segments", "save")]
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
def _row(x, offs_t, i):
    """x[i] of a (BLOCK_T, BLOCK_E, BLOCK_N) tile (time in each lane's registers): (BLOCK_E, BLOCK_N)."""
    return tl.sum(tl.where(offs_t[:, None, None] == i, x, 0.0), axis=0)


@triton.jit
def _per_channel(base, t, offs_e, offs_n, mask, s_t, s_e, ACC: tl.constexpr):
    """A (T, E) input as a (BLOCK_T, BLOCK_E, BLOCK_N) tile, equal along the states: each
    lane reads its channel's value (one address per channel: a broadcast), so the tile has
    the layout of the per-state tiles and no layout conversion is needed; 0 where masked."""
    ptr = base + t[:, None, None] * s_t + offs_e[None, :, None] * s_e + offs_n[None, None, :] * 0
    return tl.load(ptr, mask=mask, other=0.0).to(ACC)


@triton.jit
def _per_state(base, t, group_off, offs_n, mask, s_t, s_n, ACC: tl.constexpr):
    """B[t, group(e), n] or C[...] as a (BLOCK_T, BLOCK_E, BLOCK_N) tile, 0 where masked."""
    ptr = base + t[:, None, None] * s_t + group_off[None, :, None] + offs_n[None, None, :] * s_n
    return tl.load(ptr, mask=mask, other=0.0).to(ACC)


@triton.jit
def _store_per_channel(base, t, offs_e, offs_n, x, mask, s_t, s_e):
    """Store a (BLOCK_T, BLOCK_E, 1) per-channel tile to a (T, E) output (the state-0 lane writes)."""
    ptr = base + t[:, None, None] * s_t + offs_e[None, :, None] * s_e + offs_n[None, None, :] * 0
    tl.store(ptr, x.to(base.dtype.element_ty), mask=mask & (offs_n == 0)[None, None, :])


@triton.jit
def _load_chunk(u_base, d_base, t, offs_e, offs_n, mask, s_u_t, s_u_e, s_d_t, s_d_e, bias,
                SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """u and Δ of a chunk, and Δ before the softplus; Δ is 0 outside the sequence (decay 1)."""
    u = _per_channel(u_base, t, offs_e, offs_n, mask, s_u_t, s_u_e, ACC)
    raw = _per_channel(d_base, t, offs_e, offs_n, mask, s_d_t, s_d_e, ACC) + bias[None, :, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return u, raw, tl.where(mask, dt, 0.0)


@triton.jit
def _fwd_inputs(u_base, d_base, B_base, C_base, z_base, t, T, offs_e, offs_n, mask_en, b_group, c_group, bias,
                s_u_t, s_u_e, s_d_t, s_d_e, s_B_t, s_B_n, s_C_t, s_C_n, s_z_t, s_z_e,
                HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """The forward's inputs for the steps ``t``: u, Δ (after the softplus, 0 outside the
    sequence), B, C and z (u again without a gate)."""
    mask = (t < T)[:, None, None] & mask_en[None, :, :]
    u, _, dt = _load_chunk(u_base, d_base, t, offs_e, offs_n, mask, s_u_t, s_u_e, s_d_t, s_d_e, bias, SOFTPLUS, ACC)
    B_t = _per_state(B_base, t, b_group, offs_n, mask, s_B_t, s_B_n, ACC)
    C_t = _per_state(C_base, t, c_group, offs_n, mask, s_C_t, s_C_n, ACC)
    zt = u
    if HAS_Z:
        zt = _per_channel(z_base, t, offs_e, offs_n, mask, s_z_t, s_z_e, ACC)
    return u, dt, B_t, C_t, zt


@triton.jit
def _chunk_states(h, A2, dt, drive):
    """The states of a chunk from the state h (BLOCK_E, BLOCK_N) entering it: h_t = decay_t
    h_{t-1} + drive_t with decay = exp(Δ A) (``A2`` = A log2(e)), as an in-register scan
    along time; returns (states, decay)."""
    decay = tl.exp2(dt * A2[None, :, :])
    cum_decay, cum_drive = tl.associative_scan((decay, drive), 0, _affine_combine)
    return cum_decay * h[None, :, :] + cum_drive, decay


@triton.jit
def _add_bc_grad(ptr, t, group_off, group0, offs_n, x, mask_tn, mask, s_t, s_n, ONE_GROUP: tl.constexpr):
    """dB or dC [t, group, n] += sum over the block's channels of x (BLOCK_T, BLOCK_E, BLOCK_N)."""
    if ONE_GROUP:
        # keep_dims: the sum stays in the tile's layout (no layout conversion)
        tl.atomic_add(ptr + t[:, None, None] * s_t + group0 + offs_n[None, None, :] * s_n,
                      tl.sum(x, axis=1, keep_dims=True), mask=mask_tn, sem="relaxed")
    else:
        tl.atomic_add(ptr + t[:, None, None] * s_t + group_off[None, :, None] + offs_n[None, None, :] * s_n, x,
                      mask=mask, sem="relaxed")

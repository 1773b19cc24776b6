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
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, is_export_mode, resolve_impl
from seqzoo.kernels.retention.reference import (
    retention_parallel_ref,
    retention_recurrent_ref,
    retention_ref,
    retention_step,
)

state_dtype = accumulation_dtype
"""The backbones' name for :func:`seqzoo.kernels.dispatch.accumulation_dtype` (the same function)."""

__all__ = ["retention", "retention_parallel_ref", "retention_recurrent_ref", "retention_ref", "retention_step"]


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
        from seqzoo.kernels.retention.triton import RetentionFunction

        o, final = RetentionFunction.apply(q, k, v, gamma, initial_state, scale, chunk_size)
    return (o, final) if return_final_state else o


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

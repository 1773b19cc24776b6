"""Retention in plain torch: the chunkwise form (the CPU and export path), the parallel and
recurrent forms (oracles) and one streaming step. The math is in :mod:`seqzoo.kernels.retention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, chunk_for


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
    sdt = accumulation_dtype(q.dtype)
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

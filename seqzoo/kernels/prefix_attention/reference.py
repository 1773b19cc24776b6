"""Prefix attention in plain torch: the combine, one streaming step, the loop-free chunked
form (the CPU and export path) and the sequential oracle. The math is in
:mod:`seqzoo.kernels.prefix_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, chunk_for

PrefixState = tuple[Tensor, Tensor, Tensor]
"""(m (B, H), u (B, H), w (B, H, D)): running max, sum of exp(s - m), sum of exp(s - m) v."""


def identity_state(batch_size: int, n_heads: int, head_dim: int, *, device=None, dtype=torch.float32) -> PrefixState:
    """The scan's identity (-inf, 0, 0): the state before the first token."""
    m = torch.full((batch_size, n_heads), float("-inf"), device=device, dtype=dtype)
    return m, torch.zeros(batch_size, n_heads, device=device, dtype=dtype), torch.zeros(
        batch_size, n_heads, head_dim, device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------
# torch: combine, step, chunked loop-free reference, sequential reference
# ---------------------------------------------------------------------------------------


def combine(a: PrefixState, b: PrefixState) -> PrefixState:
    """(m_a, u_a, w_a) ⊕ (m_b, u_b, w_b), guarded so that identity ⊕ identity = identity."""
    m_a, u_a, w_a = a
    m_b, u_b, w_b = b
    m = torch.maximum(m_a, m_b)
    f_a, f_b = _exp_below(m_a, m), _exp_below(m_b, m)
    return m, u_a * f_a + u_b * f_b, w_a * f_a[..., None] + w_b * f_b[..., None]


def prefix_attention_step(s_t: Tensor, v_t: Tensor, state: PrefixState) -> tuple[Tensor, PrefixState]:
    """One step: ``s_t`` (B, H), ``v_t`` (B, H, D) -> (o_t (B, H, D), new state)."""
    m, u, w = state
    sdt = m.dtype
    m, u, w = combine(state, (s_t.to(sdt), torch.ones_like(u), v_t.to(sdt)))
    return _normalise(w, u).to(v_t.dtype), (m, u, w)


def prefix_attention_recurrent_ref(
    s: Tensor, v: Tensor, *, initial_state: PrefixState | None = None
) -> tuple[Tensor, PrefixState]:
    """The scan one token at a time (an oracle for the tests)."""
    B, T, H, D = v.shape
    state = initial_state if initial_state is not None else identity_state(B, H, D, device=v.device,
                                                                          dtype=accumulation_dtype(v.dtype))
    state = tuple(x.to(accumulation_dtype(v.dtype)) for x in state)
    outs = []
    for t in range(T):
        o_t, state = prefix_attention_step(s[:, t], v[:, t], state)
        outs.append(o_t)
    return torch.stack(outs, dim=1), state


def prefix_attention_ref(
    s: Tensor,
    v: Tensor,
    *,
    initial_state: PrefixState | None = None,
    chunk_size: int = 64,
    return_final_state: bool = True,
) -> tuple[Tensor, PrefixState | None]:
    """Chunked prefix attention in torch, loop-free.

    The length is padded to chunks of C. The state entering chunk n combines the
    initial state with the totals of chunks j < n in one masked max and one weighted
    sum (every weight exp(m_j - M_n) <= 1); inside a chunk, P_ti = exp(s_i - M_t) for
    i <= t with M_t the running max, so o = (P v + carry) / (P 1 + carry). Every
    exponent is masked before ``exp``, so no overflow reaches a value or a gradient.
    """
    B, T, H, D = v.shape
    C = chunk_for(T, chunk_size)
    sdt = accumulation_dtype(v.dtype)
    s, v = s.to(sdt), v.to(sdt)
    n_chunks = (T + C - 1) // C
    pad = n_chunks * C - T
    sc = F.pad(s, (0, 0, 0, pad), value=float("-inf")).reshape(B, n_chunks, C, H)
    vc = F.pad(v, (0, 0, 0, 0, 0, pad)).reshape(B, n_chunks, C, H, D)
    # totals of each chunk, then the state entering each chunk
    m_chunk = sc.amax(dim=2)  # (B, N, H)
    p_chunk = torch.exp(sc - _finite(m_chunk)[:, :, None])
    u_chunk, w_chunk = p_chunk.sum(dim=2), torch.einsum("bnih,bnihd->bnhd", p_chunk, vc)
    earlier = _strictly_lower(n_chunks, v.device)[None, :, :, None]
    m_in = _masked_max(m_chunk[:, None], earlier, dim=2)  # (B, N, H)
    if initial_state is not None:
        m0, u0, w0 = (x.to(sdt) for x in initial_state)
        m_in = torch.maximum(m0[:, None], m_in)
    m_in_ref = _finite(m_in)
    f = _masked_exp(m_chunk[:, None] - m_in_ref[:, :, None], earlier)  # (B, N, J, H)
    u_in = torch.einsum("bnjh,bjh->bnh", f, u_chunk)
    w_in = torch.einsum("bnjh,bjhd->bnhd", f, w_chunk)
    if initial_state is not None:
        f0 = torch.exp(m0[:, None] - m_in_ref)  # (B, N, H)
        u_in = u_in + u0[:, None] * f0
        w_in = w_in + w0[:, None] * f0[..., None]
    # inside each chunk
    causal = ~_strictly_lower(C, v.device).T[None, None, :, :, None]  # [t, i]: i <= t
    m_run = torch.maximum(m_in[:, :, None], _masked_max(sc[:, :, None], causal, dim=3))  # (B, N, C, H)
    m_run_ref = _finite(m_run)
    p = _masked_exp(sc[:, :, None] - m_run_ref[:, :, :, None], causal)  # (B, N, t, i, H)
    carry = torch.exp(m_in[:, :, None] - m_run_ref)  # (B, N, C, H)
    u = u_in[:, :, None] * carry + p.sum(dim=3)
    w = w_in[:, :, None] * carry[..., None] + torch.einsum("bntih,bnihd->bnthd", p, vc)
    o = _normalise(w, u).reshape(B, n_chunks * C, H, D)[:, :T]
    if not return_final_state:
        return o, None
    initial = initial_state if initial_state is not None else identity_state(B, H, D, device=v.device, dtype=sdt)
    return o, _final_state(s, v, tuple(x.to(sdt) for x in initial))


def _final_state(s: Tensor, v: Tensor, initial: PrefixState) -> PrefixState:
    m0, u0, w0 = initial
    m = torch.maximum(m0, s.amax(dim=1))
    p = _exp_below(s, m[:, None])
    f0 = _exp_below(m0, m)
    return m, u0 * f0 + p.sum(dim=1), w0 * f0[..., None] + torch.einsum("bth,bthd->bhd", p, v)


def _finite(m: Tensor) -> Tensor:
    """A running max as a subtraction reference: -inf (nothing seen yet) becomes 0."""
    return m.masked_fill(torch.isneginf(m), 0.0)


def _exp_below(x: Tensor, m: Tensor) -> Tensor:
    """exp(x - m) for x <= m, never inf - inf: 0 where m = -inf (then x = -inf too)."""
    return torch.exp(x - _finite(m))


def _masked_exp(x: Tensor, allowed: Tensor) -> Tensor:
    """exp(x) where allowed, else 0 -- masked before exp (x may overflow where not allowed)."""
    return torch.exp(x.masked_fill(~allowed, float("-inf")))


def _normalise(w: Tensor, u: Tensor) -> Tensor:
    """w / u, and 0 where u = 0 (a prefix of -inf scores only)."""
    return w / torch.where(u > 0, u, torch.ones_like(u))[..., None]


def _strictly_lower(n, device) -> Tensor:
    """(n, n) bool, True where column < row."""
    idx = torch.arange(n, device=device)
    return idx[None, :] < idx[:, None]


def _masked_max(x: Tensor, allowed: Tensor, dim: int) -> Tensor:
    """Max over ``dim`` of x where ``allowed`` (broadcast against x), -inf where nothing is."""
    return x.masked_fill(~allowed, float("-inf")).amax(dim=dim)

"""Aaren's many-to-many attention as a prefix scan (Feng et al. 2024, "Attention as an RNN").

With one query per head, the output at t is softmax attention over the prefix,

    o_t = Σ_{i<=t} exp(s_i) v_i / Σ_{i<=t} exp(s_i),      s_i = q · k_i / sqrt(d),

computed as a scan over triples (m, u, w) -- running max, sum and weighted sum:
leaf (s_i, 1, v_i); (m_a, u_a, w_a) ⊕ (m_b, u_b, w_b) = (m, u_a e^{m_a-m} + u_b e^{m_b-m},
w_a e^{m_a-m} + w_b e^{m_b-m}) with m = max(m_a, m_b); o_t = w_t / u_t. The identity is
(-inf, 0, 0); every ``e^{x - m}`` is taken against m replaced by 0 where m = -inf, so
combining two identities gives the identity, never NaN. Scores may be -inf (masked
positions); an output whose prefix holds only -inf scores is 0.

Layout: scores ``s`` (B, T, H), values ``v`` (B, T, H, D); state (m (B, H), u (B, H),
w (B, H, D)) in fp32 (fp64 for fp64 inputs).

* :func:`prefix_attention` -- the public op: Triton on CUDA, the chunked reference on CPU.
* :func:`prefix_attention_ref` -- loop-free torch: running maxima as masked maxima inside
  a chunk and across chunks, so ``torch.export`` keeps a symbolic length.
* :func:`prefix_attention_recurrent_ref` -- the sequential scan, one step at a time (oracle).
* :func:`prefix_attention_step` -- one streaming step.

Triton: a chunk inside a segment is a small causal attention, ``P V`` with
P_ti = exp(s_i - M_t) for i <= t (M_t the running max); segments run in parallel and a
short sequential pass scans their totals. Backward runs the same layout in reverse on
the linear recurrence R_i = dO_i + exp(lse_i - lse_{i+1}) R_{i+1} (every factor <= 1),
from which dv_i = exp(s_i - lse_i) R_i and ds_i = exp(s_i - lse_i) (v_i · R_i - ρ_i).
"""

from __future__ import annotations

from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, resolve_impl
from seqzoo.kernels.prefix_attention.reference import (
    PrefixState,
    combine,
    identity_state,
    prefix_attention_recurrent_ref,
    prefix_attention_ref,
    prefix_attention_step,
)

state_dtype = accumulation_dtype
"""The backbones' name for :func:`seqzoo.kernels.dispatch.accumulation_dtype` (the same function)."""

__all__ = ["PrefixState", "combine", "identity_state", "prefix_attention", "prefix_attention_recurrent_ref",
           "prefix_attention_ref", "prefix_attention_step"]


def prefix_attention(
    s: Tensor,
    v: Tensor,
    *,
    initial_state: PrefixState | None = None,
    return_final_state: bool = False,
    chunk_size: int = 64,
    impl: str = "auto",
) -> Tensor | tuple[Tensor, PrefixState]:
    """Prefix softmax attention of scores ``s`` (B, T, H) over values ``v`` (B, T, H, D).

    Returns ``o`` (B, T, H, D), and the final state (m, u, w) when ``return_final_state``.
    ``initial_state`` continues an earlier call (use :func:`identity_state` for none).
    """
    _check_args(s, v, initial_state, chunk_size)
    if resolve_impl(impl, s, v, op="prefix_attention") == "torch":
        o, final = prefix_attention_ref(s, v, initial_state=initial_state, chunk_size=chunk_size,
                                        return_final_state=return_final_state)
    else:
        m0, u0, w0 = initial_state if initial_state is not None else (None, None, None)
        from seqzoo.kernels.prefix_attention.triton import PrefixAttentionFunction

        o, *final = PrefixAttentionFunction.apply(s, v, m0, u0, w0, chunk_size)
        final = tuple(final)
    return (o, final) if return_final_state else o


def _check_args(s, v, initial_state, chunk_size) -> None:
    if v.dim() != 4:
        raise ValueError(f"prefix_attention: v must be (B, T, H, D), got {tuple(v.shape)}")
    B, T, H, D = v.shape
    if s.shape != (B, T, H):
        raise ValueError(f"prefix_attention: scores s must be (B, T, H) = {(B, T, H)}, got {tuple(s.shape)}")
    if not (s.dtype.is_floating_point and v.dtype.is_floating_point):
        raise ValueError(f"prefix_attention: s and v must be floating point, got {s.dtype} and {v.dtype}")
    if T < 1:
        raise ValueError("prefix_attention: the sequence is empty (T = 0)")
    if initial_state is not None:
        if len(initial_state) != 3:
            raise ValueError("prefix_attention: initial_state is a tuple (m, u, w)")
        expected = ((B, H), (B, H), (B, H, D))
        got = tuple(tuple(x.shape) for x in initial_state)
        if got != expected:
            raise ValueError(f"prefix_attention: initial_state shapes must be {expected} (m, u, w), got {got}")
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"prefix_attention: chunk_size must be a power of two >= 16, got {chunk_size}")

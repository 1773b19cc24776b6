"""ProbSparse self-attention (Informer, Zhou et al., AAAI 2021, eqs. 3-4).

Only the ``u = c * ceil(ln L)`` queries whose attention is most peaked are computed in
full; the "lazy" rest get the output of a uniform attention, mean(V), or under a causal
mask the cumulative sum of V (as the authors' code). How peaked a query is comes from
``U = c * ceil(ln L)`` sampled keys:

    M(q_i) = max_j s_ij - (Σ_j s_ij) / L_K,   s_ij = q_i . k_j / sqrt(d),  j in the U sampled keys

as the authors' code (``_prob_QK``: ``max(-1) - sum(-1) / L_K``, L_K the number of keys;
with a padding mask, the sequence's valid length). The paper's eq. 4 writes the mean over
the sampled keys (divide by U instead); the two rank queries differently. Cost
O(L log L) instead of O(L^2). c = ``factor`` = 5.

Sampling is reproducible. Key indices come from a counter-based integer hash of
(seed, query, sample, layer): in training the seed is drawn from torch's generator on
every call (so ``seed_everything`` fixes a run), in eval it is the fixed ``sample_seed``,
so evaluation, export and onnxruntime all see the same keys. Under a causal mask a query
samples only the keys it may see (the authors' code samples from all keys); with a
padding mask only valid keys are sampled and padded queries are never among the top u.
Attention dropout applies to the active queries' weights, as in full attention (the
authors' ProbAttention defines it but never applies it). With ``u >= L`` every query is
active and the result is full attention; ``attention="full"`` switches to ordinary (SDPA)
attention.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from seqzoo.errors import ConfigError
from seqzoo.layers.attention import SelfAttention

__all__ = ["AttentionKind", "ProbSparseSelfAttention", "prob_sparse_attention", "probsparse_count",
           "sample_key_index"]

AttentionKind = Literal["prob", "full"]


class ProbSparseSelfAttention(SelfAttention):
    """Multi-head self-attention computed in full only for the top-u queries (or fully).

    Args:
        d_model: token width D.
        n_heads: heads H (must divide D).
        attention: ``"prob"`` (ProbSparse) or ``"full"`` (ordinary softmax attention).
        factor: the sampling factor c (u = c * ceil(ln L) keys sampled and queries active).
        causal: query t sees keys <= t only (Informer's masked decoder self-attention).
        dropout: dropout on the active queries' attention weights (training only).
        sample_seed: the key-sampling seed in eval mode.
        stream: an index mixed into the hash so that layers sample different keys.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        attention: AttentionKind = "prob",
        factor: int = 5,
        causal: bool = False,
        dropout: float = 0.0,
        sample_seed: int = 0,
        stream: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(d_model, n_heads, causal=causal, dropout=dropout, device=device, dtype=dtype)
        if attention not in ("prob", "full"):
            raise ConfigError(f"attention must be 'prob' (ProbSparse) or 'full', got {attention!r}")
        if not isinstance(factor, int) or factor < 1:
            raise ConfigError(f"factor (the ProbSparse sampling factor c) must be a positive integer, got {factor!r}")
        self.attention = attention
        self.factor = factor
        self.sample_seed = int(sample_seed)
        self.stream = stream

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if self.attention == "full":
            return super().attend(q, k, v, mask)
        seed: Tensor | int = self.sample_seed
        if self.training:
            seed = torch.randint(0, _HASH_MODULUS, (), device=q.device)
        return prob_sparse_attention(q, k, v, factor=self.factor, mask=mask, causal=self.causal, seed=seed,
                                     stream=self.stream, dropout=self.dropout if self.training else 0.0)

    def extra_repr(self) -> str:
        return f"attention={self.attention!r}, factor={self.factor}, n_heads={self.n_heads}, causal={self.causal}"


def prob_sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    factor: int = 5,
    mask: Tensor | None = None,
    causal: bool = False,
    seed: Tensor | int = 0,
    stream: int = 0,
    dropout: float = 0.0,
) -> Tensor:
    """ProbSparse self-attention over (B, H, L, Dh); ``mask`` (B, L) marks valid positions.

    Active queries attend to the keys they may see (valid, and not in the future when
    causal; always themselves, so no row is empty); lazy queries get mean(V) over valid keys,
    or cumsum(V) when causal.
    """
    B, H, L, E = q.shape
    scale = E**-0.5
    steps = torch.arange(L, device=q.device)
    n = probsparse_count(factor, L)

    # keys each query may sample: [0, span)
    lengths = mask.sum(dim=1, keepdim=True) if mask is not None else None  # (B, 1)
    if causal:
        span = steps + 1 if lengths is None else torch.minimum(steps + 1, lengths)
    else:
        span = torch.full_like(steps, L) if lengths is None else lengths.expand(-1, L)
    index = sample_key_index(seed, span.reshape(-1, L), n, stream)  # (B or 1, L, n)
    index = index.reshape(index.shape[0], 1, -1, 1).expand(B, H, -1, E)
    sampled_k = torch.gather(k, 2, index).view(B, H, L, n, E)
    sampled = torch.einsum("bhle,bhlne->bhln", q, sampled_k) * scale
    n_keys = L if lengths is None else lengths[:, None, :].to(sampled.dtype)  # L_K, (B, 1, 1) when masked
    sparsity = sampled.amax(dim=-1) - sampled.sum(dim=-1) / n_keys  # M(q) as the authors' code, (B, H, L)
    if mask is not None:
        sparsity = sparsity.masked_fill(~mask[:, None, :], float("-inf"))
    top = sparsity.topk(n, dim=-1).indices  # (B, H, n)

    top_index = top[..., None].expand(-1, -1, -1, E)
    scores = torch.gather(q, 2, top_index) @ k.transpose(-1, -2) * scale  # (B, H, n, L)
    if mask is None and not causal:  # every key is visible: nothing to mask
        weights = torch.softmax(scores, dim=-1)
    else:
        visible = (torch.ones_like(scores, dtype=torch.bool) if mask is None
                   else mask[:, None, None, :].expand_as(scores))
        if causal:
            visible = visible & (steps <= top[..., None])
        visible = visible | (steps == top[..., None])
        weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    active = F.dropout(weights, p=dropout) @ v if dropout else weights @ v

    if causal:
        lazy = v.cumsum(dim=2)
    elif mask is None:
        lazy = v.mean(dim=2, keepdim=True).expand_as(v)
    else:
        valid_v = v.masked_fill(~mask[:, None, :, None], 0.0)
        lazy = (valid_v.sum(dim=2, keepdim=True) / lengths.clamp(min=1)[:, :, None, None]).expand_as(v)
    return lazy.scatter(2, top_index, active)


def probsparse_count(factor: int, length):
    """c * ceil(ln L), within [1, L]: both the sampled keys per query and the active queries.

    For a symbolic length (``torch.export``) the count is computed in the graph and becomes
    a data-dependent size, so the exported model keeps a free length.
    """
    if isinstance(length, int):
        return max(1, min(length, factor * math.ceil(math.log(length))))
    count = factor * torch.ceil(torch.log(torch.scalar_tensor(length, dtype=torch.float64)))
    count = count.clamp(min=1).to(torch.int64)
    count = torch.minimum(count, torch.scalar_tensor(length, dtype=torch.int64)).item()
    torch._check(count >= 1)
    torch._check(count <= length)
    return count


_HASH_MODULUS = 2**31 - 1  # a Mersenne prime: products of two residues fit in int64


def sample_key_index(seed: Tensor | int, span: Tensor, n_samples, stream: int = 0) -> Tensor:
    """Pseudo-random key indices (S, L, n_samples) with index < span[s, t] for query t.

    A counter-based hash in int64 arithmetic (two squarings mod 2^31 - 1 between
    multiplicative steps), identical in eager torch, ``torch.export`` and onnxruntime.
    """
    L = span.shape[-1]
    counter = torch.arange(L, device=span.device)[:, None] * n_samples + torch.arange(n_samples, device=span.device)
    x = torch.remainder(counter * 16807 + seed * 9973 + stream * 7919 + 1, _HASH_MODULUS)
    x = torch.remainder(x * x + 12345, _HASH_MODULUS)
    x = torch.remainder(x * 48271 + seed, _HASH_MODULUS)
    x = torch.remainder(x * x + 1, _HASH_MODULUS)
    return (x * span[..., None]) // _HASH_MODULUS

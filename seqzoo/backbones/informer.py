"""Informer (Zhou et al., AAAI 2021): ProbSparse self-attention and self-attention distilling.

ProbSparse attention (paper eq. 3-4). Only the ``u = c * ceil(ln L)`` queries whose
attention is most peaked are computed in full; the "lazy" rest get the output of a
uniform attention, mean(V), or under a causal mask the cumulative sum of V (as the
authors' code). How peaked a query is comes from ``U = c * ceil(ln L)`` sampled keys:

    M(q_i) = max_j s_ij - mean_j s_ij,   s_ij = q_i . k_j / sqrt(d),  j in the sampled keys

(the paper's bound; the authors' code divides the sampled sum by L_K instead of U, which
only rescales the mean term). Cost O(L log L) instead of O(L^2). c = ``factor`` = 5.

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

Distilling (paper eq. 5) between encoder layers: X <- MaxPool(ELU(BatchNorm(Conv1d(X))))
with a circular kernel-3 convolution and MaxPool(3, stride 2), halving L each time. The
backbone contract wants the length back, so :meth:`Informer.forward` repeats each
distilled token over the steps it summarises (nearest-neighbour upsampling);
:meth:`Informer.forward_shrunk` returns the distilled sequence itself, which the
forecasting task's generative decoder attends to, as in the paper. ``distil=False``
keeps full resolution throughout.

The encoder layers are post-LN (``blocks.PostNormBlock``, as the authors'
``EncoderLayer``), with a final LayerNorm. Embeddings (Conv1d token embedding, positions,
time features) and the generative decoder belong to the forecasting task.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, register_backbone
from seqzoo.backbones.blocks import CircularConv1d, PostNormBlock, check_mask, make_norm, mask_positions
from seqzoo.backbones.transformer import SelfAttention
from seqzoo.errors import ConfigError

Attention = Literal["prob", "full"]


@register_backbone("informer")
class Informer(Backbone):
    """Informer encoder: ProbSparse self-attention with distilling between layers."""

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        n_heads: int = 8,
        mlp_ratio: float = 4.0,
        attention: Attention = "prob",
        factor: int = 5,
        distil: bool = True,
        sample_seed: int = 0,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.layers = nn.ModuleList(
            PostNormBlock(
                d_model,
                ProbSparseSelfAttention(d_model, n_heads, attention=attention, factor=factor, dropout=dropout,
                                        sample_seed=sample_seed, stream=i),
                mlp="gelu",
                mlp_ratio=mlp_ratio,
                dropout=dropout,
            )
            for i in range(n_layers)
        )
        self.distilling = nn.ModuleList(DistillingLayer(d_model) for _ in range(n_layers - 1 if distil else 0))
        self.norm_f = make_norm("layer", d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h, _ = self.forward_shrunk(x, mask)
        return self.restore_length(h, x.shape[1])

    def forward_shrunk(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The distilled encoding (B, ceil(L / 2^k), D) and its padding mask, k distilling layers."""
        check_mask(x, mask)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask)
            if i < len(self.distilling):
                x, mask = self.distilling[i](x, mask)
        return self.norm_f(x), mask

    def restore_length(self, h: Tensor, length: int) -> Tensor:
        """Step t of the input reads distilled token floor(t / 2^k), the one whose window covers it."""
        if not len(self.distilling):
            return h
        index = torch.arange(length, device=h.device) // (2 ** len(self.distilling))
        return h.index_select(1, index)


# ---------------------------------------------------------------------------------------
# ProbSparse self-attention
# ---------------------------------------------------------------------------------------


class ProbSparseSelfAttention(SelfAttention):
    """Multi-head self-attention computed in full only for the top-u queries (or fully)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        attention: Attention = "prob",
        factor: int = 5,
        causal: bool = False,
        dropout: float = 0.0,
        sample_seed: int = 0,
        stream: int = 0,
    ) -> None:
        super().__init__(d_model, n_heads, causal=causal, dropout=dropout)
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
    sparsity = sampled.amax(dim=-1) - sampled.mean(dim=-1)  # M(q), (B, H, L)
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


# ---------------------------------------------------------------------------------------
# distilling
# ---------------------------------------------------------------------------------------


class DistillingLayer(nn.Module):
    """X <- MaxPool(3, stride 2)(ELU(BatchNorm(Conv1d_k3_circular(X)))): halves the length."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.conv = CircularConv1d(d_model, d_model)
        self.norm = MaskedBatchNorm1d(d_model)
        self.activation = nn.ELU()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.activation(self.norm(self.conv(x, mask), mask))
        if mask is not None:
            h = h.masked_fill(~mask[..., None], float("-inf"))
        h = max_pool3_stride2(h)
        if mask is None:
            return h, None
        mask = mask[:, ::2]  # pooled step t covers steps 2t-1..2t+1: valid when 2t is
        return mask_positions(h, mask), mask


def max_pool3_stride2(x: Tensor) -> Tensor:
    """MaxPool1d(kernel 3, stride 2, padding 1) along L of (B, L, C), written so that
    ``torch.export`` keeps L symbolic (``F.max_pool1d`` specialises it)."""
    edge = torch.full_like(x[:, :1], float("-inf"))
    padded = torch.cat([edge, x, edge], dim=1)
    window_max = torch.maximum(torch.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return window_max[:, ::2]


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the channels of (B, L, C) tokens; training statistics skip padded steps."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None or not self.training:
            return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask])
        return out

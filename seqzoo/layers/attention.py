"""Multi-head softmax attention (Vaswani et al. 2017) through ``F.scaled_dot_product_attention``,
so GPUs use FlashAttention / memory-efficient kernels.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_h) + mask) V,   per head, d_h = D / H

* :func:`attention` -- SDPA over (B, H, L, d_h) with a key-padding and/or causal mask;
* :class:`SelfAttention` -- fused QKV projection, heads, output projection; subclasses
  replace :meth:`SelfAttention.attend` (ProbSparse attention does);
* :class:`CrossAttention` -- queries attend to a memory (Informer's decoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.errors import ConfigError

__all__ = ["CrossAttention", "SelfAttention", "attention"]


class SelfAttention(nn.Module):
    """Multi-head self-attention with an optional causal mask and a key-padding mask.

    Args:
        d_model: token width D.
        n_heads: heads H (must divide D).
        causal: token t attends to tokens <= t only.
        dropout: dropout on the attention weights (training only).
        bias: biases in the QKV and output projections.
    """

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = False, dropout: float = 0.0, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads = n_heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias, device=device, dtype=dtype)
        self.proj = nn.Linear(d_model, d_model, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        out = self.attend(q, k, v, mask)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Mix heads (B, H, L, Dh); variants of attention override this."""
        return attention(q, k, v, mask=mask, causal=self.causal, dropout=self.dropout if self.training else 0.0)


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, L_q, D) to a memory (B, L_k, D), all keys visible.

    Args:
        d_model: token width D (queries and memory).
        n_heads: heads H (must divide D).
        dropout: dropout on the attention weights (training only).
        bias: biases in the projections.
    """

    def __init__(self, d_model: int, n_heads: int, *, dropout: float = 0.0, bias: bool = True, device=None,
                 dtype=None):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model, bias=bias, device=device, dtype=dtype)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=bias, device=device, dtype=dtype)
        self.proj = nn.Linear(d_model, d_model, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        """``memory_mask`` (B, L_k) bool marks the valid memory positions (None: all)."""
        (B, L, D), S, H = x.shape, memory.shape[1], self.n_heads
        q = self.q(x).view(B, L, H, D // H).transpose(1, 2)
        k, v = self.kv(memory).view(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4)
        allowed = None if memory_mask is None else memory_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


def attention(q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None, causal: bool, dropout: float = 0.0) -> Tensor:
    """SDPA over (B, H, L, Dh) with a (B, L) key-padding mask and/or a causal mask.

    Every query also attends to itself, so a fully padded row never becomes NaN;
    outputs at padded positions are unspecified.

    Args:
        q, k, v: (B, H, L, Dh).
        mask: (B, L) bool, True at valid keys, or None.
        causal: query t sees keys <= t only.
        dropout: dropout on the attention weights.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
    L = q.shape[-2]
    eye = torch.eye(L, dtype=torch.bool, device=q.device)
    allowed = mask[:, None, None, :] | eye
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)

"""Transformer baseline: pre-LN encoder blocks with multi-head self-attention.

Attention runs through ``F.scaled_dot_product_attention``, so GPUs use
FlashAttention / memory-efficient kernels. Positions are the task's business
(its embedding adds them); a causal mask is optional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.backbones.base import register_backbone
from seqzoo.backbones.blocks import BlockStack, MlpKind, NormKind
from seqzoo.errors import ConfigError


class SelfAttention(nn.Module):
    """Multi-head self-attention with an optional causal mask and a key-padding mask."""

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = False, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads = n_heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        out = self.attend(q, k, v, mask)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Mix heads (B, H, L, Dh); variants of attention override this."""
        return attention(q, k, v, mask=mask, causal=self.causal, dropout=self.dropout if self.training else 0.0)


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, L_q, D) to a memory (B, L_k, D), all keys visible."""

    def __init__(self, d_model: int, n_heads: int, *, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        (B, L, D), S, H = x.shape, memory.shape[1], self.n_heads
        q = self.q(x).view(B, L, H, D // H).transpose(1, 2)
        k, v = self.kv(memory).view(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


def attention(q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None, causal: bool, dropout: float = 0.0) -> Tensor:
    """SDPA over (B, H, L, Dh) with a (B, L) key-padding mask and/or a causal mask.

    Every query also attends to itself, so a fully padded row never becomes NaN;
    outputs at padded positions are unspecified.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
    L = q.shape[-2]
    eye = torch.eye(L, dtype=torch.bool, device=q.device)
    allowed = mask[:, None, None, :] | eye
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)


@register_backbone("transformer")
class Transformer(BlockStack):
    """Pre-LN Transformer encoder (Vaswani et al. 2017; pre-LN per Xiong et al. 2020)."""

    causal = True

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        n_heads: int = 4,
        mlp_ratio: float = 4.0,
        mlp: MlpKind = "gelu",
        norm: NormKind = "layer",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.build_residual_blocks(
            lambda i: SelfAttention(d_model, n_heads, causal=causal, dropout=dropout),
            mlp=mlp, mlp_ratio=mlp_ratio, norm=norm, drop_path=drop_path,
        )

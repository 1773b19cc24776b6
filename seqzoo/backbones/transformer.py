"""Transformer baseline: pre-LN encoder blocks with multi-head self-attention.

Attention runs through ``F.scaled_dot_product_attention``, so GPUs use
FlashAttention / memory-efficient kernels (:mod:`seqzoo.layers.attention`). Positions are the task's business
(its embedding adds them); a causal mask is optional.
"""

from __future__ import annotations

from seqzoo.backbones.base import register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.layers import MlpKind, NormKind, SelfAttention


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

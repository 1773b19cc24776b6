"""iTransformer (Liu et al., ICLR 2024): the Transformer encoder applied to *variate* tokens.

Each variate's whole lookback window becomes one token, so attention mixes variates
(multivariate correlations) and the FFN, shared by all tokens, learns each series'
temporal representation. The backbone is the encoder only:

    h <- LayerNorm(h + Dropout(MultiHeadAttention(h)))     attention across variates
    h <- LayerNorm(h + FFN(h))                              FFN per token (Linear, GELU, Linear)
    ...  n_layers times, then a final LayerNorm

(post-LN, as the authors' ``EncoderLayer``/``Encoder``). The forecasting task owns the
rest: per-variate normalisation of the window (mean detached, std = sqrt(biased var +
1e-5)), the token embedding Linear(L, D) (time features as extra tokens), the head
Linear(D, horizon) and the de-normalisation. Tokens have no order, so there are no
positions and no causal form; a padding mask marks absent variates.

Defaults follow the paper's ETTh1 setting: 8 heads, d_ff = d_model (``mlp_ratio=1``).
"""

from __future__ import annotations

from seqzoo.backbones.base import register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.layers import MlpKind, PostNormBlock, SelfAttention


@register_backbone("itransformer")
class ITransformer(BlockStack):
    """iTransformer encoder over variate tokens (post-LN, final LayerNorm)."""

    tokens = "variate"

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        n_heads: int = 8,
        mlp_ratio: float = 1.0,
        mlp: MlpKind = "gelu",
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.build_blocks(
            lambda i: PostNormBlock(
                d_model,
                SelfAttention(d_model, n_heads, dropout=dropout),
                mlp=mlp,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
            ),
            final_norm="layer",
        )

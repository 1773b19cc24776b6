"""Informer (Zhou et al., AAAI 2021): ProbSparse self-attention and self-attention distilling.

ProbSparse self-attention (paper eqs. 3-4) is :mod:`seqzoo.layers.probsparse`: only the
u = c * ceil(ln L) most peaked queries are computed in full, the rest output mean(V).

Distilling (paper eq. 5) between encoder layers: X <- MaxPool(ELU(BatchNorm(Conv1d(X))))
with a circular kernel-3 convolution and MaxPool(3, stride 2), halving L each time. The
backbone contract wants the length back, so :meth:`Informer.forward` repeats each
distilled token over the steps it summarises (nearest-neighbour upsampling);
:meth:`Informer.encoder_memory` (the Backbone contract's decoder memory) returns the
distilled sequence itself, which the forecasting task's generative decoder attends to,
as in the paper. ``distil=False``
keeps full resolution throughout.

The encoder layers are post-LN (``blocks.PostNormBlock``, as the authors'
``EncoderLayer``), with a final LayerNorm. Embeddings (Conv1d token embedding, positions,
time features) and the generative decoder belong to the forecasting task.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, register_backbone
from seqzoo.layers import (
    AttentionKind,
    CircularConv1d,
    MaskedBatchNorm1d,
    PostNormBlock,
    ProbSparseSelfAttention,
    check_mask,
    make_norm,
    mask_positions,
)


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
        attention: AttentionKind = "prob",
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
        h, _ = self.encoder_memory(x, mask)
        return self.restore_length(h, x.shape[1])

    def encoder_memory(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The distilled encoding (B, ceil(L / 2^k), D) and its padding mask, k distilling layers
        (the Backbone contract's decoder memory: what Informer's decoder attends to)."""
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

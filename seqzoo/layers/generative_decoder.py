"""Informer's generative-style decoder (Zhou et al., AAAI 2021, sec. 3.3): the whole
horizon in one forward pass, cross-attending to an encoder memory.

Decoder input: the last ``label_len`` observed steps (start tokens) followed by
``horizon`` zeros, embedded like the encoder input (with the time features of those
steps, which are known in advance). Each layer is post-LN, as the authors' ``DecoderLayer``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.layers.attention import CrossAttention
from seqzoo.layers.blocks import PostNormBlock
from seqzoo.layers.mlp import make_mlp
from seqzoo.layers.norms import make_norm
from seqzoo.layers.positions import Positions
from seqzoo.layers.probsparse import AttentionKind, ProbSparseSelfAttention
from seqzoo.layers.time_embedding import EmbeddingKind, TimeEmbedding

__all__ = ["DecoderLayer", "GenerativeDecoder"]


class GenerativeDecoder(nn.Module):
    """Informer's generative-style decoder: the whole horizon in one forward pass.

    Decoder input: the last ``label_len`` observed steps (start tokens) followed by
    ``horizon`` zeros, embedded like the encoder input (with the time features of those
    steps, which are known in advance). Each layer (post-LN, as Informer's ``DecoderLayer``):

        h <- LN(h + Dropout(MaskedSelfAttention(h)))       ProbSparse (or full), causal
        h <- LN(h + Dropout(CrossAttention(h, memory)))    full attention to the encoder
        h <- LN(h + FFN(h))

    then a final LayerNorm and Linear(D, n_targets); the last ``horizon`` outputs are the
    forecast. Informer's ``mix`` option (a head/position reshuffle of the self-attention
    output) is not reproduced.

    Args:
        n_values: observed channels C of the window.
        n_time_features: time-feature channels F (0: none).
        n_targets: forecast channels (the last ``n_targets`` of C).
        d_model: token width D (the encoder memory's too).
        lookback: window length L.
        horizon: forecast length H.
        label_len: start tokens taken from the end of the window (0..L).
        n_layers: decoder layers.
        n_heads: attention heads.
        mlp_ratio: FFN hidden width / D.
        attention: the masked self-attention, ``"prob"`` (ProbSparse) or ``"full"``.
        factor: the ProbSparse sampling factor c.
        dropout: dropout in attention outputs and FFNs.
        embedding: the value embedding of the decoder tokens, ``"linear"`` or ``"conv"``.
        positions: the decoder tokens' positions.
        embed_dropout: dropout on the decoder tokens.
    """

    def __init__(
        self,
        n_values: int,
        n_time_features: int,
        n_targets: int,
        d_model: int,
        *,
        lookback: int,
        horizon: int,
        label_len: int,
        n_layers: int = 1,
        n_heads: int = 8,
        mlp_ratio: float = 4.0,
        attention: AttentionKind = "prob",
        factor: int = 5,
        dropout: float = 0.0,
        embedding: EmbeddingKind = "linear",
        positions: Positions = "sinusoidal",
        embed_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= label_len <= lookback:
            raise ConfigError(f"label_len (start tokens of the decoder) must be in [0, lookback={lookback}], "
                              f"got {label_len}")
        if n_layers < 1:
            raise ConfigError(f"decoder_layers must be >= 1, got {n_layers}")
        self.lookback, self.horizon, self.label_len = lookback, horizon, label_len
        self.embedding = TimeEmbedding(n_values, n_time_features, d_model, label_len + horizon, kind=embedding,
                                       positions=positions, dropout=embed_dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, mlp_ratio=mlp_ratio, attention=attention, factor=factor,
                         dropout=dropout, stream=i)
            for i in range(n_layers)
        )
        self.norm = make_norm("layer", d_model)
        self.projection = nn.Linear(d_model, n_targets)

    def forward(self, x: Tensor, memory: Tensor, x_mark: Tensor | None = None, y_mark: Tensor | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        """x: the (normalised) window (B, L, C); memory: the encoder output (B, S, D) and its
        padding mask (B, S) (None: all valid)."""
        start = x[:, self.lookback - self.label_len :]
        tokens = torch.cat([start, start.new_zeros(x.shape[0], self.horizon, x.shape[2])], dim=1)
        marks = None
        if x_mark is not None:
            marks = torch.cat([x_mark[:, self.lookback - self.label_len :], y_mark], dim=1)
        h = self.embedding(tokens, marks)
        for layer in self.layers:
            h = layer(h, memory, memory_mask)
        return self.projection(self.norm(h[:, self.label_len :]))


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder, FFN; each post-LN."""

    def __init__(self, d_model: int, n_heads: int, *, mlp_ratio: float, attention: AttentionKind, factor: int,
                 dropout: float, stream: int = 0) -> None:
        super().__init__()
        self_attention = ProbSparseSelfAttention(d_model, n_heads, attention=attention, factor=factor, causal=True,
                                                 dropout=dropout, stream=stream)
        self.self_attention = PostNormBlock(d_model, self_attention, mlp="none", dropout=dropout)
        self.cross_attention = CrossAttention(d_model, n_heads, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.norm_cross = make_norm("layer", d_model)
        self.mlp = make_mlp("gelu", d_model, mlp_ratio, dropout)
        self.norm_mlp = make_norm("layer", d_model)

    def forward(self, h: Tensor, memory: Tensor, memory_mask: Tensor | None = None) -> Tensor:
        h = self.self_attention(h)
        h = self.norm_cross(h + self.drop(self.cross_attention(h, memory, memory_mask)))
        return self.norm_mlp(h + self.mlp(h))

"""Time tokens for forecasting from observations (B, L, C) and their time features (B, L, F):

    token_t = ValueEmbedding(x)_t + W_f f_t + position_t,   then dropout

ValueEmbedding is Linear(C, D) per step (``linear``) or Informer's token embedding,
Conv1d(C, D, kernel 3, circular padding) with Kaiming-normal weights (``conv``).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from seqzoo.layers.conv import CircularConv1d
from seqzoo.layers.positions import PositionalEmbedding, Positions

__all__ = ["EmbeddingKind", "TimeEmbedding"]

EmbeddingKind = Literal["linear", "conv"]


class TimeEmbedding(nn.Module):
    """Time tokens from observations (B, L, C) and their time features (B, L, F):

        token_t = ValueEmbedding(x)_t + W_f f_t + position_t,   then dropout

    ValueEmbedding is Linear(C, D) per step (``linear``) or Informer's token embedding,
    Conv1d(C, D, kernel 3, circular padding) with Kaiming-normal weights (``conv``).

    Args:
        n_values: observed channels C.
        n_time_features: time-feature channels F (0: none).
        d_model: token width D.
        max_len: the longest window (for the position table).
        kind: the value embedding, ``"linear"`` or ``"conv"``.
        positions: a :data:`~seqzoo.layers.positions.Positions` value.
        dropout: dropout on the tokens.
    """

    def __init__(
        self,
        n_values: int,
        n_time_features: int,
        d_model: int,
        max_len: int,
        *,
        kind: EmbeddingKind = "linear",
        positions: Positions = "sinusoidal",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.values = CircularConv1d(n_values, d_model)
            nn.init.kaiming_normal_(self.values.weight, mode="fan_in", nonlinearity="leaky_relu")
        else:
            self.values = nn.Linear(n_values, d_model)
        self.marks = nn.Linear(n_time_features, d_model) if n_time_features else None
        self.positions = PositionalEmbedding(positions, max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, marks: Tensor | None = None) -> Tensor:
        h = self.values(x)
        if self.marks is not None:
            h = h + self.marks(marks)
        return self.dropout(self.positions(h))

    def step(self, x_t: Tensor, t: Tensor) -> Tensor:
        """One step's token (``linear`` embedding without time features): x_t (B, C), t (B,)."""
        return self.positions.at(self.values(x_t), t)

"""Position information added to (B, L, D) tokens: one ``Positions`` type for every task.

* ``"sinusoidal"`` -- the fixed table of Vaswani et al. 2017,
  PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D));
* ``"learned"`` -- a trained table, truncated-normal (std 0.02) initialisation;
* ``"none"`` -- nothing added.

The tasks with a fixed token count take ``positions: Positions``. The variable-length ones
(handwriting, separation) add the sinusoidal table at the run-time length and take
``positions: bool`` (on/off): a learned table would need a fixed length.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError

__all__ = ["Positions", "PositionalEmbedding", "sinusoidal_positions"]

Positions = Literal["sinusoidal", "learned", "none"]


def sinusoidal_positions(length: int, d_model: int) -> Tensor:
    """Fixed sinusoidal position table (Vaswani et al. 2017), (length, d_model), float32.

    Args:
        length: number of positions.
        d_model: width (an odd width drops the last cosine column).
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-torch.log(torch.tensor(10000.0)) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: d_model // 2])
    return table


class PositionalEmbedding(nn.Module):
    """Adds sinusoidal, learned or no positions to (B, L, D) tokens, up to ``max_len``.

    Args:
        kind: a :data:`Positions` value.
        max_len: the longest sequence it can position.
        d_model: token width D.
    """

    def __init__(self, kind: Positions, max_len: int, d_model: int) -> None:
        super().__init__()
        if kind not in ("sinusoidal", "learned", "none"):
            raise ConfigError(f"positions must be 'sinusoidal', 'learned' or 'none', got {kind!r}")
        self.kind = kind
        self.max_len = max_len
        if kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_positions(max_len, d_model), persistent=False)
        elif kind == "learned":
            self.table = nn.Parameter(torch.zeros(max_len, d_model))
            nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "none":
            return x
        return x + self.table[: x.shape[1]]

    def at(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Positions for one step: ``x_t`` (B, D), ``t`` (B,) integer positions."""
        if self.kind == "none":
            return x_t
        return x_t + self.table[t.clamp(max=self.max_len - 1)]

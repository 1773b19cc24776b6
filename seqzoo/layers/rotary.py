"""Rotary position embeddings (Su et al. 2021, RoFormer), partial and interleaved as in
``rotary-embedding-torch`` (which MossFormer/FLASH use): the first ``dim`` features of the
last axis are rotated in adjacent pairs (x_{2i}, x_{2i+1}) by the angle t·θ_i, θ_i =
base^(-2i/dim); the rest pass through. Positions run along the second-to-last axis.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Rotary"]


class Rotary(nn.Module):
    """Rotate the first ``dim`` features of (..., L, F) tensors by their position (no parameters)."""

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"rotary dim must be even and >= 2, got {dim}")
        self.dim = dim
        self.register_buffer("inv_freq", base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[-2]
        angles = torch.arange(n, device=x.device, dtype=self.inv_freq.dtype)[:, None] * self.inv_freq  # (L, dim/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        rot, rest = x[..., : self.dim], x[..., self.dim :]
        pairs = rot.unflatten(-1, (self.dim // 2, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
        return torch.cat([rotated, rest], dim=-1)

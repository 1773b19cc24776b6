"""Padding masks on (B, L, ...) token tensors: ``mask`` (B, L) bool, True at valid positions."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_mask", "mask_positions"]


def mask_positions(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero ``x`` (B, L, ...) at padded positions (``mask`` False).

    Args:
        x: tokens (B, L, ...).
        mask: (B, L) bool, True at valid positions, or None (nothing padded).
    """
    if mask is None:
        return x
    return x.masked_fill(~mask.reshape(*mask.shape, *([1] * (x.dim() - 2))), 0.0)


def check_mask(x: Tensor, mask: Tensor | None) -> None:
    """Raise ValueError unless ``mask`` is None or a bool (B, L) tensor matching ``x`` (B, L, ...)."""
    if mask is None:
        return
    if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(
            f"mask must be a bool tensor of shape (B, L) = {tuple(x.shape[:2])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )

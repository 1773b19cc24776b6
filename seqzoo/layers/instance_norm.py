"""Instance normalisation of a window over time (RevIN without the affine part, Kim et al.
2022; iTransformer's ``use_norm``):

    x' = (x - mean_t x) / sqrt(var_t x + eps),      y = y' * std + mean   (undone on the output)

with the statistics taken as constants (the mean is detached), per sample and channel.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["instance_denormalise", "instance_normalise"]


def instance_normalise(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Instance normalisation of a window (B, L, C) over time, as in RevIN without the affine
    part and iTransformer's ``use_norm``: returns the normalised window and (mean, std),
    the statistics taken as constants (no gradient through the mean)."""
    mean = x.mean(dim=1, keepdim=True).detach()
    std = torch.sqrt(torch.var(x - mean, dim=1, keepdim=True, unbiased=False) + eps)
    return (x - mean) / std, (mean, std)


def instance_denormalise(y: Tensor, stats: tuple[Tensor, Tensor], n_targets: int) -> Tensor:
    """Undo :func:`instance_normalise` on a forecast (B, H, n_targets) of the last channels."""
    mean, std = stats
    return y * std[..., -n_targets:] + mean[..., -n_targets:]

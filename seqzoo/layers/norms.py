"""Normalisation layers over (B, L, D) tokens (and (B, C, L, D) grids).

* :func:`make_norm` -- LayerNorm or RMSNorm by name (timm's implementations);
* :class:`MaskedBatchNorm1d` -- BatchNorm over the channels of tokens whose training
  statistics skip padded steps (Informer's distilling);
* :class:`PlaneNorm` -- LayerNorm over the last two axes (tokens x features) with a
  per-feature affine: TSM2's normalisation over time and features.
"""

from __future__ import annotations

from typing import Literal

import torch
from timm.layers import LayerNorm, RmsNorm
from torch import Tensor, nn

__all__ = ["NormKind", "MaskedBatchNorm1d", "PlaneNorm", "make_norm"]

NormKind = Literal["layer", "rms"]


def make_norm(kind: NormKind, d_model: int, eps: float = 1e-5, *, device=None, dtype=None) -> nn.Module:
    """A norm over the last axis.

    Args:
        kind: ``"layer"`` (LayerNorm, Ba et al. 2016) or ``"rms"`` (RMSNorm, Zhang & Sennrich 2019).
        d_model: width of the normalised axis.
        eps: added to the variance (mean square) before the square root.
    """
    if kind == "layer":
        return LayerNorm(d_model, eps=eps, device=device, dtype=dtype)
    if kind == "rms":
        return RmsNorm(d_model, eps=eps, device=device, dtype=dtype)
    raise ValueError(f"norm must be 'layer' or 'rms', got {kind!r}")


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the channels of (B, L, C) tokens; training statistics skip padded steps."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None or not self.training:
            return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask])
        return out


class PlaneNorm(nn.Module):
    """LayerNorm over the last two axes (tokens x features) with a per-feature affine:

        y = (x - mean_{L,D}(x)) / sqrt(var_{L,D}(x) + eps) * weight + bias

    TSM2's normalisation over time and features, one plane per channel (variate).

    Args:
        d_model: width D of the feature axis (size of weight and bias).
        eps: added to the variance before the square root.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, *, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d_model, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias

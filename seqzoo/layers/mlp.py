"""Channel MLPs of residual blocks (timm's ``Mlp`` and ``SwiGLU``), chosen by name."""

from __future__ import annotations

from typing import Literal

from timm.layers import Mlp, SwiGLU
from torch import nn

__all__ = ["MlpKind", "make_mlp"]

MlpKind = Literal["gelu", "swiglu", "none"]


def make_mlp(kind: MlpKind, d_model: int, ratio: float, dropout: float, *, device=None,
             dtype=None) -> nn.Module | None:
    """The channel MLP of a residual block, or None.

    Args:
        kind: ``"gelu"`` (Linear, GELU, Dropout, Linear, Dropout), ``"swiglu"`` (gated,
            Shazeer 2020) or ``"none"``.
        d_model: input and output width.
        ratio: hidden width / d_model (``<= 0`` means no MLP).
        dropout: dropout after the activation and after the output projection.
    """
    hidden = max(1, int(round(d_model * ratio)))
    if kind == "none" or ratio <= 0:
        return None
    if kind == "gelu":
        return Mlp(d_model, hidden, act_layer=nn.GELU, drop=dropout, device=device, dtype=dtype)
    if kind == "swiglu":
        return SwiGLU(d_model, hidden, drop=dropout, device=device, dtype=dtype)
    raise ValueError(f"mlp must be 'gelu', 'swiglu' or 'none', got {kind!r}")

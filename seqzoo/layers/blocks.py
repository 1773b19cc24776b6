"""Residual blocks around a sequence mixer.

* :class:`ResidualBlock` -- pre-norm (Xiong et al. 2020):

      x <- x + DropPath(LayerScale(mixer(norm1(x))))
      x <- x + DropPath(LayerScale(mlp(norm2(x))))

* :class:`PostNormBlock` -- post-norm, as the original Transformer (Vaswani et al. 2017),
  iTransformer and Informer:

      x <- norm1(x + Dropout(mixer(x)))
      x <- norm2(x + mlp(x))

* :func:`stochastic_depth` -- drop-path rates rising linearly with depth (timm's rule).

A mixer is an ``nn.Module`` with ``forward(x, mask=None)`` and, if it streams,
``init_state(batch_size, device, dtype)`` and ``step(x_t, state)`` (and, for chunked
streaming, ``forward_with_state(x, state)``). DropPath and LayerScale are timm's.
"""

from __future__ import annotations

from timm.layers import DropPath, LayerScale
from torch import Tensor, nn

from seqzoo.layers.masking import mask_positions
from seqzoo.layers.mlp import MlpKind, make_mlp
from seqzoo.layers.norms import NormKind, make_norm
from seqzoo.layers.state import State

__all__ = ["PostNormBlock", "ResidualBlock", "stochastic_depth"]


def stochastic_depth(drop_path: float, n_layers: int) -> list[float]:
    """Drop-path rate per layer, rising linearly to ``drop_path`` (timm's convention)."""
    if n_layers == 1:
        return [drop_path]
    return [drop_path * i / (n_layers - 1) for i in range(n_layers)]


class ResidualBlock(nn.Module):
    """Pre-norm residual block around a sequence mixer and an optional channel MLP.

    Args:
        d_model: token width D.
        mixer: the sequence mixer.
        mlp: the channel MLP's kind (``"none"``: no MLP sublayer).
        mlp_ratio: MLP hidden width / D.
        norm: the pre-norms' kind.
        dropout: dropout on the mixer output (and inside the MLP).
        drop_path: probability of dropping each residual branch per sample (training).
        layer_scale: LayerScale initial value (CaiT), or None for no LayerScale.
        norm1: the mixer's pre-norm module itself (e.g. a norm over more axes than ``norm``
            offers); ``norm`` still names the MLP's pre-norm.
    """

    def __init__(
        self,
        d_model: int,
        mixer: nn.Module,
        *,
        mlp: MlpKind = "gelu",
        mlp_ratio: float = 4.0,
        norm: NormKind = "layer",
        dropout: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        norm1: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm1 if norm1 is not None else make_norm(norm, d_model)
        self.mixer = mixer
        self.drop = nn.Dropout(dropout)
        self.mlp = make_mlp(mlp, d_model, mlp_ratio, dropout)
        self.norm2 = make_norm(norm, d_model) if self.mlp is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ls1 = LayerScale(d_model, init_values=layer_scale) if layer_scale else nn.Identity()
        self.ls2 = LayerScale(d_model, init_values=layer_scale) if (layer_scale and self.mlp is not None) else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = mask_positions(self.norm1(x), mask)
        x = x + self.drop_path(self.ls1(self.drop(self.mixer(h, mask))))
        return self._channel(x)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return tuple(self.mixer.init_state(batch_size, device=device, dtype=dtype))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self.mixer.step(self.norm1(x_t), state)
        x_t = x_t + self.ls1(y)
        return self._channel(x_t), tuple(state)

    def forward_with_state(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """A chunk (B, L, D) continuing from ``state``; needs ``mixer.forward_with_state``."""
        y, state = self.mixer.forward_with_state(self.norm1(x), state)
        return self._channel(x + self.ls1(y)), tuple(state)

    def _channel(self, x: Tensor) -> Tensor:
        if self.mlp is None:
            return x
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class PostNormBlock(nn.Module):
    """Post-LN residual block of the original Transformer (Vaswani et al. 2017), the block
    iTransformer and Informer stack:

        x <- norm1(x + Dropout(mixer(x)))
        x <- norm2(x + mlp(x))          (mlp = Linear, activation, Dropout, Linear, Dropout)

    Args:
        d_model: token width D.
        mixer: the sequence mixer (it sees the padded positions zeroed).
        mlp: the channel MLP's kind (``"none"``: no MLP sublayer).
        mlp_ratio: MLP hidden width / D.
        norm: the norms' kind.
        dropout: dropout on the mixer output (and inside the MLP).
    """

    def __init__(
        self,
        d_model: int,
        mixer: nn.Module,
        *,
        mlp: MlpKind = "gelu",
        mlp_ratio: float = 4.0,
        norm: NormKind = "layer",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mixer = mixer
        self.drop = nn.Dropout(dropout)
        self.norm1 = make_norm(norm, d_model)
        self.mlp = make_mlp(mlp, d_model, mlp_ratio, dropout)
        self.norm2 = make_norm(norm, d_model) if self.mlp is not None else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.drop(self.mixer(mask_positions(x, mask), mask)))
        if self.mlp is None:
            return x
        return self.norm2(x + self.mlp(x))

"""Shared layers of the backbone families.

Most families are a stack of pre-norm residual blocks around a sequence mixer,

    x <- x + DropPath(LayerScale(mixer(norm1(x))))
    x <- x + DropPath(LayerScale(mlp(norm2(x))))

followed by a final norm. :class:`ResidualBlock` is that block and
:class:`BlockStack` the backbone around a list of them, with ``forward``,
``init_state`` and ``step`` written once. A family supplies only its mixer, an
``nn.Module`` with ``forward(x, mask=None)`` and, if it streams,
``init_state(batch_size, device, dtype)`` and ``step(x_t, state)`` (and, for chunked
streaming, ``forward_with_state(x, state)``). :class:`TemporalConv` is a causal or
centred convolution over time that streams with a ring buffer.

Norms, MLPs and DropPath come from timm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm, Mlp, RmsNorm, SwiGLU
from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, State

NormKind = Literal["layer", "rms"]
MlpKind = Literal["gelu", "swiglu", "none"]


def make_norm(kind: NormKind, d_model: int, eps: float = 1e-5) -> nn.Module:
    if kind == "layer":
        return LayerNorm(d_model, eps=eps)
    if kind == "rms":
        return RmsNorm(d_model, eps=eps)
    raise ValueError(f"norm must be 'layer' or 'rms', got {kind!r}")


def make_mlp(kind: MlpKind, d_model: int, ratio: float, dropout: float) -> nn.Module | None:
    """Channel MLP of a residual block: GELU MLP, SwiGLU (gated), or none."""
    hidden = max(1, int(round(d_model * ratio)))
    if kind == "none" or ratio <= 0:
        return None
    if kind == "gelu":
        return Mlp(d_model, hidden, act_layer=nn.GELU, drop=dropout)
    if kind == "swiglu":
        return SwiGLU(d_model, hidden, drop=dropout)
    raise ValueError(f"mlp must be 'gelu', 'swiglu' or 'none', got {kind!r}")


def split_state(state: State, sizes: Sequence[int]) -> list[State]:
    """Cut a flat state into consecutive tuples of ``sizes[i]`` tensors (what the i-th part owns).

    Tensors past ``sum(sizes)`` are ignored; callers that must match exactly check the total.
    """
    parts, offset = [], 0
    for size in sizes:
        parts.append(tuple(state[offset : offset + size]))
        offset += size
    return parts


def mask_positions(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero ``x`` (B, L, ...) at padded positions (``mask`` False)."""
    if mask is None:
        return x
    return x.masked_fill(~mask.reshape(*mask.shape, *([1] * (x.dim() - 2))), 0.0)


def check_mask(x: Tensor, mask: Tensor | None) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(
            f"mask must be a bool tensor of shape (B, L) = {tuple(x.shape[:2])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT), initialised small."""

    def __init__(self, d_model: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((d_model,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ResidualBlock(nn.Module):
    """Pre-norm residual block around a sequence mixer and an optional channel MLP.

    ``norm1``, if given, is the mixer's pre-norm module itself (e.g. a norm over more axes
    than ``norm`` offers); ``norm`` still names the MLP's pre-norm.
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
        self.ls1 = LayerScale(d_model, layer_scale) if layer_scale else nn.Identity()
        self.ls2 = LayerScale(d_model, layer_scale) if (layer_scale and self.mlp is not None) else nn.Identity()

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


class BlockStack(Backbone):
    """A backbone made of ``self.blocks`` (modules with forward/init_state/step) and a final norm.

    Subclasses call :meth:`build_blocks` (or :meth:`build_residual_blocks`) in their
    ``__init__``. The stack's streaming state is the concatenation of its blocks' states.
    """

    def build_residual_blocks(
        self,
        make_mixer: Callable[[int], nn.Module],
        *,
        mlp: MlpKind = "gelu",
        mlp_ratio: float = 4.0,
        norm: NormKind = "layer",
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        dropout: float | None = None,
    ) -> None:
        """``n_layers`` :class:`ResidualBlock` s around ``make_mixer(i)``, drop-path rising
        linearly to ``drop_path`` (:func:`stochastic_depth`), final norm of kind ``norm``;
        ``dropout`` defaults to the backbone's. Each mixer is built before its block, so the
        parameters are drawn in the order mixer, then the block's own layers."""
        rates = stochastic_depth(drop_path, self.n_layers)
        dropout = self.dropout_p if dropout is None else dropout

        def make_block(i: int) -> ResidualBlock:
            mixer = make_mixer(i)
            return ResidualBlock(self.d_model, mixer, mlp=mlp, mlp_ratio=mlp_ratio, norm=norm, dropout=dropout,
                                 drop_path=rates[i], layer_scale=layer_scale)

        self.build_blocks(make_block, final_norm=norm)

    def build_blocks(
        self,
        make_block: Callable[[int], nn.Module],
        *,
        final_norm: NormKind | None = "layer",
        count: int | None = None,
    ) -> None:
        """``count`` blocks (default ``n_layers``; a family with a stem block adds one)."""
        self.blocks = nn.ModuleList(make_block(i) for i in range(self.n_layers if count is None else count))
        self.norm_f = make_norm(final_norm, self.d_model) if final_norm else nn.Identity()
        self._state_sizes: list[int] | None = None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_mask(x, mask)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm_f(x)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        self._check_can_step()
        states = [tuple(block.init_state(batch_size, device=device, dtype=dtype)) for block in self.blocks]
        self._state_sizes = [len(s) for s in states]
        return tuple(t for s in states for t in s)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        self._check_can_step()
        x_t, state = self._through_blocks("step", x_t, state)
        return self.norm_f(x_t), state

    def forward_with_state(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Process a chunk (B, L, D) of a long stream, continuing from ``state`` (as returned by
        ``init_state`` or an earlier call); chunk by chunk equals one ``forward`` (causal).
        Families whose blocks define ``forward_with_state`` support it."""
        self._check_can_step()
        x, state = self._through_blocks("forward_with_state", x, state)
        return self.norm_f(x), state

    def _through_blocks(self, method: str, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Call ``block.<method>(x, its slice of state)`` for each block in turn."""
        if self._state_sizes is None:
            self.init_state(1, device=x.device, dtype=x.dtype)
        new_state: list[Tensor] = []
        for block, s in zip(self.blocks, split_state(state, self._state_sizes)):
            x, s = getattr(block, method)(x, s)
            new_state.extend(s)
        if sum(self._state_sizes) != len(state):
            raise ValueError(f"{type(self).name}: state has {len(state)} tensors, expected {sum(self._state_sizes)}")
        return x, tuple(new_state)


def stochastic_depth(drop_path: float, n_layers: int) -> list[float]:
    """Drop-path rate per layer, rising linearly to ``drop_path`` (timm's convention)."""
    if n_layers == 1:
        return [drop_path]
    return [drop_path * i / (n_layers - 1) for i in range(n_layers)]


class PostNormBlock(nn.Module):
    """Post-LN residual block of the original Transformer (Vaswani et al. 2017), the block
    iTransformer and Informer stack:

        x <- norm1(x + Dropout(mixer(x)))
        x <- norm2(x + mlp(x))          (mlp = Linear, activation, Dropout, Linear, Dropout)
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


class CircularConv1d(nn.Conv1d):
    """Conv1d, kernel 3, circular padding, over (B, L, C) tokens (Informer's token embedding
    and distilling convolution).

    With a padding mask each sequence wraps around at its own last valid step,
    y_t = W_0 x_{(t-1) mod n} + W_1 x_t + W_2 x_{(t+1) mod n}, so padded steps never reach
    valid outputs. The weights are an ordinary ``nn.Conv1d``'s.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="circular", bias=bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        L = x.shape[1]
        steps = torch.arange(L, device=x.device)
        n = mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1) valid length per sequence
        neighbours = [torch.remainder(steps + shift, n) for shift in (-1, 1)]  # (B, L) each
        prev, nxt = (torch.gather(x, 1, i[..., None].expand_as(x)) for i in neighbours)
        weight = self.weight.permute(0, 2, 1).reshape(self.out_channels, -1)  # taps (t-1, t, t+1)
        return F.linear(torch.cat([prev, x, nxt], dim=-1), weight, self.bias)


class TemporalConv(nn.Module):
    """Conv1d along time on (B, L, C_in) -> (B, L, C_out); causal (left zero padding) or centred.

    Streams (causal only) with a ring buffer of the last (K-1)·dilation inputs: state
    ``(buffer (B, C_in, (K-1)·dilation), write position (B,) int64)``, constant in size; the
    taps read the slots ``(pos - j·dilation) mod size``. Padded positions (``mask`` False)
    are zeroed first, so a centred kernel never reads them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        causal: bool,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups, bias=bias)
        self.causal = causal
        self.history = (kernel_size - 1) * dilation
        lags = dilation * torch.arange(kernel_size - 1, 0, -1)  # tap i reads x_{t - (K-1-i)·dilation}
        self.register_buffer("lags", lags, persistent=False)

    @property
    def n_state(self) -> int:
        return 2 if self.history else 0

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = mask_positions(x, mask).transpose(1, 2)
        left = self.history if self.causal else self.history // 2
        return self.conv(F.pad(x, (left, self.history - left))).transpose(1, 2)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        if not self.history:
            return ()
        buffer = torch.zeros(batch_size, self.conv.in_channels, self.history, device=device, dtype=dtype)
        return buffer, torch.zeros(batch_size, dtype=torch.long, device=device)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        if not self.history:
            return self.conv(x_t[..., None])[..., 0], ()
        buffer, pos = state
        slots = torch.remainder(pos[:, None] - self.lags, self.history)  # (B, K-1)
        past = torch.gather(buffer, 2, slots[:, None, :].expand(-1, buffer.shape[1], -1))
        window = torch.cat([past, x_t[..., None]], dim=-1)
        y = F.conv1d(window, self.conv.weight, self.conv.bias, groups=self.conv.groups)[..., 0]
        write = torch.arange(self.history, device=pos.device)[None, None, :] == pos[:, None, None]
        buffer = torch.where(write, x_t[..., None], buffer)
        return y, (buffer, torch.remainder(pos + 1, self.history))

"""MambaMixer (Behrouz, Santacatterina & Zabih 2024): selective token and channel mixers
joined by a weighted average of earlier outputs.

Layer ℓ is a token sublayer then a channel sublayer, each a pre-norm residual around a
selective (Mamba) mixer from :mod:`seqzoo.backbones.mamba`:

    y_T^ℓ = x_T^ℓ + TokenMixer(norm(x_T^ℓ))      Mamba layer along the sequence
    y_C^ℓ = x_C^ℓ + ChannelMixer(norm(x_C^ℓ))    bidirectional Mamba layer along the channels

and the inputs are weighted averages of everything before (the paper's eqs. for
x_Token and x_Channel, DenseFormer's depth-weighted average):

    x_T^ℓ = Σ_{i<ℓ} α_{ℓ,i} y_T^i + β_{ℓ,i} y_C^i,    x_C^ℓ = Σ_{i≤ℓ} θ_{ℓ,i} y_T^i + Σ_{i<ℓ} γ_{ℓ,i} y_C^i,

with y_T^0 = y_C^0 = x (so α_{ℓ,0} and β_{ℓ,0} weigh the same tensor and are one weight
here). The weights start one-hot on the latest output (x_T^ℓ = y_C^{ℓ-1}, x_C^ℓ = y_T^ℓ):
each layer starts as the plain residual chain, as in DenseFormer and as in the paper's
reduction to VMamba (β = 0, α_{ℓ,ℓ-1} = 1); they learn from there.

Two shapes of the same layers:

* :class:`MambaMixer` (registered ``mambamixer``), on (B, L, D): the token mixer runs
  along L (causal when built causal, else bidirectional, as ``mamba``); the channel
  mixer runs along D with the channels as the scanned axis and the tokens as batch --
  each channel position carries its scalar value, lifted to ``channel_expand`` features
  -- so no weight is sized by L (nor by D). It streams: the channel mixer acts within
  one token.
* :class:`MambaMixerGrid`, on a grid (B, C, L, D) of C channels (variates) by L tokens
  (patches) with D features: the token mixer runs along L for every channel, the channel
  mixer along C for every token. TSM2 (``domains/forecasting.py``) is built on it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, State, register_backbone
from seqzoo.backbones.blocks import ResidualBlock, check_mask, make_norm, split_state, stochastic_depth
from seqzoo.backbones.mamba import (
    MambaLayer,
    as_residual,
    no_weight_decay_groups,
    resolve_bidirectional,
    scale_output_projections,
)
from seqzoo.errors import ConfigError


@register_backbone("mambamixer")
class MambaMixer(Backbone):
    """Selective token mixer along L, selective channel mixer along D, weighted averaging."""

    causal = True
    streaming = True

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | Literal["auto"] = "auto",
        channel_expand: int = 2,
        channel_d_state: int = 4,
        bidirectional: bool | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.bidirectional = resolve_bidirectional(bidirectional, causal, self.name)
        # what MambaMixerGrid.like() copies
        self.grid_kwargs = dict(d_model=d_model, n_layers=n_layers, dropout=dropout, impl=impl, d_state=d_state,
                            expand=expand, d_conv=d_conv, dt_rank=dt_rank, drop_path=drop_path)
        rates = stochastic_depth(drop_path, n_layers)

        def sublayer(mixer: nn.Module, i: int) -> ResidualBlock:
            return ResidualBlock(d_model, mixer, mlp="none", norm="rms", dropout=dropout, drop_path=rates[i])

        token = [sublayer(AxisMixer(MambaLayer(d_model, d_state=d_state, expand=expand, d_conv=d_conv,
                                               dt_rank=dt_rank, bidirectional=self.bidirectional, impl=impl),
                                    axis=1), i) for i in range(n_layers)]
        channel = [sublayer(AxisMixer(MambaLayer(1, d_inner=channel_expand, d_state=channel_d_state, d_conv=d_conv,
                                                 bidirectional=True, impl=impl), axis=-1, scalar=True), i)
                   for i in range(n_layers)]
        self.layers = MixerLayers(token, channel)
        self.norm_f = make_norm("rms", d_model)
        scale_output_projections(self, n_residual_branches=2 * n_layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_mask(x, mask)
        return self.norm_f(self.layers(as_residual(x), mask))

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        self._check_can_step()
        return self.layers.init_state(batch_size, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        self._check_can_step()
        y, state = self.layers.step(as_residual(x_t), state)
        return self.norm_f(y), state

    def param_groups(self) -> list[dict]:
        return no_weight_decay_groups(self)


class MambaMixerGrid(nn.Module):
    """MambaMixer layers on a grid (B, C, L, D): token mixer along L, channel mixer along C.

    ``norm="plane"`` normalises each channel's (L, D) plane (TSM2's normalisation over
    time and features, as TSMixer's); ``"rms"`` normalises each token's D features.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        token_bidirectional: bool = False,
        norm: Literal["plane", "rms"] = "plane",
        dropout: float = 0.0,
        drop_path: float = 0.0,
        impl: str = "auto",
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        if norm not in ("plane", "rms"):
            raise ConfigError(f"grid norm must be 'plane' or 'rms', got {norm!r}")
        self.d_model = d_model
        rates = stochastic_depth(drop_path, n_layers)
        kw = dict(d_state=d_state, expand=expand, d_conv=d_conv, dt_rank=dt_rank, impl=impl)

        def sublayer(layer: MambaLayer, axis: int, i: int) -> ResidualBlock:
            return ResidualBlock(d_model, AxisMixer(layer, axis=axis), mlp="none", norm="rms", dropout=dropout,
                                 drop_path=rates[i], norm1=PlaneNorm(d_model) if norm == "plane" else None)

        token = [sublayer(MambaLayer(d_model, bidirectional=token_bidirectional, **kw), 2, i) for i in range(n_layers)]
        channel = [sublayer(MambaLayer(d_model, bidirectional=True, **kw), 1, i) for i in range(n_layers)]
        self.layers = MixerLayers(token, channel)
        self.norm_f = PlaneNorm(d_model) if norm == "plane" else make_norm("rms", d_model)
        scale_output_projections(self, n_residual_branches=2 * n_layers)

    @classmethod
    def like(cls, backbone: MambaMixer, **overrides) -> MambaMixerGrid:
        """A grid with the hyper-parameters of a registered ``mambamixer`` backbone."""
        if not isinstance(backbone, MambaMixer):
            raise ConfigError(f"a MambaMixer grid is built from a 'mambamixer' backbone, got {type(backbone).name!r}")
        return cls(**{**backbone.grid_kwargs, **overrides})

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"MambaMixerGrid expects (B, C, L, {self.d_model}), got {tuple(x.shape)}")
        return self.norm_f(self.layers(as_residual(x)))

    def param_groups(self) -> list[dict]:
        return no_weight_decay_groups(self)


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------


class MixerLayers(nn.Module):
    """Token and channel sublayers, alternating, each fed a learned average of all earlier outputs."""

    def __init__(self, token: list[nn.Module], channel: list[nn.Module]) -> None:
        super().__init__()
        if len(token) != len(channel):
            raise ValueError("one channel sublayer per token sublayer")
        self.token = nn.ModuleList(token)
        self.channel = nn.ModuleList(channel)
        # history before layer ℓ's token sublayer: x and 2ℓ outputs; before its channel sublayer: one more
        self.token_inputs = nn.ModuleList(WeightedAverage(2 * i + 1) for i in range(len(token)))
        self.channel_inputs = nn.ModuleList(WeightedAverage(2 * i + 2) for i in range(len(token)))
        self._state_sizes: list[int] | None = None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        history = [x]
        for token, channel, token_in, channel_in in zip(self.token, self.channel, self.token_inputs,
                                                        self.channel_inputs):
            history.append(token(token_in(history), mask))
            history.append(channel(channel_in(history), mask))
        return history[-1]

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        states = [tuple(t.init_state(batch_size, device=device, dtype=dtype)) for t in self.token]
        self._state_sizes = [len(s) for s in states]
        return tuple(t for s in states for t in s)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        if self._state_sizes is None:
            self.init_state(1, device=x_t.device, dtype=x_t.dtype)
        history, new_state = [x_t], []
        for token, channel, token_in, channel_in, s in zip(self.token, self.channel, self.token_inputs,
                                                           self.channel_inputs, split_state(state, self._state_sizes)):
            y, s = token.step(token_in(history), s)
            history.append(y)
            new_state.extend(s)
            history.append(channel(channel_in(history)))
        if sum(self._state_sizes) != len(state):
            raise ValueError(f"mambamixer: state has {len(state)} tensors, expected {sum(self._state_sizes)}")
        return history[-1], tuple(new_state)


class WeightedAverage(nn.Module):
    """Σ_i w_i h_i over a list of equally shaped tensors; w starts one-hot on the last."""

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        weight = torch.zeros(n_inputs)
        weight[-1] = 1.0
        self.weight = nn.Parameter(weight)

    def forward(self, history: list[Tensor]) -> Tensor:
        if len(history) != self.weight.numel():
            raise ValueError(f"weighted average over {self.weight.numel()} inputs got {len(history)}")
        out = history[0] * self.weight[0]
        for i in range(1, len(history)):
            out = out + history[i] * self.weight[i]
        return out


class AxisMixer(nn.Module):
    """A sequence mixer (B', L', F) -> (B', L', F) applied along one axis of a larger tensor,
    every other axis but the features becoming batch.

    ``scalar=True``: the scanned axis is the last one and each position has one feature
    (MambaMixer's channel mixer on (B, L, D): sequences of D scalars, B·L of them).
    """

    def __init__(self, layer: nn.Module, axis: int, scalar: bool = False) -> None:
        super().__init__()
        self.layer, self.axis, self.scalar = layer, axis, scalar

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.scalar:
            return self.layer(x.reshape(-1, x.shape[-1], 1)).reshape(x.shape)
        moved = x.movedim(self.axis, -2)
        if mask is not None and moved.dim() != 3:
            raise ValueError("a padding mask applies to (B, L, D) inputs only")
        y = self.layer(moved.reshape(-1, *moved.shape[-2:]), mask)
        return y.reshape(moved.shape).movedim(-2, self.axis)

    # A token mixer streams through its layer; a scalar (channel) mixer works within one token.
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return () if self.scalar else self.layer.init_state(batch_size, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        if self.scalar:
            return self(x_t), ()
        return self.layer.step(x_t, state)


class PlaneNorm(nn.Module):
    """LayerNorm over the last two axes (tokens × features) with a per-feature affine:
    TSM2's normalisation over time and features, one plane per channel (variate)."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias

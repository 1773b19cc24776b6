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

* :class:`MambaMixer` (registered ``mambamixer``), on (B, L, D) with a fixed token count
  L = ``n_tokens``: the token mixer is a causal Mamba scan along L (``bidirectional=True``
  asks for the Vim-style variant); the channel mixer is the paper's selective channel
  mixer, a bidirectional Mamba layer that scans the D channels (forward and flipped) with
  the L tokens as its features, so it mixes information across tokens and channels. Its
  projections are sized by L, hence the fixed token count (exported at that length); it
  reads every token, so the model is neither causal nor streaming.
* :class:`MambaMixerGrid` (registered ``tsm2``, token kind ``"grid"``), on a grid
  (B, C, L, D) of C channels (variates) by L tokens (patches) with D features: the token
  (time) mixer runs along L for every channel, the channel (variate) mixer along C for
  every token. The TSM2 forecaster (``seqzoo.domains.tsm2``) patches, embeds and reads
  out around it.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, check_bidirectional, register_backbone
from seqzoo.layers import ResidualBlock, check_mask, make_norm, stochastic_depth
from seqzoo.layers.mixing import AxisMixer, MixerLayers, WeightedAverage  # noqa: F401  (WeightedAverage: re-export)
from seqzoo.layers.selective_ssm import (
    MambaLayer,
    as_residual,
    no_weight_decay_groups,
    scale_output_projections,
)
from seqzoo.errors import ConfigError
from seqzoo.layers import PlaneNorm


@register_backbone("mambamixer")
class MambaMixer(Backbone):
    """Selective token mixer along L, selective channel mixer along D over all L tokens, weighted averaging (fixed L)."""

    causal = False  # the channel mixer reads every token
    fixed_tokens = True
    export_fixed_length = True

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        n_tokens: int | None = None,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | Literal["auto"] = "auto",
        channel_expand: int = 2,
        channel_d_state: int = 16,
        bidirectional: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        """
        Args:
            n_tokens: the fixed token count L: the channel mixer's features are the L tokens
                (e.g. the lookback of a forecaster, the patches of an image).
            d_state: state size N of the token mixer.
            expand: inner width E = expand * D of the token mixer.
            d_conv: taps of both mixers' causal depthwise convolutions.
            dt_rank: rank of the token mixer's Δ projection (``"auto"``: ceil(D / 16)).
            channel_expand: inner width = channel_expand * L of the channel mixer.
            channel_d_state: state size of the channel mixer.
            bidirectional: the token mixer also scans the reversed sequence (a variant; the
                paper's token mixer is a causal Mamba scan).
            drop_path: stochastic depth, rising linearly to this rate.
        """
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 1:
            raise ConfigError(
                f"backbone 'mambamixer' mixes across tokens in its channel mixer (its features are the tokens), "
                f"so it is built for a fixed token count: set n_tokens (e.g. the lookback), got {n_tokens!r}"
            )
        self.n_tokens = n_tokens
        self.bidirectional = check_bidirectional(self.name, bidirectional, causal)
        rates = stochastic_depth(drop_path, n_layers)

        def sublayer(mixer: nn.Module, i: int) -> ResidualBlock:
            return ResidualBlock(d_model, mixer, mlp="none", norm="rms", dropout=dropout, drop_path=rates[i])

        token = [sublayer(AxisMixer(MambaLayer(d_model, d_state=d_state, expand=expand, d_conv=d_conv,
                                               dt_rank=dt_rank, bidirectional=self.bidirectional, impl=impl),
                                    axis=1), i) for i in range(n_layers)]
        channel = [sublayer(AxisMixer(MambaLayer(n_tokens, d_state=channel_d_state, expand=channel_expand,
                                                 d_conv=d_conv, bidirectional=True, impl=impl), axis=2), i)
                   for i in range(n_layers)]
        self.layers = MixerLayers(token, channel)
        self.norm_f = make_norm("rms", d_model)
        scale_output_projections(self, n_residual_branches=2 * n_layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_mask(x, mask)
        if x.shape[1] != self.n_tokens:
            raise ValueError(f"backbone 'mambamixer' was built for n_tokens={self.n_tokens} tokens, "
                             f"got {x.shape[1]} (input {tuple(x.shape)})")
        return self.norm_f(self.layers(as_residual(x), mask))

    def param_groups(self) -> list[dict]:
        return no_weight_decay_groups(self)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_tokens={self.n_tokens}, bidirectional={self.bidirectional}"


@register_backbone("tsm2")
class MambaMixerGrid(Backbone):
    """TSM2's mixer stack on a variates x patches grid (B, C, L, D): time mixer along L, variate mixer along C."""

    causal = False  # TSM2's normalisation reads the whole window (with norm="rms" the time mixer alone is causal)
    tokens = "grid"

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
        norm: Literal["plane", "rms"] = "plane",
        bidirectional: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        """
        Args:
            d_state: SSM state size N of both mixers.
            expand: inner width E = expand * D of both mixers.
            d_conv: taps of the mixers' causal depthwise convolutions.
            dt_rank: rank of the Δ projection (``"auto"``: ceil(D / 16)).
            norm: ``"plane"`` normalises each variate's (L, D) plane (TSM2's normalisation over
                time and features; it reads the whole window, so not causal); ``"rms"`` each
                token's D features.
            bidirectional: the time mixer also scans the reversed patch sequence (a variant;
                the paper's time mixer is unidirectional). The variate mixer is always
                bidirectional, as in the paper.
            drop_path: stochastic depth, rising linearly to this rate.
        """
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        if norm not in ("plane", "rms"):
            raise ConfigError(f"backbone 'tsm2': norm must be 'plane' or 'rms', got {norm!r}")
        self.bidirectional = bool(bidirectional)
        self.norm_kind = norm
        rates = stochastic_depth(drop_path, n_layers)
        kw = dict(d_state=d_state, expand=expand, d_conv=d_conv, dt_rank=dt_rank, impl=impl)

        def sublayer(layer: MambaLayer, axis: int, i: int) -> ResidualBlock:
            return ResidualBlock(d_model, AxisMixer(layer, axis=axis), mlp="none", norm="rms", dropout=dropout,
                                 drop_path=rates[i], norm1=PlaneNorm(d_model) if norm == "plane" else None)

        token = [sublayer(MambaLayer(d_model, bidirectional=self.bidirectional, **kw), 2, i) for i in range(n_layers)]
        channel = [sublayer(MambaLayer(d_model, bidirectional=True, **kw), 1, i) for i in range(n_layers)]
        self.layers = MixerLayers(token, channel)
        self.norm_f = PlaneNorm(d_model) if norm == "plane" else make_norm("rms", d_model)
        scale_output_projections(self, n_residual_branches=2 * n_layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, C, L, D): C variates by L patches; no padding mask (whole grids only)."""
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"backbone 'tsm2' mixes a grid (B, C, L, {self.d_model}), got {tuple(x.shape)}")
        if mask is not None:
            raise ValueError("backbone 'tsm2' takes whole grids: it has no padding mask")
        return self.norm_f(self.layers(as_residual(x)))

    def param_groups(self) -> list[dict]:
        return no_weight_decay_groups(self)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, norm={self.norm_kind!r}, bidirectional={self.bidirectional}"

"""Mamba (Gu & Dao 2023): residual blocks around a selective state-space layer.

One layer (mamba_ssm's ``Mamba`` module), with E = expand·D, R = ceil(D/16), N = d_state:

    x, z    = in_proj(h)                         D -> 2E
    u       = SiLU(causal depthwise conv_4(x))   per channel, kernel 4
    δ, B, C = x_proj(u)                          E -> R + 2N
    Δ       = softplus(dt_proj(δ) + dt_bias)     R -> E
    y       = S6(u; Δ, A = -exp(A_log), B, C) + D u        (kernels/selective_scan.py)
    out     = out_proj(y ⊙ SiLU(z))              E -> D

Blocks are pre-norm RMSNorm residual blocks with the residual stream in float32.

Initialisation (the paper's): dt ~ logU[dt_min, dt_max] floored at 1e-4 and
dt_bias = softplus^{-1}(dt), marked ``_no_reinit`` so no global re-initialisation
touches it; dt_proj ~ U[-R^-1/2, R^-1/2]; A_log = log(1..N) per channel and D = 1,
both without weight decay (:meth:`Mamba.param_groups`); out_proj divided by
sqrt(number of residual branches) (GPT-2's rule, as mamba_ssm does).

Causality. The default is the paper's layer (left-to-right scan and convolution), built
``causal`` or not; built ``causal=True`` it streams: per layer a conv state (B, E, 3)
and an SSM state (B, E, N). The bidirectional variant (Vim, Zhu et al. 2024) is asked
for by name, ``bidirectional=True``: a second scan, with its own conv/Δ/B/C/A/D, runs
over the reversed sequence and its output is added before the gate; in/out projections
are shared (about +25% parameters).

Padding (``mask``, valid positions True): padded positions enter the scans with zero
input (the conv sees zeros there and the SSM input u is zeroed), so whether the scan
runs forward or over the flipped sequence, valid outputs never depend on padded values.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from seqzoo.backbones.base import State, check_bidirectional, register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.layers.selective_ssm import (
    MambaLayer,
    as_residual,
    no_weight_decay_groups,
    scale_output_projections,
)


@register_backbone("mamba")
class Mamba(BlockStack):
    """Stack of pre-norm residual Mamba layers (Gu & Dao 2023)."""

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
        bidirectional: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        """
        Args:
            d_state: SSM state size N per channel.
            expand: inner width E = expand * D.
            d_conv: taps of the causal depthwise convolution.
            dt_rank: rank of the Δ projection (``"auto"``: ceil(D / 16)).
            bidirectional: the Vim variant (a second scan over the reversed sequence); the
                paper's Mamba, the default, scans left to right only, whatever ``causal`` says.
            drop_path: stochastic depth, rising linearly to this rate.
        """
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.bidirectional = check_bidirectional(self.name, bidirectional, causal)
        self.build_residual_blocks(
            lambda i: MambaLayer(d_model, d_state=d_state, expand=expand, d_conv=d_conv, dt_rank=dt_rank,
                                 bidirectional=self.bidirectional, impl=impl),
            mlp="none", norm="rms", drop_path=drop_path,
        )
        scale_output_projections(self, n_residual_branches=n_layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return super().forward(as_residual(x), mask)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        return super().step(as_residual(x_t), state)

    def param_groups(self) -> list[dict]:
        return no_weight_decay_groups(self)

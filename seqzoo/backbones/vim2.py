"""ViM2, Vision MambaMixer (Behrouz, Santacatterina & Zabih 2024): MambaMixer layers on a
2-D grid of image patches.

Input: the H x W patch tokens of an image in row-major order, (B, N = H*W, D) -- token
kind ``"image"``; the grid is fixed (``n_tokens`` = N, ``grid_width`` = W), because the
channel mixer's features are the N tokens. Layer ℓ, each sublayer a pre-norm residual
(LayerNorm) and the inputs the learned weighted averages of all earlier outputs
(:class:`~seqzoo.layers.mixing.MixerLayers`, shared with MambaMixer/TSM2):

* **selective token mixer** (:class:`CrossScan2D`): x, z = in_proj(h) (D -> 2E); x ->
  depthwise 3x3 convolution over the grid -> SiLU; four selective scans (S6, each with its
  own Δ/B/C projections, A and D) over the patches in four orders -- row-major, row-major
  reversed, column-major, column-major reversed -- mapped back to the grid and summed;
  LayerNorm; gated by SiLU(z); out_proj (E -> D). This is the 2-D scan ViM2 takes over
  from VMamba's SS2D (cross-scan / cross-merge).
* **selective channel mixer**: a bidirectional Mamba layer scanning the D channels (forward
  and flipped) with the N tokens as its features, as MambaMixer's: it mixes information
  across tokens and channels.

Deviation: the paper's ViM2 is hierarchical (four stages, patch merging between them, as
VMamba); this family is one resolution (isotropic, as ViM/ViT) -- the tasks here use small
images (8x8 digits: a 4x4 patch grid leaves no room for stages). The task mean-pools the
output tokens into the head (global average pooling, as the paper).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, register_backbone
from seqzoo.errors import ConfigError
from seqzoo.layers import ResidualBlock, make_norm, stochastic_depth
from seqzoo.layers.mixing import AxisMixer, MixerLayers
from seqzoo.layers.selective_ssm import (
    MambaLayer,
    SelectiveSSM,
    as_residual,
    no_weight_decay_groups,
    scale_output_projections,
    scan_together,
)

__all__ = ["CrossScan2D", "ViM2", "scan_orders"]


def scan_orders(height: int, width: int) -> list[Tensor]:
    """The four scan orders over a row-major H x W grid, as index vectors of length H*W:
    row-major, row-major reversed, column-major, column-major reversed."""
    grid = torch.arange(height * width).reshape(height, width)
    rows, cols = grid.flatten(), grid.t().flatten()
    return [rows, rows.flip(0), cols, cols.flip(0)]


class CrossScan2D(nn.Module):
    """ViM2's selective token mixer on (B, H*W, D) row-major patch tokens (see the module docstring)."""

    def __init__(self, d_model: int, height: int, width: int, *, d_state: int = 16, expand: int = 2,
                 dt_rank: int | Literal["auto"] = "auto", conv_size: int = 3, impl: str = "auto") -> None:
        super().__init__()
        d_inner = expand * d_model
        rank = -(-d_model // 16) if dt_rank == "auto" else int(dt_rank)
        self.height, self.width = height, width
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, conv_size, padding=conv_size // 2, groups=d_inner)
        self.scans = nn.ModuleList(SelectiveSSM(d_inner, d_state=d_state, d_conv=0, dt_rank=rank, impl=impl)
                                   for _ in range(4))
        for k, order in enumerate(scan_orders(height, width)):
            self.register_buffer(f"order_{k}", order, persistent=False)
            self.register_buffer(f"inverse_{k}", torch.argsort(order), persistent=False)
        self.out_norm = make_norm("layer", d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            raise ValueError("backbone 'vim2' takes whole images: it has no padding mask")
        b, n, _ = x.shape
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, N, E) each
        grid = u.transpose(1, 2).reshape(b, -1, self.height, self.width)
        u = F.silu(self.conv2d(grid)).flatten(2).transpose(1, 2)  # (B, N, E), row-major
        orders = [getattr(self, f"order_{k}") for k in range(len(self.scans))]
        ys = scan_together(self.scans, [u[:, order] for order in orders], [None] * len(orders))  # one scan
        y = 0
        for k, scanned in enumerate(ys):
            y = y + scanned[:, getattr(self, f"inverse_{k}")]
        return self.out_proj(self.out_norm(y) * F.silu(z))


@register_backbone("vim2")
class ViM2(Backbone):
    """ViM2: 2-D selective token mixer (four scans) + selective channel mixer over a fixed patch grid."""

    causal = False  # every scan order and the channel mixer read the whole image
    tokens = "image"
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
        grid_width: int | None = None,
        d_state: int = 16,
        expand: int = 2,
        dt_rank: int | Literal["auto"] = "auto",
        conv_size: int = 3,
        channel_expand: int = 2,
        channel_d_state: int = 16,
        d_conv: int = 4,
        drop_path: float = 0.0,
    ) -> None:
        """
        Args:
            n_tokens: patches per image N = H * W (the channel mixer's features are the N tokens).
            grid_width: patches per row W (H = N / W); default: a square grid.
            d_state: state size N of each token-mixer scan.
            expand: inner width E = expand * D of the token mixer.
            dt_rank: rank of the token mixer's Δ projections (``"auto"``: ceil(D / 16)).
            conv_size: the token mixer's depthwise 2-D convolution (conv_size x conv_size).
            channel_expand: inner width = channel_expand * N of the channel mixer.
            channel_d_state: state size of the channel mixer.
            d_conv: taps of the channel mixer's depthwise convolution along the channels.
            drop_path: stochastic depth, rising linearly to this rate.
        """
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 1:
            raise ConfigError(f"backbone 'vim2' is built for a fixed patch grid (its channel mixer's features are "
                              f"the patches): set n_tokens = H * W patches, got {n_tokens!r}")
        if grid_width is None:
            side = round(n_tokens**0.5)
            if side * side != n_tokens:
                raise ConfigError(f"backbone 'vim2': n_tokens={n_tokens} is not a square grid: set grid_width")
            grid_width = side
        if not isinstance(grid_width, int) or grid_width < 1 or n_tokens % grid_width:
            raise ConfigError(f"backbone 'vim2': grid_width must divide n_tokens={n_tokens}, got {grid_width!r}")
        self.n_tokens, self.grid_width, self.grid_height = n_tokens, grid_width, n_tokens // grid_width
        rates = stochastic_depth(drop_path, n_layers)

        def sublayer(mixer: nn.Module, i: int) -> ResidualBlock:
            return ResidualBlock(d_model, mixer, mlp="none", norm="layer", dropout=dropout, drop_path=rates[i])

        token = [sublayer(CrossScan2D(d_model, self.grid_height, grid_width, d_state=d_state, expand=expand,
                                      dt_rank=dt_rank, conv_size=conv_size, impl=impl), i) for i in range(n_layers)]
        channel = [sublayer(AxisMixer(MambaLayer(n_tokens, d_state=channel_d_state, expand=channel_expand,
                                                 d_conv=d_conv, bidirectional=True, impl=impl), axis=2), i)
                   for i in range(n_layers)]
        self.layers = MixerLayers(token, channel)
        self.norm_f = make_norm("layer", d_model)
        scale_output_projections(self, n_residual_branches=2 * n_layers)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, N, D): the N = H * W patch tokens in row-major order; no padding mask."""
        if mask is not None:
            raise ValueError("backbone 'vim2' takes whole images: it has no padding mask")
        if x.dim() != 3 or x.shape[1] != self.n_tokens:
            raise ValueError(f"backbone 'vim2' was built for n_tokens={self.n_tokens} patches "
                             f"({self.grid_height} x {self.grid_width}), got input {tuple(x.shape)}")
        return self.norm_f(self.layers(as_residual(x)))

    def param_groups(self) -> list[dict]:
        return no_weight_decay_groups(self)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid_height}x{self.grid_width}"

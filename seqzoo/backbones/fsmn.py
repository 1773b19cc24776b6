"""MossFormer2's recurrent module: gated FSMN blocks with dilated memory (Zhao et al. 2024).

MossFormer2 pairs its attention blocks with an "RNN-free recurrent" module: a
feedforward sequential memory network (FSMN) whose memory is a stack of dilated
depthwise convolutions, wrapped in gated convolutional units. One block is

    h = LN(PReLU(W_in x))                                   (1x1 projection to inner_dim)
    u = GCU_u(h),  v = GCU_v(h)                             GCU(z) = DWConv(SiLU(W LN(z))) (+ residual)
    p = W_p ReLU(W_f u)                                     (FSMN hidden layer and projection)
    m_0 = p,  m_i = PReLU(LN(DWConv_{dil=2^(i-1)}([m_{i-1}, ..., m_0])))   (dense dilated memory)
    g = v * (u + m_D) + h                                   (gating)
    x <- x + W_out LN(g)

and the backbone is ``n_layers`` such blocks and a final norm. Differences from the
authors' code, so that the block fits the backbone contract: the memory's
InstanceNorm over time is a per-step LayerNorm (an utterance-level statistic would
leak padding and future frames), padded positions are zeroed before every temporal
convolution (so valid outputs never see padding), and ``causal=True`` makes every
convolution look only backwards (a memory of ``memory_order`` past steps instead of a
symmetric window of ``2 * memory_order - 1``). All temporal mixing is convolution, so
export keeps a symbolic length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.backbones.base import register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.errors import ConfigError
from seqzoo.layers import TemporalConv, make_norm


@register_backbone("fsmn")
class GatedFSMN(BlockStack):
    """MossFormer2 recurrent module: gated FSMN blocks with dilated convolutional memory."""

    causal = True

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        inner_dim: int | None = None,
        memory_order: int = 20,
        memory_depth: int = 2,
        conv_kernel: int = 17,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        if memory_order < 1 or memory_depth < 1:
            raise ConfigError(f"fsmn: memory_order and memory_depth must be >= 1, got {memory_order}, {memory_depth}")
        if conv_kernel < 1 or (not causal and conv_kernel % 2 == 0):
            raise ConfigError(f"fsmn: conv_kernel must be a positive odd number when not causal, got {conv_kernel}")
        inner = inner_dim or d_model
        self.build_blocks(
            lambda i: GatedFSMNBlock(
                d_model, inner, memory_order=memory_order, memory_depth=memory_depth,
                conv_kernel=conv_kernel, causal=causal, dropout=dropout,
            ),
            final_norm="layer",
        )


class GatedFSMNBlock(nn.Module):
    """One gated FSMN block (residual): projection, two gated conv units, FSMN memory, gate."""

    def __init__(self, d_model: int, inner: int, *, memory_order: int, memory_depth: int, conv_kernel: int,
                 causal: bool, dropout: float) -> None:
        super().__init__()
        self.proj_in = nn.Linear(d_model, inner)
        self.act_in = nn.PReLU()
        self.norm_in = make_norm("layer", inner)
        self.to_u = GatedConvUnit(inner, conv_kernel, causal=causal, dropout=dropout)
        self.to_v = GatedConvUnit(inner, conv_kernel, causal=causal, dropout=dropout)
        self.memory = DilatedFSMN(inner, memory_order, memory_depth, causal=causal)
        self.norm_out = make_norm("layer", inner)
        self.proj_out = nn.Linear(inner, d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.norm_in(self.act_in(self.proj_in(x)))
        u = self.memory(self.to_u(h, mask), mask)
        g = self.to_v(h, mask) * u + h
        return x + self.proj_out(self.norm_out(g))


class GatedConvUnit(nn.Module):
    """LN -> Linear -> SiLU -> depthwise temporal convolution (residual) -> dropout."""

    def __init__(self, dim: int, kernel: int, *, causal: bool, dropout: float) -> None:
        super().__init__()
        self.norm = make_norm("layer", dim)
        self.linear = nn.Linear(dim, dim)
        self.conv = DepthwiseConv(dim, kernel, causal=causal)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        z = F.silu(self.linear(self.norm(x)))
        return self.drop(z + self.conv(z, mask))


class DilatedFSMN(nn.Module):
    """FSMN memory: ReLU hidden layer, projection, dense stack of dilated depthwise convolutions.

    Layer i (dilation 2^i) sees the concatenation of every earlier layer's output and the
    projection (DenseNet style), one group per channel; the block returns ``u + m_D``.
    """

    def __init__(self, dim: int, order: int, depth: int, *, causal: bool) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, dim)
        self.project = nn.Linear(dim, dim, bias=False)
        self.convs = nn.ModuleList(
            DepthwiseConv(dim, order if causal else 2 * order - 1, causal=causal, dilation=2**i, fan_in=i + 1)
            for i in range(depth)
        )
        self.norms = nn.ModuleList(make_norm("layer", dim) for _ in range(depth))
        self.acts = nn.ModuleList(ChannelPReLU(dim) for _ in range(depth))

    def forward(self, u: Tensor, mask: Tensor | None) -> Tensor:
        out = self.project(F.relu(self.hidden(u)))
        # earlier outputs stacked on a last axis, newest first: (B, L, C, i + 1); flattening it
        # interleaves them (channel c of every output side by side), the layout DepthwiseConv reads
        skip = out[..., None]
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            out = act(norm(conv(skip.flatten(-2), mask)))
            skip = torch.cat([out[..., None], skip], dim=-1)
        return u + out


class DepthwiseConv(TemporalConv):
    """Per-channel temporal convolution on (B, L, C*fan_in) -> (B, L, C), zero padding,
    symmetric or causal, no bias: a grouped :class:`TemporalConv`. The input is interleaved,
    channel c of the output reading input channels c*fan_in ... c*fan_in + fan_in - 1 (one
    group per output channel); padded positions are zeroed first."""

    def __init__(self, dim: int, kernel: int, *, causal: bool, dilation: int = 1, fan_in: int = 1) -> None:
        super().__init__(dim * fan_in, dim, kernel, causal=causal, dilation=dilation, groups=dim, bias=False)
        self.dim, self.fan_in = dim, fan_in


class ChannelPReLU(nn.Module):
    """PReLU with one slope per channel of a channels-last (..., C) tensor."""

    def __init__(self, dim: int, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.weight * x)

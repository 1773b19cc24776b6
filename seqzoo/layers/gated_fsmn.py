"""MossFormer2's recurrent module (Zhao et al. 2024): the gated FSMN block with a dense
dilated memory, shared by the ``fsmn`` and ``mossformer2`` families.

One block (the authors' ``Gated_FSMN_Block``), channels-last (B, L, D):

    h = LN(PReLU(W_in x))                                   1x1 projection to inner_dim
    u = GCU_u(h),  v = GCU_v(h)                             GCU(z) = Drop(s + DWConv_17(s)), s = SiLU(W LN(z))
    p = W_p ReLU(W_f u)                                     FSMN hidden layer and projection
    m_1 = PReLU(N(DWConv_{dil 1}(p))),  m_2 = PReLU(N(DWConv_{dil 2}([m_1, p])))   dense dilated memory
    g = v * (u + m_D) + h                                   gating
    x <- x + W_out LN(g)

The dense memory concatenates each layer's output in front of the earlier ones along the
channels, ``cat([m_i, ..., m_1, p])``, and its depthwise convolutions take consecutive
blocks of (i + 1) channels per output channel (``groups = D``), as the authors' code does.
N is the authors' InstanceNorm (per channel over the utterance's valid steps) for
centred (non-causal) blocks; a causal block uses a per-step LayerNorm instead, since an
utterance statistic would read the future. Padded positions are zeroed before every
temporal convolution and left out of the InstanceNorm statistics, so valid outputs never
depend on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.layers.conv import TemporalConv
from seqzoo.layers.norms import make_norm

__all__ = ["ChannelPReLU", "DepthwiseConv", "DilatedFSMN", "GatedConvUnit", "GatedFSMNBlock", "MaskedInstanceNorm"]


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
    """LN -> Linear -> SiLU -> depthwise temporal convolution (residual) -> dropout (the authors' FFConvM)."""

    def __init__(self, dim: int, kernel: int, *, causal: bool, dropout: float, dim_out: int | None = None,
                 norm: nn.Module | None = None) -> None:
        super().__init__()
        dim_out = dim_out or dim
        self.norm = norm if norm is not None else make_norm("layer", dim)
        self.linear = nn.Linear(dim, dim_out)
        self.conv = DepthwiseConv(dim_out, kernel, causal=causal)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        z = F.silu(self.linear(self.norm(x)))
        return self.drop(z + self.conv(z, mask))


class DilatedFSMN(nn.Module):
    """FSMN memory: ReLU hidden layer, projection, dense stack of dilated depthwise convolutions
    (layer i: dilation 2^i, kernel 2·order − 1 centred or ``order`` causal); returns ``u + m_D``."""

    def __init__(self, dim: int, order: int, depth: int, *, causal: bool) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, dim)
        self.project = nn.Linear(dim, dim, bias=False)
        self.convs = nn.ModuleList(
            DepthwiseConv(dim, order if causal else 2 * order - 1, causal=causal, dilation=2**i, fan_in=i + 1)
            for i in range(depth)
        )
        self.norms = nn.ModuleList(make_norm("layer", dim) if causal else MaskedInstanceNorm(dim) for _ in range(depth))
        self.acts = nn.ModuleList(ChannelPReLU(dim) for _ in range(depth))

    def forward(self, u: Tensor, mask: Tensor | None) -> Tensor:
        skip = self.project(F.relu(self.hidden(u)))
        out = skip
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            y = conv(skip, mask)
            out = act(norm(y, mask) if isinstance(norm, MaskedInstanceNorm) else norm(y))
            skip = torch.cat([out, skip], dim=-1)  # newest first, channel blocks: the authors' layout
        return u + out


class MaskedInstanceNorm(nn.Module):
    """InstanceNorm over time on (B, L, C) (per example and channel, biased variance, affine),
    with statistics over the valid steps only (``mask`` True); padded steps come out 0."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            mean = x.mean(dim=1, keepdim=True)
            var = (x - mean).pow(2).mean(dim=1, keepdim=True)
            return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        keep = mask[..., None].to(x.dtype)
        count = keep.sum(dim=1, keepdim=True).clamp(min=1)
        mean = (x * keep).sum(dim=1, keepdim=True) / count
        var = ((x - mean).pow(2) * keep).sum(dim=1, keepdim=True) / count
        return ((x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias) * keep


class DepthwiseConv(TemporalConv):
    """Per-channel temporal convolution on (B, L, C*fan_in) -> (B, L, C), zero padding,
    symmetric or causal, no bias: a grouped :class:`TemporalConv`; output channel c reads the
    consecutive input channels c*fan_in ... c*fan_in + fan_in - 1. Padded positions are zeroed first."""

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

"""MossFormer's gated single-head attention unit with convolution-augmented joint
self-attention (Zhao et al., ICASSP 2023; used by MossFormer2), after FLASH (Hua et al.
2022), as the authors' ``FLASH_ShareA_FFConvM``. On (B, L, D):

    x~      = token shift: half the channels moved one step later (from the past)
    v, u    = chunk(FFConvM(x~)),  D -> E (E = expansion·D; v, u have E/2 each)
    z       = FFConvM(x~),         D -> S (query/key width)
    q_quad, q_lin, k_quad, k_lin = z ⊙ γ_i + β_i          (per-dimension scale and offset)
              rotary positions on all four (first min(32, S) features)
    A       = relu(q_quad k_quadᵀ / g)²   within groups of g steps (quadratic, local)
    att(w)  = A w  +  q_lin (k_linᵀ w) / n                (plus linear attention over all n steps)
    out     = (att(u) ⊙ v) ⊙ sigmoid(att(v) ⊙ u)          (the "shared-A" triple gating)
    x      <- x + FFConvM(out),    E/2 -> D

with FFConvM(z) = Dropout(s + DWConv_17(s)), s = SiLU(W ScaleNorm(z)) (the gated conv unit of
:mod:`seqzoo.layers.gated_fsmn` with ScaleNorm). Non-causal: the linear attention reads the
whole sequence. Padded steps (``mask`` False) are zeroed, never used as keys, and not
counted in n, so valid outputs never depend on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.layers.gated_fsmn import GatedConvUnit
from seqzoo.layers.rotary import Rotary

__all__ = ["GatedAttentionUnit", "OffsetScale", "ScaleNorm"]


class ScaleNorm(nn.Module):
    """x / max(‖x‖·D^-1/2, eps) · g, one learned scalar g (Nguyen & Salazar 2019)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale, self.eps = dim**-0.5, eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return x / (x.norm(dim=-1, keepdim=True) * self.scale).clamp(min=self.eps) * self.g


class OffsetScale(nn.Module):
    """``heads`` per-dimension affine copies of the input: x ⊙ γ_h + β_h (γ ~ N(0, 0.02²), β = 0)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(heads, dim))
        self.beta = nn.Parameter(torch.zeros(heads, dim))
        nn.init.normal_(self.gamma, std=0.02)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return (x.unsqueeze(-2) * self.gamma + self.beta).unbind(dim=-2)


class GatedAttentionUnit(nn.Module):
    """One MossFormer gated attention unit (residual), see the module docstring."""

    def __init__(self, d_model: int, *, group_size: int = 256, qk_dim: int = 128, expansion: float = 4.0,
                 conv_kernel: int = 17, dropout: float = 0.1, shift_tokens: bool = True,
                 rotary: Rotary | None = None) -> None:
        super().__init__()
        hidden = int(d_model * expansion)
        if hidden % 2:
            raise ValueError(f"d_model * expansion must be even (v and u split it), got {hidden}")
        self.group_size, self.shift_tokens = group_size, shift_tokens
        self.to_hidden = GatedConvUnit(d_model, conv_kernel, causal=False, dropout=dropout, dim_out=hidden,
                                       norm=ScaleNorm(d_model))
        self.to_qk = GatedConvUnit(d_model, conv_kernel, causal=False, dropout=dropout, dim_out=qk_dim,
                                   norm=ScaleNorm(d_model))
        self.offset_scale = OffsetScale(qk_dim, heads=4)
        self.to_out = GatedConvUnit(hidden // 2, conv_kernel, causal=False, dropout=dropout, dim_out=d_model,
                                    norm=ScaleNorm(hidden // 2))
        self.rotary = rotary if rotary is not None else Rotary(min(32, qk_dim))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        shifted = x
        if self.shift_tokens:
            half = x.shape[-1] // 2
            shifted = torch.cat([F.pad(x[..., :half], (0, 0, 1, -1)), x[..., half:]], dim=-1)
        v, u = self.to_hidden(shifted, mask).chunk(2, dim=-1)
        quad_q, lin_q, quad_k, lin_k = (self.rotary(t) for t in self.offset_scale(self.to_qk(shifted, mask)))
        att_v, att_u = self.attend(quad_q, lin_q, quad_k, lin_k, v, u, mask)
        return x + self.to_out((att_u * v) * torch.sigmoid(att_v * u), mask)

    def attend(self, quad_q: Tensor, lin_q: Tensor, quad_k: Tensor, lin_k: Tensor, v: Tensor, u: Tensor,
               mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Quadratic attention inside groups plus global linear attention, applied to v and u."""
        B, L, _ = v.shape
        g = self.group_size
        keep = torch.ones(B, L, dtype=v.dtype, device=v.device) if mask is None else mask.to(v.dtype)
        n = keep.sum(dim=1).clamp(min=1)[:, None, None]  # valid steps per example
        lin_k = lin_k * keep[..., None]
        values = torch.cat([v, u], dim=-1)
        linear = lin_q @ (lin_k.transpose(1, 2) @ values) / n  # (B, L, 2·E/2)
        pad = (-L) % g
        if pad:
            quad_q, quad_k, values = (F.pad(t, (0, 0, 0, pad)) for t in (quad_q, quad_k, values))
            keep = F.pad(keep, (0, pad))
        groups = (L + pad) // g
        q, k = quad_q.unflatten(1, (groups, g)), quad_k.unflatten(1, (groups, g))
        attn = F.relu(q @ k.transpose(-1, -2) / g).square() * keep.unflatten(1, (groups, g))[:, :, None, :]
        quad = (attn @ values.unflatten(1, (groups, g))).flatten(1, 2)[:, :L]
        att_v, att_u = (quad + linear).chunk(2, dim=-1)
        return att_v, att_u

"""ViR: vision retention (Hatamizadeh et al. 2023) -- a ViT whose attention is retention.

Each block is pre-LN with LayerScale (1e-5) and DropPath on both branches; the token
mixer is retention (RetNet, Sun et al. 2023) with one decay per head:

    q, k, v = x W_Q, x W_K, x W_V   (per head, q scaled by d_h^-1/2)
    head_h  = (q k^T ⊙ M_h) v,      M_h[t, u] = γ_h^{t-u} for t >= u, else 0
    out     = concat_h(head_h) W_O

as in the authors' code (no output gate, no group norm; ``gate``/``group_norm`` add
RetNet's swish gate and per-head GroupNorm as a labelled variant),
with no softmax after the decay mask (a softmax there leaks the future through its
normaliser). The decay of head h is γ_h = 1 - 1/w_h with memory windows w_h spaced
log-uniformly from 32 to 512 tokens (γ from 1 - 2^-5 to 1 - 2^-9), the authors' schedule
(their ``DecayMask``: 1 - exp(linspace(log 1/32, log 1/512, H))). ViR's model is causal:
the task appends the class token *last* so that it sees every patch, and the recurrent
form streams one token at a time with a (d_h, d_h) state per head.

Built ``bidirectional=True`` (a variant, asked for by name) the mixer is bidirectional,
M_h[t, u] = γ_h^{|t-u|}: a forward and a backward retention pass sharing q, k, v, the
diagonal counted once. This is our variant: the paper's model is causal. Keys
and values at padded positions are zeroed, so padding never reaches a valid output in
either direction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.backbones.base import State, check_bidirectional, register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.errors import ConfigError
from seqzoo.kernels.retention import retention, retention_step, state_dtype
from seqzoo.layers import MlpKind, NormKind, mask_positions


def decay_schedule(n_heads: int, shortest: float = 32.0, longest: float = 512.0) -> Tensor:
    """γ_h = 1 - 1/w_h, memory windows w_h log-uniform in [shortest, longest] tokens."""
    if not 1.0 < shortest <= longest:
        raise ConfigError(f"decay windows must satisfy 1 < shortest <= longest, got ({shortest}, {longest})")
    windows = torch.exp(torch.linspace(math.log(shortest), math.log(longest), n_heads, dtype=torch.float64))
    return (1.0 - 1.0 / windows).to(torch.float32)


class MultiScaleRetention(nn.Module):
    """Multi-head retention with per-head decay, group norm and a swish gate."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        causal: bool,
        decay_windows: tuple[float, float] = (32.0, 512.0),
        gate: bool = False,
        group_norm: bool = False,
        chunk_size: int = 64,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"vir: n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.causal, self.chunk_size, self.impl = causal, chunk_size, impl
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.gate = nn.Linear(d_model, d_model) if gate else None
        self.head_norm = nn.GroupNorm(n_heads, d_model) if group_norm else None
        self.proj = nn.Linear(d_model, d_model)
        self.register_buffer("gamma", decay_schedule(n_heads, *decay_windows), persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).unbind(2)
        k, v = mask_positions(k, mask), mask_positions(v, mask)
        o = self._retention(q, k, v)
        if not self.causal:  # backward pass; the diagonal γ^0 q_t·k_t v_t was counted twice
            o = o + self._retention(q.flip(1), k.flip(1), v.flip(1)).flip(1)
            o = o - (q * k).sum(-1, keepdim=True) * v * self.head_dim**-0.5
        return self._output(x, o.reshape(B, L, -1))

    def _retention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return retention(q, k, v, self.gamma, chunk_size=self.chunk_size, impl=self.impl)

    def _output(self, x: Tensor, o: Tensor) -> Tensor:
        y = o
        if self.head_norm is not None:
            y = self.head_norm(o.reshape(-1, o.shape[-1])).reshape(o.shape)
        if self.gate is not None:
            y = F.silu(self.gate(x)) * y
        return self.proj(y)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        sdt = state_dtype(dtype or torch.get_default_dtype())
        return (torch.zeros(batch_size, self.n_heads, self.head_dim, self.head_dim, device=device, dtype=sdt),)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        q, k, v = self.qkv(x_t).view(x_t.shape[0], 3, self.n_heads, self.head_dim).unbind(1)
        o, s = retention_step(q, k, v, self.gamma, state[0])
        return self._output(x_t, o.reshape(x_t.shape[0], -1)), (s,)


@register_backbone("vir")
class ViR(BlockStack):
    """Vision retention: pre-LN retention blocks with per-head decay, LayerScale, DropPath."""

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
        n_heads: int = 4,
        decay_windows: tuple[float, float] = (32.0, 512.0),
        gate: bool = False,
        group_norm: bool = False,
        mlp_ratio: float = 4.0,
        mlp: MlpKind = "gelu",
        norm: NormKind = "layer",
        drop_path: float = 0.0,
        layer_scale: float = 1e-5,
        chunk_size: int = 64,
        bidirectional: bool = False,
    ) -> None:
        """
        Args:
            n_heads: retention heads (each with its own decay).
            decay_windows: memory windows 1 / (1 - γ) of the first and last head, spaced
                log-uniformly between them.
            gate: RetNet's swish output gate. Off, as in the ViR authors' code, whose
                retention is q, k, v -> decay-masked retention -> output projection.
            group_norm: RetNet's per-head GroupNorm of the retention output. Off, as in
                the ViR authors' code. ``gate: true, group_norm: true`` is RetNet's
                multi-scale retention (a variant, labelled as such in tables).
            mlp_ratio: MLP hidden width / D.
            mlp: the channel MLP's kind.
            norm: the pre-norms' kind.
            drop_path: stochastic depth, rising linearly to this rate.
            layer_scale: LayerScale initial value.
            chunk_size: chunk of the chunkwise retention kernel.
            bidirectional: our variant with M[t, u] = γ^|t-u| (a forward and a backward pass);
                the paper's ViR, the default, is causal whatever ``causal`` says.
        """
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.bidirectional = check_bidirectional(self.name, bidirectional, causal)
        self.build_residual_blocks(
            lambda i: MultiScaleRetention(d_model, n_heads, causal=not self.bidirectional,
                                          decay_windows=tuple(decay_windows),
                                          gate=gate, group_norm=group_norm, chunk_size=chunk_size, impl=impl),
            mlp=mlp, mlp_ratio=mlp_ratio, norm=norm, drop_path=drop_path, layer_scale=layer_scale,
        )

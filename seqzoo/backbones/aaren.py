"""Aaren: attention as a many-to-many RNN (Feng et al. 2024, "Attention as an RNN").

Aaren replaces self-attention inside the usual pre-norm residual block with MLP. Its
query is a **learned vector per layer and head**, not a function of the tokens (a
token-dependent query would break the scan); keys and values are linear maps of the
tokens. With s_i = q · k_i / sqrt(d_h), output t is softmax attention over the prefix,

    o_t = Σ_{i<=t} exp(s_i) v_i / Σ_{i<=t} exp(s_i),

computed in parallel by the prefix scan over (max, sum, weighted sum) in
``kernels/prefix_attention.py``, or one token at a time from the state (m, u, w) per
layer and head -- constant memory when streaming.

Aaren is causal by construction: ``causal=False`` builds the same model (output t never
depends on later tokens either way). Padded positions get score -inf, so they never
enter a valid output, whatever the padding pattern.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqzoo.backbones.base import State, register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.layers import MlpKind, NormKind
from seqzoo.errors import ConfigError
from seqzoo.kernels.prefix_attention import identity_state, prefix_attention, prefix_attention_step, state_dtype


class AarenAttention(nn.Module):
    """Multi-head Aaren: a learned query per head attends over every prefix of the tokens."""

    def __init__(self, d_model: int, n_heads: int, *, chunk_size: int = 64, impl: str = "auto") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"aaren: n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.chunk_size, self.impl = chunk_size, impl
        self.query = nn.Parameter(torch.empty(n_heads, self.head_dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        scores, v = self._scores_values(x)
        if mask is not None:
            scores = scores.masked_fill(~mask[..., None], float("-inf"))
        o = prefix_attention(scores, v, chunk_size=self.chunk_size, impl=self.impl)
        return self.proj(o.reshape(B, L, D))

    def _scores_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """s = k · q / sqrt(d_h) (..., H) and v (..., H, d_h) from tokens x (..., D)."""
        k, v = self.kv(x).unflatten(-1, (2, self.n_heads, self.head_dim)).unbind(-3)
        return (k * self.query).sum(-1) * self.head_dim**-0.5, v

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return identity_state(batch_size, self.n_heads, self.head_dim, device=device,
                              dtype=state_dtype(dtype or torch.get_default_dtype()))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        scores, v = self._scores_values(x_t)
        o, state = prefix_attention_step(scores, v, tuple(state))
        return self.proj(o.reshape(x_t.shape)), state


@register_backbone("aaren")
class Aaren(BlockStack):
    """Attention as an RNN: learned-query prefix attention in pre-norm residual blocks."""

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
        mlp_ratio: float = 4.0,
        mlp: MlpKind = "gelu",
        norm: NormKind = "layer",
        drop_path: float = 0.0,
        chunk_size: int = 64,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.build_residual_blocks(
            lambda i: AarenAttention(d_model, n_heads, chunk_size=chunk_size, impl=impl),
            mlp=mlp, mlp_ratio=mlp_ratio, norm=norm, drop_path=drop_path,
        )

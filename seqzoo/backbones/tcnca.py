"""TCNCA: temporal convolution network with chunked attention (Terzić et al. 2023).

A MEGA block (Ma et al. 2023) whose exponential moving average is replaced by a TCN: a
stack of dilated depthwise convolutions (kernel K, dilation f^i, i < depth), each
x <- x + GELU(conv_i(x)), with receptive field 1 + (K-1)(f^depth - 1)/(f - 1), required
to exceed the attention chunk so information crosses chunk borders. With x the block
input and x̂ = LayerNorm(x):

    v = SiLU(W_v x̂)                          (E = hidden_dim)
    x' = SiLU(TCN(x̂));  [u, z, r, h_x] = W_mx x'
    u = σ(u);  z, r = SiLU(z), SiLU(r);  q = γ_q ⊙ z + β_q,  k = γ_k ⊙ z + β_k
    o = softmax(q k^T / sqrt(Z) + b_rel) v    inside chunks of C positions only
    h = SiLU(h_x + W_h (o ⊙ r));  y = x + u ⊙ (h - x)

followed by a pre-norm FFN. Chunks start at position 0; L is padded on the right to a
multiple of C for the computation (the convolutions pad on the left, zeros). Attention
runs through ``F.scaled_dot_product_attention`` on the block-diagonal (B, L/C, C, ·)
layout, causal inside each chunk. The default is causal (the TCN of the paper pads on the
left); ``bidirectional=True`` asks for the variant with centred convolutions and full
attention inside each chunk.

Streaming (causal): one ring buffer per TCN layer and the current chunk's keys and values
in fixed (B, C, ·) buffers with the position counter, so the state never changes size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from seqzoo.backbones.base import State, check_bidirectional, register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.errors import ConfigError
from seqzoo.layers import NormKind, TemporalConv, make_mlp, make_norm, mask_positions, split_state, stochastic_depth


def receptive_field(kernel_size: int, dilation_base: int, depth: int) -> int:
    """1 + (K-1) Σ_i f^i over the TCN's layers."""
    return 1 + (kernel_size - 1) * sum(dilation_base**i for i in range(depth))


@register_backbone("tcnca")
class TCNCA(BlockStack):
    """MEGA-style gated blocks with a dilated TCN and chunked softmax attention."""

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
        chunk_size: int = 32,
        kernel_size: int = 3,
        dilation_base: int = 2,
        tcn_depth: int = 5,
        z_dim: int | None = None,
        hidden_dim: int | None = None,
        mlp_ratio: float = 2.0,
        norm: NormKind = "layer",
        drop_path: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        """
        Args:
            chunk_size: attention chunk C.
            kernel_size: TCN kernel K.
            dilation_base: TCN dilation factor f (layer i dilates by f^i).
            tcn_depth: TCN layers.
            z_dim: shared q/k dimension Z (default min(64, D)).
            hidden_dim: value / gate width E (default 2D).
            mlp_ratio: FFN hidden width / D.
            norm: the pre-norms' kind.
            drop_path: stochastic depth, rising linearly to this rate.
            bidirectional: a variant with centred convolutions and attention over the whole
                chunk; the default is the paper's causal TCN and causal chunk attention,
                whatever ``causal`` says.
        """
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self.bidirectional = check_bidirectional(self.name, bidirectional, causal)
        for key, value in (("chunk_size", chunk_size), ("kernel_size", kernel_size), ("tcn_depth", tcn_depth)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"backbone 'tcnca': {key} must be a positive integer, got {value!r}")
        if not isinstance(dilation_base, int) or dilation_base < 1:
            raise ConfigError(f"backbone 'tcnca': dilation_base must be a positive integer, got {dilation_base!r}")
        field = receptive_field(kernel_size, dilation_base, tcn_depth)
        if field <= chunk_size:
            raise ConfigError(
                f"backbone 'tcnca': the TCN's receptive field ({field} = 1 + (K-1)·Σ f^i with K={kernel_size}, "
                f"f={dilation_base}, depth={tcn_depth}) must exceed chunk_size={chunk_size}, or nothing crosses "
                "chunk borders: raise tcn_depth, kernel_size or dilation_base, or lower chunk_size"
            )
        self.receptive_field = field
        z_dim = z_dim or min(64, d_model)
        hidden_dim = hidden_dim or 2 * d_model
        rates = stochastic_depth(drop_path, n_layers)
        self.build_blocks(
            lambda i: TCNCABlock(
                d_model, z_dim, hidden_dim, chunk_size=chunk_size, kernel_size=kernel_size,
                dilation_base=dilation_base, tcn_depth=tcn_depth, causal=not self.bidirectional, dropout=dropout,
                mlp_ratio=mlp_ratio, norm=norm, drop_path=rates[i],
            ),
            final_norm=norm,
        )


class TCNCABlock(nn.Module):
    """One gated TCN + chunked-attention unit and its FFN (both pre-norm)."""

    def __init__(self, d_model: int, z_dim: int, hidden_dim: int, *, chunk_size: int, kernel_size: int,
                 dilation_base: int, tcn_depth: int, causal: bool, dropout: float, mlp_ratio: float,
                 norm: NormKind, drop_path: float) -> None:
        super().__init__()
        self.d_model, self.z_dim, self.hidden_dim, self.chunk = d_model, z_dim, hidden_dim, chunk_size
        self.causal = causal
        self.norm = make_norm(norm, d_model)
        self.value = nn.Linear(d_model, hidden_dim)
        self.tcn = nn.ModuleList(
            TemporalConv(d_model, d_model, kernel_size, causal=causal, dilation=dilation_base**i, groups=d_model)
            for i in range(tcn_depth)
        )
        self.mx = nn.Linear(d_model, 2 * d_model + z_dim + hidden_dim)
        self.qk_scale = nn.Parameter(torch.ones(2, z_dim) + 0.1 * torch.randn(2, z_dim))
        self.qk_shift = nn.Parameter(torch.zeros(2, z_dim))
        self.rel_bias = nn.Parameter(torch.randn(2 * chunk_size - 1) * 0.02)  # b[i - j + C - 1]
        self.h_proj = nn.Linear(hidden_dim, d_model)
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = dropout
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = make_norm(norm, d_model)
        self.mlp = make_mlp("gelu", d_model, mlp_ratio, dropout)

    # -- full sequence ----------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x_hat = mask_positions(self.norm(x), mask)
        v = F.silu(self.value(x_hat))
        mixed = x_hat
        for conv in self.tcn:
            mixed = mixed + F.gelu(conv(mixed, mask))
        u, q, k, r, h_x = self._gates(F.silu(mixed))
        o = self._chunked_attention(q, k, v, mask)
        return self._finish(x, u, r, h_x, o)

    def _gates(self, mixed: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        u, z, r, h_x = self.mx(mixed).split([self.d_model, self.z_dim, self.hidden_dim, self.d_model], dim=-1)
        z = F.silu(z)
        q = z * self.qk_scale[0] + self.qk_shift[0]
        k = z * self.qk_scale[1] + self.qk_shift[1]
        return torch.sigmoid(u), q, k, F.silu(r), h_x

    def _finish(self, x: Tensor, u: Tensor, r: Tensor, h_x: Tensor, o: Tensor) -> Tensor:
        h = F.silu(h_x + self.h_proj(self.drop(o) * r))
        x = x + self.drop_path(u * (h - x))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _chunked_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Softmax attention inside consecutive chunks of C positions (from position 0)."""
        B, L = q.shape[:2]
        C = self.chunk
        n_chunks = (L + C - 1) // C
        pad = n_chunks * C - L
        if mask is None:
            mask = torch.ones(B, L, dtype=torch.bool, device=q.device)
        valid = F.pad(mask, (0, pad), value=False).view(B, n_chunks, 1, C)
        chunked = [F.pad(t, (0, 0, 0, pad)).view(B, n_chunks, C, t.shape[-1]) for t in (q, k, v)]
        idx = torch.arange(C, device=q.device)
        offset = idx[:, None] - idx[None, :]
        allowed = valid | (offset == 0)  # a query always sees itself: no all-masked (NaN) rows
        if self.causal:
            allowed = allowed & (offset >= 0)
        bias = torch.where(allowed, self.rel_bias[offset + C - 1].to(q.dtype), float("-inf"))
        o = F.scaled_dot_product_attention(
            *chunked, attn_mask=bias, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return o.reshape(B, n_chunks * C, -1)[:, :L]

    # -- streaming ----------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        convs = tuple(t for conv in self.tcn for t in conv.init_state(batch_size, device=device, dtype=dtype))
        keys = torch.zeros(batch_size, self.chunk, self.z_dim, device=device, dtype=dtype)
        values = torch.zeros(batch_size, self.chunk, self.hidden_dim, device=device, dtype=dtype)
        return (*convs, keys, values, torch.zeros(batch_size, dtype=torch.long, device=device))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        *conv_states, keys, values, position = state
        x_hat = self.norm(x_t)
        v = F.silu(self.value(x_hat))
        mixed, new_convs = x_hat, []
        for conv, s in zip(self.tcn, split_state(conv_states, [conv.n_state for conv in self.tcn])):
            y, s = conv.step(mixed, s)
            mixed = mixed + F.gelu(y)
            new_convs.extend(s)
        u, q, k, r, h_x = self._gates(F.silu(mixed))
        slot = torch.remainder(position, self.chunk)  # (B,) place in the current chunk
        idx = torch.arange(self.chunk, device=x_t.device)
        write = (idx[None, :] == slot[:, None])[..., None]
        keys = torch.where(write, k[:, None, :], keys)
        values = torch.where(write, v[:, None, :], values)
        lag = slot[:, None] - idx[None, :]  # i - j for the keys of this chunk
        scores = (keys @ q[..., None])[..., 0] / self.z_dim**0.5 + self.rel_bias[lag.clamp(min=0) + self.chunk - 1]
        scores = scores.masked_fill(lag < 0, float("-inf"))  # later slots still hold the previous chunk
        o = (torch.softmax(scores, dim=-1)[:, None, :] @ values)[:, 0]
        return self._finish(x_t, u, r, h_x, o), (*new_convs, keys, values, position + 1)


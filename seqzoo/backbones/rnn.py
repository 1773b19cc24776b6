"""Recurrent baselines: GRU, LSTM, and the laser paper's attention-GRU.

Training uses torch's fused (cuDNN) GRU/LSTM. For export the same weights run
through an explicit cell recurrence under ``torch``'s ``scan`` operator, so the
ONNX graph keeps a symbolic sequence length. ``step`` carries the hidden state.

The attention-GRU (Abdelli et al., laser predictive maintenance) re-weights the GRU
outputs with additive attention, e_t = v^T tanh(W h_t + b), α = softmax(e), and
mixes the context c_t = Σ α_i h_i back in: y_t = W_o [h_t; c_t]. When causal the
softmax runs over the prefix i <= t (streamed with a running (max, sum, weighted
sum)); the last step's context is the paper's context vector.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, State, register_backbone
from seqzoo.layers import check_mask
from seqzoo.errors import ConfigError
from seqzoo.kernels.dispatch import is_export_mode


class RecurrentBackbone(Backbone):
    """A GRU or LSTM stack, (B, L, D) -> (B, L, D); bidirectional when asked (not causal)."""

    causal = True
    streaming = True
    cell: ClassVar[str] = "gru"

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        bidirectional: bool = False,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        if bidirectional and causal:
            raise ConfigError(f"backbone {self.name!r}: bidirectional=True cannot be causal")
        rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}[self.cell]
        self.bidirectional = bidirectional
        self.rnn = rnn_cls(
            d_model,
            d_model,
            num_layers=n_layers,
            batch_first=True,
            dropout=dropout if n_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.out_proj = nn.Linear(2 * d_model, d_model) if bidirectional else nn.Identity()

    # -- full sequence ----------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_mask(x, mask)
        if is_export_mode():
            h = self._scan_forward(x, mask)
        else:
            h = self._fused_forward(x, mask)
        return self.mix_output(self.out_proj(h), mask)

    def mix_output(self, h: Tensor, mask: Tensor | None) -> Tensor:
        return h

    def _fused_forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None or not self.bidirectional:
            # Unidirectional: padding at the end never reaches earlier (valid) outputs.
            return self.rnn(x)[0]
        lengths = _prefix_lengths(mask, self.name)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out

    def _scan_forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """The fused RNN's math as an explicit recurrence under torch's scan operator."""
        from seqzoo.kernels.scan import scan

        B = x.shape[0]
        keep = None if mask is None else mask.transpose(0, 1)[..., None].to(x.dtype)  # (L, B, 1)
        for layer in range(self.n_layers):
            outs = []
            for direction in range(2 if self.bidirectional else 1):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                w_ih, w_hh = getattr(self.rnn, "weight_ih" + suffix), getattr(self.rnn, "weight_hh" + suffix)
                b_ih, b_hh = getattr(self.rnn, "bias_ih" + suffix), getattr(self.rnn, "bias_hh" + suffix)
                xs = F.linear(x, w_ih, b_ih).transpose(0, 1)  # (L, B, G)
                ks = keep if keep is not None else torch.ones_like(xs[..., :1])
                if direction:
                    xs, ks = xs.flip(0), ks.flip(0)
                carry = self._zero_carry(B, x)

                def combine(carry, inputs, w_hh, b_hh):
                    gi, k = inputs
                    new = self._cell(gi, carry, w_hh, b_hh)
                    new = tuple(k * n + (1 - k) * c for n, c in zip(new, carry))
                    return new, new[0].clone()

                _, ys = scan(combine, carry, (xs, ks), (w_hh, b_hh))
                outs.append(ys.flip(0) if direction else ys)
            x = torch.cat(outs, dim=-1).transpose(0, 1)
        return x

    def _zero_carry(self, batch_size: int, like: Tensor) -> tuple[Tensor, ...]:
        z = like.new_zeros(batch_size, self.d_model)
        return (z, z.clone()) if self.cell == "lstm" else (z,)

    def _cell(self, gi: Tensor, carry: tuple[Tensor, ...], w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, ...]:
        """One step of torch's GRU/LSTM given the precomputed input projection ``gi``."""
        h = carry[0]
        gh = F.linear(h, w_hh, b_hh)
        if self.cell == "gru":
            ir, iz, inn = gi.chunk(3, -1)
            hr, hz, hn = gh.chunk(3, -1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(inn + r * hn)
            return ((1 - z) * n + z * h,)
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * carry[1] + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    # -- streaming --------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        self._check_can_step()
        h = torch.zeros(self.n_layers, batch_size, self.d_model, device=device, dtype=dtype)
        return (h, h.clone()) if self.cell == "lstm" else (h,)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        self._check_can_step()
        n = 2 if self.cell == "lstm" else 1
        rnn_state, extra = tuple(state[:n]), tuple(state[n:])
        h_in, new_rnn = x_t, []
        for layer in range(self.n_layers):
            suffix = f"_l{layer}"
            carry = tuple(s[layer] for s in rnn_state)
            gi = F.linear(h_in, getattr(self.rnn, "weight_ih" + suffix), getattr(self.rnn, "bias_ih" + suffix))
            carry = self._cell(gi, carry, getattr(self.rnn, "weight_hh" + suffix), getattr(self.rnn, "bias_hh" + suffix))
            new_rnn.append(carry)
            h_in = carry[0]
        stacked = tuple(torch.stack([c[i] for c in new_rnn]) for i in range(n))
        y, extra = self.step_output(h_in, extra)
        return y, stacked + extra

    def step_output(self, h_t: Tensor, extra: State) -> tuple[Tensor, State]:
        return h_t, extra


@register_backbone("gru")
class GRU(RecurrentBackbone):
    """Gated recurrent unit stack (Cho et al. 2014), cuDNN via torch."""

    cell = "gru"


@register_backbone("lstm")
class LSTM(RecurrentBackbone):
    """Long short-term memory stack (Hochreiter & Schmidhuber 1997), cuDNN via torch."""

    cell = "lstm"


@register_backbone("attention_gru")
class AttentionGRU(RecurrentBackbone):
    """GRU stack whose outputs are re-weighted by additive attention (laser RUL paper)."""

    cell = "gru"

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        bidirectional: bool = False,
        attention_dim: int | None = None,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl, bidirectional=bidirectional)
        self.score = nn.Sequential(nn.Linear(d_model, attention_dim or d_model), nn.Tanh())
        self.score_v = nn.Linear(attention_dim or d_model, 1, bias=False)
        self.mix = nn.Linear(2 * d_model, d_model)

    def scores(self, h: Tensor) -> Tensor:
        return self.score_v(self.score(h)).squeeze(-1)

    def mix_output(self, h: Tensor, mask: Tensor | None) -> Tensor:
        e = self.scores(h)  # (B, L); |e| <= ||v||_1, so exp(e - max e) does not underflow in practice
        if mask is not None:
            e = e.masked_fill(~mask, float("-inf"))
        if self.is_causal:
            a = torch.exp(e - e.amax(dim=1, keepdim=True).detach())
            context = torch.cumsum(a[..., None] * h, dim=1) / torch.cumsum(a, dim=1)[..., None]
        else:
            alpha = torch.softmax(e, dim=1)
            context = torch.einsum("bl,bld->bd", alpha, h)[:, None, :].expand_as(h)
        return self.mix(torch.cat([h, context], dim=-1))

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        state = super().init_state(batch_size, device=device, dtype=dtype)
        low = torch.finfo(dtype or torch.get_default_dtype()).min
        m = torch.full((batch_size, 1), low, device=device, dtype=dtype)
        u = torch.zeros(batch_size, 1, device=device, dtype=dtype)
        w = torch.zeros(batch_size, self.d_model, device=device, dtype=dtype)
        return state + (m, u, w)

    def step_output(self, h_t: Tensor, extra: State) -> tuple[Tensor, State]:
        m, u, w = extra
        e = self.scores(h_t)[:, None]
        m_new = torch.maximum(m, e)
        scale, a = torch.exp(m - m_new), torch.exp(e - m_new)
        u, w = u * scale + a, w * scale + a * h_t
        return self.mix(torch.cat([h_t, w / u], dim=-1)), (m_new, u, w)


def _prefix_lengths(mask: Tensor, name: str) -> Tensor:
    """Lengths of right-padded rows; any other mask pattern is an error."""
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions[None, :] < lengths[:, None]):
        raise ValueError(f"backbone {name!r} needs right-padded masks (valid positions first)")
    if bool((lengths == 0).any()):
        raise ValueError(f"backbone {name!r}: every sequence needs at least one valid position")
    return lengths

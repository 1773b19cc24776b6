"""LMUFormer: Legendre Memory Units with convolutional embedding and channel mixer, and its
spiking variant (Liu et al., ICLR 2024).

Legendre Memory Unit (Voelker et al. 2019). Per step a scalar u_t = f(W_u x_t) drives a
memory of order d over a sliding window of θ steps,

    m_t = Ā m_{t-1} + B̄ u_t,    A_ij = (2i+1)/θ · (-1 if i < j else (-1)^(i-j+1)),
                                  B_i = (2i+1)(-1)^i / θ,

with (Ā, B̄) the zero-order hold of (A, B) at Δ = 1, fixed buffers (never trained); the
hidden state is h_t = f(W_h [m_t; x_t]). The memory is linear and time-invariant, so
training convolves u with the impulse response H_t = Ā^t B̄ (a direct causal convolution
for short sequences, FFT of size 2L beyond); ``step`` runs the recurrence, export the
recurrence under torch's scan (see :func:`seqzoo.kernels.linear_recurrence.lti_recurrence`;
Ā's eigenvectors are too ill-conditioned for a diagonal form).

LMUFormer wraps the cell as a token mixer: a convolutional patch embedding (K = 3 convs,
BatchNorm, plus a convolutional relative-position branch), then blocks
x <- x + BN(Conv1x1(LMU(x))), x <- x + ConvFFN(x) with 1x1 convs of ratio 4 and BatchNorm.
``lmuformer`` uses ReLU/GELU (the paper's ``lmu_rnn_conv1d``); ``spiking_lmuformer`` puts
leaky integrate-and-fire neurons (τ = 2, :mod:`seqzoo.kernels.lif`) before every weight
layer, with membrane shortcuts (``slmu_rnn_ms_conv1d``). Built causal, every convolution
pads on the left and the model streams: its state is the memories, the LIF membranes and
one ring buffer per temporal convolution. BatchNorm statistics skip padded positions.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from seqzoo.backbones.base import State, register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.errors import ConfigError
from seqzoo.kernels.dispatch import is_export_mode
from seqzoo.kernels.lif import lif, lif_step
from seqzoo.kernels.linear_recurrence import lti_recurrence
from seqzoo.layers import TemporalConv, cached_on_tensors, split_state, stochastic_depth

DIRECT_CONVOLUTION_MAX_LENGTH = 128
"""Up to this length the memory is a direct causal convolution; beyond it an FFT one."""

IMPULSE_CACHE_SIZE = 8
"""Impulse responses each LegendreMemory keeps (one per recent sequence length)."""

@register_backbone("lmuformer")
class LMUFormer(BlockStack):
    """Convolutional embedding + LMU token mixers + convolutional channel mixers."""

    causal = True
    streaming = True
    spiking: ClassVar[bool] = False

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        memory_size: int | None = None,
        theta: float = 128.0,
        embed_layers: int = 4,
        kernel_size: int = 3,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        order = memory_size if memory_size is not None else (2 * d_model if self.spiking else d_model)
        label = type(self).name
        if not isinstance(order, int) or order < 1:
            raise ConfigError(f"backbone {label!r}: memory_size must be a positive integer, got {memory_size!r}")
        if not theta > 0:
            raise ConfigError(f"backbone {label!r}: theta (the memory window in steps) must be positive, got {theta}")
        if not isinstance(embed_layers, int) or embed_layers < 1:
            raise ConfigError(f"backbone {label!r}: embed_layers must be a positive integer, got {embed_layers!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ConfigError(f"backbone {label!r}: kernel_size must be a positive integer, got {kernel_size!r}")
        self.memory_size, self.theta = order, float(theta)
        parts = _Parts(causal=causal, spiking=self.spiking, impl=impl, kernel_size=kernel_size,
                       **getattr(self, "_spiking_options", {}))
        rates = stochastic_depth(drop_path, n_layers)
        # blocks[0] is the convolutional embedding; no final norm (the paper has none)
        self.build_blocks(
            lambda i: ConvEmbedding(d_model, embed_layers, parts) if i == 0 else
            LMUBlock(d_model, order, float(theta), mlp_ratio, dropout, rates[i - 1], parts),
            final_norm=None,
            count=n_layers + 1,
        )


@register_backbone("spiking_lmuformer")
class SpikingLMUFormer(LMUFormer):
    """LMUFormer with leaky integrate-and-fire neurons (τ = 2, surrogate gradient)."""

    spiking = True

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        memory_size: int | None = None,
        theta: float = 128.0,
        embed_layers: int = 4,
        kernel_size: int = 3,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        bn_gain: float = 1.0,
        stem_shortcut: bool = False,
    ) -> None:
        """
        Args:
            memory_size, theta, embed_layers, kernel_size, mlp_ratio, drop_path: as ``lmuformer``
                (memory_size defaults to 2 * d_model).
            bn_gain: initial γ of every BatchNorm in front of a LIF neuron. The paper (and the
                authors' code, torch's default) start at 1: with τ = 2 and V_th = 1 only ~4 % of
                steps fire at first. 2 (a variant, labelled) starts a fresh network near 20 % firing.
            stem_shortcut: add the real-valued input around the spiking stem (a variant,
                labelled; it keeps the stem's output tied to its input while the BatchNorm
                statistics are untrained, and makes the stem's output not purely spike-driven).
        """
        if not bn_gain > 0:
            raise ConfigError(f"backbone 'spiking_lmuformer': bn_gain must be positive, got {bn_gain}")
        object.__setattr__(self, "_spiking_options", {"bn_gain": float(bn_gain), "stem_shortcut": bool(stem_shortcut)})
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl, memory_size=memory_size,
                         theta=theta, embed_layers=embed_layers, kernel_size=kernel_size, mlp_ratio=mlp_ratio,
                         drop_path=drop_path)


# ---------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------


class _Parts:
    """Builds the layers both variants share, in the variant's flavour."""

    def __init__(self, *, causal: bool, spiking: bool, impl: str, kernel_size: int, bn_gain: float = 1.0,
                 stem_shortcut: bool = False) -> None:
        self.causal, self.spiking, self.impl, self.kernel_size = causal, spiking, impl, kernel_size
        self.bn_gain, self.stem_shortcut = bn_gain, stem_shortcut

    def conv(self, c_in: int, c_out: int, *, bias: bool = False) -> TemporalConv:
        return TemporalConv(c_in, c_out, self.kernel_size, causal=self.causal, bias=bias)

    def spiking_norm(self, channels: int, v_threshold: float = 1.0) -> list[nn.Module]:
        """BatchNorm -> LIF. The norm starts with γ = ``bn_gain`` (the paper: 1; with τ = 2 the
        membrane's stationary std is then 0.58 and ~4 % of steps cross V_th = 1; the variant
        ``bn_gain = 2`` gives a fresh network ~20 % firing)."""
        return [BatchNorm(channels, scale=self.bn_gain), LIFNeuron(channels, v_threshold=v_threshold, impl=self.impl)]


class ConvEmbedding(nn.Module):
    """Convolutional patch embedding (stride 1) plus a convolutional relative-position branch.

    ``lmuformer``: [Conv -> ReLU -> BN] × n, then x + Conv(x) (the paper's Tokenizer);
    ``spiking_lmuformer``: Conv, [BN -> LIF -> Conv] × (n-1), then x + Conv(LIF(BN(x))) (the
    paper's membrane-shortcut stem); ``stem_shortcut=True`` (a variant) also adds the
    real-valued input around the stem.
    """

    def __init__(self, d_model: int, n_convs: int, parts: _Parts) -> None:
        super().__init__()
        if parts.spiking:
            ops: list[nn.Module] = [parts.conv(d_model, d_model)]
            for _ in range(n_convs - 1):
                ops += [*parts.spiking_norm(d_model), parts.conv(d_model, d_model)]
            position = [*parts.spiking_norm(d_model), parts.conv(d_model, d_model)]
        else:
            ops = []
            for _ in range(n_convs):
                ops += [parts.conv(d_model, d_model), Pointwise(nn.ReLU()), BatchNorm(d_model)]
            position = [parts.conv(d_model, d_model)]
        self.body = Chain(ops)
        self.position = Chain(position)
        self.shortcut = parts.spiking and parts.stem_shortcut
        self.n_state = self.body.n_state + self.position.n_state

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        y = self.body(x, mask)
        return y + self.position(y, mask) + (x if self.shortcut else 0)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return self.body.init_state(batch_size, device, dtype) + self.position.init_state(batch_size, device, dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        s_body, s_position = _split(state, [self.body, self.position])
        y, body = self.body.step(x_t, s_body)
        rel, position = self.position.step(y, s_position)
        return y + rel + (x_t if self.shortcut else 0), body + position


class LMUBlock(nn.Module):
    """x <- x + DropPath(LMU mixer(x)); x <- x + DropPath(ConvFFN(x))."""

    def __init__(self, d_model: int, order: int, theta: float, mlp_ratio: float, dropout: float, drop_path: float,
                 parts: _Parts) -> None:
        super().__init__()
        hidden = max(1, int(round(d_model * mlp_ratio)))
        self.mixer = LMUMixer(d_model, order, theta, parts)
        if parts.spiking:  # membrane shortcut: BN -> LIF before each 1x1 conv
            ffn = [*parts.spiking_norm(d_model), Pointwise(nn.Linear(d_model, hidden, bias=False)),
                   *parts.spiking_norm(hidden), Pointwise(nn.Linear(hidden, d_model))]
        else:
            ffn = [Pointwise(nn.Linear(d_model, hidden, bias=False)), BatchNorm(hidden), Pointwise(nn.GELU()),
                   Pointwise(nn.Dropout(dropout)), Pointwise(nn.Linear(hidden, d_model, bias=False)), BatchNorm(d_model),
                   Pointwise(nn.ReLU()), Pointwise(nn.Dropout(dropout))]
        self.ffn = Chain(ffn)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.n_state = self.mixer.n_state + self.ffn.n_state

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.mixer(x, mask))
        return x + self.drop_path(self.ffn(x, mask))

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return self.mixer.init_state(batch_size, device, dtype) + self.ffn.init_state(batch_size, device, dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        s_mixer, s_ffn = _split(state, [self.mixer, self.ffn])
        y, mixer = self.mixer.step(x_t, s_mixer)
        x_t = x_t + y
        y, ffn = self.ffn.step(x_t, s_ffn)
        return x_t + y, mixer + ffn


class LMUMixer(nn.Module):
    """u = f_u(W_u x) (scalar), m = LegendreMemory(u), h = f_h(W_h [m; x]), out = BN(W_p h).

    Spiking: x passes BN -> LIF (V_th = 0.5) first, and f_u, f_m (on m), f_h are BN -> LIF.
    """

    def __init__(self, d_model: int, order: int, theta: float, parts: _Parts) -> None:
        super().__init__()
        # weights followed by a BatchNorm carry no bias (it would cancel)
        self.encoder = nn.Linear(d_model, 1, bias=not parts.spiking)
        self.memory = LegendreMemory(order, theta)
        self.hidden = nn.Linear(order + d_model, d_model, bias=not parts.spiking)
        if parts.spiking:
            self.pre = Chain(parts.spiking_norm(d_model, v_threshold=0.5))
            self.f_u = Chain(parts.spiking_norm(1))
            self.f_m = Chain(parts.spiking_norm(order))
            self.f_h = Chain(parts.spiking_norm(d_model))
        else:
            self.pre, self.f_m = Chain([]), Chain([])
            self.f_u, self.f_h = Chain([Pointwise(nn.ReLU())]), Chain([Pointwise(nn.ReLU())])
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.proj_norm = BatchNorm(d_model)
        self.parts = [self.pre, self.f_u, self.memory, self.f_m, self.f_h]
        self.n_state = sum(p.n_state for p in self.parts)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.pre(x, mask)
        u = self.f_u(self.encoder(x), mask)
        m = self.f_m(self.memory(u[..., 0]), mask)
        h = self.f_h(self.hidden(torch.cat([m, x], dim=-1)), mask)
        return self.proj_norm(self.proj(h), mask)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return tuple(t for p in self.parts for t in p.init_state(batch_size, device, dtype))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        states = _split(state, self.parts)
        x_t, s_pre = self.pre.step(x_t, states[0])
        u_t, s_u = self.f_u.step(self.encoder(x_t), states[1])
        m_t, s_mem = self.memory.step(u_t[..., 0], states[2])
        m_t, s_m = self.f_m.step(m_t, states[3])
        h_t, s_h = self.f_h.step(self.hidden(torch.cat([m_t, x_t], dim=-1)), states[4])
        y, _ = self.proj_norm.step(self.proj(h_t), ())
        return y, s_pre + s_u + s_mem + s_m + s_h


# ---------------------------------------------------------------------------------------
# Sequence ops: forward(x (B, L, C), mask), init_state, step(x_t (B, C), state)
# ---------------------------------------------------------------------------------------


class Chain(nn.Module):
    """Sequence ops applied in turn; the state is the concatenation of theirs."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.n_state = sum(op.n_state for op in ops)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for op in self.ops:
            x = op(x, mask)
        return x

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return tuple(t for op in self.ops for t in op.init_state(batch_size, device=device, dtype=dtype))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        new: list[Tensor] = []
        for op, s in zip(self.ops, _split(state, self.ops)):
            x_t, s = op.step(x_t, s)
            new.extend(s)
        return x_t, tuple(new)


class Pointwise(nn.Module):
    """A per-position module (Linear, activation, dropout) as a stateless sequence op."""

    n_state = 0

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.module(x)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return ()

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        return self.module(x_t), state


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm over the channels of (B, L, C); in training its statistics (and running
    averages) cover only valid positions. Streaming uses the running statistics (eval)."""

    n_state = 0

    def __init__(self, channels: int, *, scale: float = 1.0) -> None:
        super().__init__(channels)
        nn.init.constant_(self.weight, scale)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if not (self.training and mask is not None):
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        weight = mask[..., None].to(x.dtype)
        count = weight.sum().clamp(min=1.0)
        mean = (x * weight).sum((0, 1)) / count
        var = ((x - mean) ** 2 * weight).sum((0, 1)) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
            unbiased = var.detach() * count / (count - 1).clamp(min=1.0)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return ()

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        return F.batch_norm(x_t, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps), state


class LIFNeuron(nn.Module):
    """Leaky integrate-and-fire neurons along time (τ = 2, hard reset to 0); state V (B, C)."""

    n_state = 1

    def __init__(self, channels: int, *, tau: float = 2.0, v_threshold: float = 1.0, impl: str = "auto") -> None:
        super().__init__()
        self.channels, self.tau, self.v_threshold, self.impl = channels, tau, v_threshold, impl

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return lif(x, tau=self.tau, v_threshold=self.v_threshold, impl=self.impl)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return (torch.zeros(batch_size, self.channels, device=device, dtype=dtype),)  # V_reset = 0

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        s, v, _ = lif_step(x_t, state[0], tau=self.tau, v_threshold=self.v_threshold)
        return s.to(x_t.dtype), (v,)

    def extra_repr(self) -> str:
        return f"{self.channels}, tau={self.tau}, v_threshold={self.v_threshold}"


class LegendreMemory(nn.Module):
    """m_t = Ā m_{t-1} + B̄ u_t for a scalar input u_t; Ā, B̄ fixed buffers (ZOH, Δ = 1)."""

    n_state = 1

    def __init__(self, order: int, theta: float) -> None:
        super().__init__()
        A, B = legendre_state_space(order, theta)
        augmented = torch.zeros(order + 1, order + 1, dtype=torch.float64)
        augmented[:order, :order], augmented[:order, order] = A, B
        discrete = torch.linalg.matrix_exp(augmented)  # exp([[A, B], [0, 0]]) = [[Ā, B̄], [0, 1]]
        self.register_buffer("A_bar", discrete[:order, :order].float())
        self.register_buffer("B_bar", discrete[:order, order].float())

    def forward(self, u: Tensor, mask: Tensor | None = None) -> Tensor:
        """u (B, L) -> m (B, L, order)."""
        if is_export_mode():
            return lti_recurrence(self.A_bar, u[..., None] * self.B_bar)
        L = u.shape[1]
        H = self._cached_impulse_response(L, u.dtype)  # (L, order)
        if L <= DIRECT_CONVOLUTION_MAX_LENGTH:
            m = F.conv1d(F.pad(u[:, None, :], (L - 1, 0)), H.flip(0).T[:, None, :])
        else:
            work = torch.float64 if u.dtype == torch.float64 else torch.float32
            u_f = torch.fft.rfft(u.to(work), n=2 * L)
            H_f = torch.fft.rfft(H.T.to(work), n=2 * L)
            m = torch.fft.irfft(u_f[:, None, :] * H_f, n=2 * L)[..., :L].to(u.dtype)
        return m.transpose(1, 2)

    def _cached_impulse_response(self, L: int, dtype: torch.dtype) -> Tensor:
        """``impulse_response(L).to(dtype)``, a constant of the buffers: kept for a few lengths
        until Ā or B̄ changes (:func:`seqzoo.layers.cached_on_tensors`)."""
        return cached_on_tensors(self, (self.A_bar, self.B_bar), lambda: self.impulse_response(L).to(dtype),
                                 key=(L, dtype), max_entries=IMPULSE_CACHE_SIZE)

    def impulse_response(self, L: int) -> Tensor:
        """H_t = Ā^t B̄ for t < L, (L, order), by doubling in float64."""
        power, H = self.A_bar.double(), self.B_bar.double()[None]
        while H.shape[0] < L:
            H = torch.cat([H, H @ power.T])
            power = power @ power
        return H[:L]

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return (torch.zeros(batch_size, self.A_bar.shape[0], device=device, dtype=dtype),)

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        m = state[0] @ self.A_bar.T.to(state[0].dtype) + u_t[:, None] * self.B_bar.to(state[0].dtype)
        return m, (m,)


def legendre_state_space(order: int, theta: float) -> tuple[Tensor, Tensor]:
    """The LMU's continuous (A, B) (Voelker et al. 2019, eq. 2), float64."""
    q = torch.arange(order, dtype=torch.float64)
    r = (2 * q + 1)[:, None] / theta
    i, j = q[:, None], q[None, :]
    A = r * torch.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    B = r[:, 0] * (-1.0) ** q
    return A, B


def _split(state: State, parts) -> list[State]:
    """Each part's slice of ``state``, by the parts' ``n_state``."""
    return split_state(state, [p.n_state for p in parts])

"""The selective state-space layer of Mamba (Gu & Dao 2023), shared by the ``mamba`` and
``mambamixer`` families and TSM2.

One layer (mamba_ssm's ``Mamba`` module), with E = expand·D, R = ceil(D/16), N = d_state:

    x, z    = in_proj(h)                         D -> 2E
    u       = SiLU(causal depthwise conv_4(x))   per channel, kernel 4
    δ, B, C = x_proj(u)                          E -> R + 2N
    Δ       = softplus(dt_proj(δ) + dt_bias)     R -> E
    y       = S6(u; Δ, A = -exp(A_log), B, C) + D u        (kernels/selective_scan.py)
    out     = out_proj(y ⊙ SiLU(z))              E -> D

Initialisation (the paper's): dt ~ logU[dt_min, dt_max] floored at 1e-4 and
dt_bias = softplus^{-1}(dt), marked ``_no_reinit`` so no global re-initialisation
touches it; dt_proj ~ U[-R^-1/2, R^-1/2]; A_log = log(1..N) per channel and D = 1,
both without weight decay (:func:`no_weight_decay_groups`); out_proj divided by
sqrt(number of residual branches) (:func:`scale_output_projections`, GPT-2's rule, as
mamba_ssm does).

The layer is the paper's causal scan unless built ``bidirectional=True`` (Vim, Zhu et
al. 2024): a second scan, with its own conv/Δ/B/C/A/D, runs over the reversed sequence
and its output is added before the gate; in/out projections are shared.

Several directions run as one selective scan (:func:`scan_together`): their channels
side by side, each direction's B and C one group (the kernels' grouped B/C, channel e
reading group e // E), as VMamba's cross-scan calls its four directions. Each channel's
recurrence is the same as in a scan of its own; one call instead of one per direction
(one kernel launch, one time loop on the eager CPU path, one scan per layer in an
exported graph).

Padding (``mask``, valid positions True): padded positions enter the scans with zero
input (the conv sees zeros there and the SSM input u is zeroed), so whether the scan
runs forward or over the flipped sequence, valid outputs never depend on padded values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.errors import ConfigError
from seqzoo.kernels.selective_scan import accumulation_dtype, selective_scan, selective_state_update
from seqzoo.layers.state import State

__all__ = ["MambaLayer", "SelectiveSSM", "as_residual", "no_weight_decay_groups", "scale_output_projections",
           "scan_together"]

class MambaLayer(nn.Module):
    """The Mamba mixer (B, L, d_model) -> (B, L, d_model), optionally bidirectional.

    Args:
        d_model: token width D.
        d_state: SSM state size N per channel.
        expand: E = expand * D (unless ``d_inner`` is given).
        d_inner: the inner width E itself.
        d_conv: taps of the causal depthwise convolution.
        dt_rank: rank R of the Δ projection (``"auto"``: ceil(D / 16)).
        bidirectional: add a second scan over the reversed sequence (Vim); no ``step``.
        impl: kernel implementation (``"auto"``, ``"triton"``, ``"torch"``).
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 16,
        expand: int = 2,
        d_inner: int | None = None,
        d_conv: int = 4,
        dt_rank: int | Literal["auto"] = "auto",
        bidirectional: bool = False,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("d_state", d_state), ("expand", expand), ("d_conv", d_conv)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"mamba: {name} must be a positive integer, got {value!r}")
        if dt_rank != "auto" and (not isinstance(dt_rank, int) or dt_rank < 1):
            raise ConfigError(f"mamba: dt_rank must be a positive integer or 'auto', got {dt_rank!r}")
        self.d_inner = d_inner or expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.bidirectional = bidirectional
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.directions = nn.ModuleList(
            SelectiveSSM(self.d_inner, d_state=d_state, d_conv=d_conv, dt_rank=self.dt_rank, impl=impl)
            for _ in range(2 if bidirectional else 1)
        )
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        u, z = self.in_proj(x).chunk(2, dim=-1)
        keep = None if mask is None else mask[..., None].to(u.dtype)
        if not self.bidirectional:
            return self.out_proj(self.directions[0](u, z, keep))
        flip = lambda t: None if t is None else t.flip(1)  # noqa: E731
        forward, backward = scan_together(self.directions, [u, flip(u)], [z, flip(z)], [keep, flip(keep)])
        return self.out_proj(forward + backward.flip(1))

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        self._check_streamable()
        return self.directions[0].init_state(batch_size, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        self._check_streamable()
        u, z = self.in_proj(x_t).chunk(2, dim=-1)
        y, state = self.directions[0].step(u, z, state)
        return self.out_proj(y), state

    def _check_streamable(self) -> None:
        if self.bidirectional:
            raise TypeError("a bidirectional Mamba layer reads the whole sequence: it has no step()")


class SelectiveSSM(nn.Module):
    """One scan direction: causal depthwise conv + SiLU, input-dependent Δ/B/C, the S6 scan,
    D skip and the SiLU(z) gate, on (B, L, E) tensors.

    Args:
        d_inner: channels E.
        d_state: state size N per channel.
        d_conv: taps of the causal depthwise convolution; 0: none, the caller has
            convolved and applied SiLU (ViM2's 2-D token mixer).
        dt_rank: rank R of the Δ projection.
        impl: kernel implementation.
        dt_min, dt_max: range of the log-uniform initial step Δ.
        dt_init_floor: smallest initial Δ.
    """

    def __init__(self, d_inner: int, *, d_state: int, d_conv: int, dt_rank: int, impl: str = "auto",
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        self.d_state, self.dt_rank, self.impl = d_state, dt_rank, impl
        self.dt_range = (dt_min, dt_max, dt_init_floor)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner) if d_conv else None
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(d_inner))
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.reset_ssm_parameters()

    def reset_ssm_parameters(self) -> None:
        """The paper's initialisation of dt_proj, dt_bias, A_log and D."""
        dt_min, dt_max, floor = self.dt_range
        E, N = self.A_log.shape
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
            dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
            self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
            self.D.fill_(1.0)
        self.dt_bias._no_reinit = True

    def forward(self, x: Tensor, z: Tensor | None, keep: Tensor | None = None) -> Tensor:
        u, delta, B, C = self.scan_inputs(x, keep)
        return selective_scan(u, delta, self.A, B, C, self.D, z, delta_bias=self.dt_bias, delta_softplus=True,
                              impl=self.impl)

    def scan_inputs(self, x: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The scan's u, Δ (before bias and softplus), B and C for the input ``x`` (B, L, E)."""
        if keep is not None:
            x = x * keep
        u = F.silu(self._causal_conv(x)) if self.conv1d is not None else x
        if keep is not None:
            u = u * keep
        return (u, *self._selection(u))

    @property
    def A(self) -> Tensor:
        A_log = self.A_log  # float32 (float64 in tests) even when the model runs in half precision
        return -torch.exp(A_log if A_log.dtype in (torch.float32, torch.float64) else A_log.float())

    def _causal_conv(self, x: Tensor) -> Tensor:
        """Depthwise causal conv on (B, L, E): u_t = b + Σ_k w_k x_{t-K+1+k} (no transposes)."""
        K = self.conv1d.kernel_size[0]
        L = x.shape[1]
        padded = F.pad(x, (0, 0, K - 1, 0))
        w = self.conv1d.weight[:, 0, :]  # (E, K)
        out = self.conv1d.bias + padded[:, 0:L] * w[:, 0]
        for k in range(1, K):
            out = out + padded[:, k : k + L] * w[:, k]
        return out

    def _selection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return self.dt_proj(dt), B, C

    # -- streaming --------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        dtype = dtype or torch.get_default_dtype()
        E, K = self.conv1d.out_channels, self.conv1d.kernel_size[0]
        conv = torch.zeros(batch_size, E, K - 1, device=device, dtype=dtype)
        ssm = torch.zeros(batch_size, E, self.d_state, device=device, dtype=accumulation_dtype(dtype))
        return conv, ssm

    def step(self, x_t: Tensor, z_t: Tensor, state: State) -> tuple[Tensor, State]:
        conv_state, ssm_state = state
        window = torch.cat([conv_state, x_t[..., None]], dim=-1)  # (B, E, K): x_{t-K+1} .. x_t
        u = F.silu((window * self.conv1d.weight[:, 0, :]).sum(-1) + self.conv1d.bias)
        delta, B, C = self._selection(u)
        y, ssm_state = selective_state_update(ssm_state, u, delta, self.A, B, C, self.D, z_t,
                                              delta_bias=self.dt_bias, delta_softplus=True, impl=self.impl)
        return y, (window[..., 1:].contiguous(), ssm_state)


def scan_together(ssms: Sequence[SelectiveSSM], xs: Sequence[Tensor], zs: Sequence[Tensor | None],
                  keeps: Sequence[Tensor | None] | None = None) -> list[Tensor]:
    """``[ssm(x, z, keep) for ...]`` as one selective scan over the directions' channels side by side.

    Direction g's E channels are channels g·E .. (g+1)·E - 1 of the joint scan and its B and C
    are group g, so each channel runs the recurrence it runs alone. The directions share E,
    N and ``impl``; the gates ``zs`` are all tensors or all None."""
    if len(ssms) == 1:
        return [ssms[0](xs[0], zs[0], None if keeps is None else keeps[0])]
    first = ssms[0]
    if any(s.A_log.shape != first.A_log.shape or s.impl != first.impl for s in ssms):
        raise ValueError("scan_together: the directions must share d_inner, d_state and impl")
    gated = [z is not None for z in zs]
    if any(gated) and not all(gated):
        raise ValueError("scan_together: gate every direction or none")
    keeps = [None] * len(ssms) if keeps is None else keeps
    us, deltas, Bs, Cs = zip(*(ssm.scan_inputs(x, keep) for ssm, x, keep in zip(ssms, xs, keeps)))
    u, delta = torch.cat(us, dim=-1), torch.cat(deltas, dim=-1)  # (B, L, G·E)
    B, C = torch.stack(Bs, dim=2), torch.stack(Cs, dim=2)  # (B, L, G, N): direction g is group g
    A = torch.cat([ssm.A for ssm in ssms])
    D, bias = torch.cat([ssm.D for ssm in ssms]), torch.cat([ssm.dt_bias for ssm in ssms])
    z = torch.cat(list(zs), dim=-1) if all(gated) else None
    y = selective_scan(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, impl=first.impl)
    return list(y.chunk(len(ssms), dim=-1))


def as_residual(x: Tensor) -> Tensor:
    """The residual stream runs in at least float32 (float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def scale_output_projections(module: nn.Module, n_residual_branches: int) -> None:
    """Divide every Mamba out_proj by sqrt(#residual branches) (GPT-2 / mamba_ssm init)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, MambaLayer):
                layer.out_proj.weight.div_(math.sqrt(n_residual_branches))


def no_weight_decay_groups(module: nn.Module) -> list[dict]:
    """A_log and D of every scan direction, without weight decay."""
    params = [p for m in module.modules() if isinstance(m, SelectiveSSM) for p in (m.A_log, m.D)]
    return [{"params": params, "weight_decay": 0.0}] if params else []

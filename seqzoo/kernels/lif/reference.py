"""LIF neurons in plain torch: one step, the loop over time under autograd (the oracle),
the CPU path (loop forward, reverse linear recurrence backward) and the scan (export).
The math is in :mod:`seqzoo.kernels.lif`."""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype
from seqzoo.kernels.linear_recurrence import linear_recurrence
from seqzoo.kernels.scan import scan


def lif_step(
    x_t: Tensor, v: Tensor, *, tau: float = 2.0, v_threshold: float = 1.0, v_reset: float = 0.0, alpha: float = 4.0
) -> tuple[Tensor, Tensor, Tensor]:
    """One step: (spikes S_t, membrane after reset V_t, membrane before firing H_t)."""
    if x_t.dtype != v.dtype:
        x_t = x_t.to(v.dtype)
    h = v + (x_t - (v - v_reset)) / tau
    fired = h >= v_threshold
    if torch.is_grad_enabled() and (h.requires_grad or x_t.requires_grad):
        s = _SurrogateSpike.apply(h - v_threshold, alpha)
    else:
        s = fired.to(h.dtype)
    # hard reset; as a select, its gradient is (1 - S_t) with S_t a constant (detach_reset)
    return s, torch.where(fired, v_reset, h), h


def lif_ref(
    x: Tensor,
    *,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float = 0.0,
    alpha: float = 4.0,
    initial_state: Tensor | None = None,
    return_membrane: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """The neurons as a loop over time. Returns (spikes, V_{T-1}) and, when asked, H (B, T, ...)."""
    v = _initial(x, initial_state, v_reset)
    spikes, membrane = [], []
    for t in range(x.shape[1]):
        s, v, h = lif_step(x[:, t], v, tau=tau, v_threshold=v_threshold, v_reset=v_reset, alpha=alpha)
        spikes.append(s)
        membrane.append(h)
    out = (torch.stack(spikes, dim=1).to(x.dtype), v)
    return (*out, torch.stack(membrane, dim=1)) if return_membrane else out


class _SurrogateSpike(torch.autograd.Function):
    """Θ(u) forward, α σ(αu)(1 - σ(αu)) backward."""

    @staticmethod
    def forward(ctx, u: Tensor, alpha: float):
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (u,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.alpha * u)
        return grad * ctx.alpha * sig * (1 - sig), None


class _LIFTorch(torch.autograd.Function):
    """The CPU path: forward by :func:`lif_step` (the streaming arithmetic), backward as a
    reverse linear recurrence."""

    @staticmethod
    def forward(ctx, x: Tensor, v0: Tensor | None, tau: float, v_th: float, v_reset: float, alpha: float):
        v = _initial(x, v0, v_reset)
        spikes = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        membrane = torch.empty(x.shape, dtype=v.dtype, device=x.device)
        with torch.no_grad():
            for t in range(x.shape[1]):
                s, v, h = lif_step(x[:, t], v, tau=tau, v_threshold=v_th, v_reset=v_reset)
                spikes[:, t], membrane[:, t] = s, h
        ctx.save_for_backward(membrane)
        ctx.constants = (tau, v_th, alpha, x.dtype, v0 is not None)
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes: Tensor, grad_final: Tensor):
        (membrane,) = ctx.saved_tensors
        tau, v_th, alpha, x_dtype, has_v0 = ctx.constants
        fired = (membrane >= v_th).to(membrane.dtype)
        sig = torch.sigmoid(alpha * (membrane - v_th))
        drive = (grad_spikes.to(membrane.dtype) * alpha * sig * (1 - sig)).flip(1)
        keep = ((1 - fired) * (1 - 1 / tau)).flip(1)
        # reversed time: G_r = drive_r + keep_r G_{r-1}, G_{-1} = ∂V_{T-1} / (1 - 1/τ)
        grad_h = linear_recurrence(keep, drive, initial_state=grad_final.to(membrane.dtype) / (1 - 1 / tau),
                                   impl="torch").flip(1)
        grad_v0 = grad_h[:, 0] * (1 - 1 / tau) if has_v0 else None
        return (grad_h / tau).to(x_dtype), grad_v0, None, None, None, None


def _lif_scan(x: Tensor, initial_state: Tensor | None, tau: float, v_threshold: float, v_reset: float):
    """Forward only, under torch's scan operator, so export keeps T symbolic."""
    def combine(v, x_t):
        h = v + (x_t - (v - v_reset)) / tau
        fired = h >= v_threshold
        return torch.where(fired, v_reset, h), fired.to(h.dtype)

    last, spikes = scan(combine, _initial(x, initial_state, v_reset), x.to(accumulation_dtype(x.dtype)).transpose(0, 1))
    return spikes.transpose(0, 1).to(x.dtype), last


def _initial(x: Tensor, initial_state: Tensor | None, v_reset: float) -> Tensor:
    dtype = accumulation_dtype(x.dtype)
    if initial_state is None:
        return torch.full((x.shape[0], *x.shape[2:]), float(v_reset), dtype=dtype, device=x.device)
    return initial_state.to(dtype)

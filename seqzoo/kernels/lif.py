"""Leaky integrate-and-fire neurons run along time, with a surrogate gradient.

SpikingJelly's ``LIFNode`` (decay_input, hard reset), as LMUFormer uses it (τ = 2,
V_th = 1, V_reset = 0, ``detach_reset=True``):

    H_t = V_{t-1} + (X_t - (V_{t-1} - V_reset)) / τ      charge
    S_t = Θ(H_t - V_th)                                    fire
    V_t = H_t (1 - S_t) + V_reset S_t                      hard reset

Backward replaces Θ' by the sigmoid surrogate α σ(αx)(1 - σ(αx)) (α = 4, SpikingJelly's
default) and treats the reset as a constant, so ∂V_t/∂H_t = 1 - S_t, ∂H_t/∂V_{t-1} = 1 - 1/τ
and ∂H_t/∂X_t = 1/τ.

* :func:`lif` -- public op on ``x`` (B, T, *channels): Triton on CUDA, the reference on CPU,
  the scan path (no Python loop over time) inside :func:`seqzoo.kernels.export_mode`.
* :func:`lif_ref` -- a loop over time of :func:`lif_step` under autograd: the oracle.
  The CPU path runs the same loop without autograd and computes the backward directly:
  in reverse time ∂H_t = S'_t ∂S_t + (1 - S_t)(1 - 1/τ) ∂H_{t+1} is a linear recurrence
  (:func:`seqzoo.kernels.linear_recurrence.linear_recurrence`).
* :func:`lif_step` -- one step; streaming layers call it, so a step and a full forward
  compute the membrane with the same arithmetic.

The Triton forward is sequential in time and parallel over channels, stores the spikes
and the membrane H (fp32) for the backward, which runs the adjoint in reverse.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, is_export_mode, resolve_impl, sm_count
from seqzoo.kernels.linear_recurrence import linear_recurrence

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def lif(
    x: Tensor,
    *,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float = 0.0,
    alpha: float = 4.0,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    impl: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Spikes (B, T, *channels) of LIF neurons driven by currents ``x``; optionally the final
    membrane V_{T-1} (B, *channels). ``initial_state`` is V_{-1} (zeros = V_reset if None)."""
    _check_args(x, tau, initial_state)
    path = resolve_impl(impl, x, initial_state, op="lif")
    if path == "triton":
        spikes, final = _LIFTriton.apply(x, initial_state, float(tau), float(v_threshold), float(v_reset), float(alpha))
    elif is_export_mode():
        spikes, final = _lif_scan(x, initial_state, tau, v_threshold, v_reset)
    else:
        spikes, final = _LIFTorch.apply(x, initial_state, float(tau), float(v_threshold), float(v_reset), float(alpha))
    return (spikes, final) if return_final_state else spikes


membrane_dtype = accumulation_dtype
"""The membrane accumulates in fp32 (fp64 for fp64 inputs)."""


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
    from torch._higher_order_ops.scan import scan

    def combine(v, x_t):
        h = v + (x_t - (v - v_reset)) / tau
        fired = h >= v_threshold
        return torch.where(fired, v_reset, h), fired.to(h.dtype)

    last, spikes = scan(combine, _initial(x, initial_state, v_reset), x.to(membrane_dtype(x.dtype)).transpose(0, 1))
    return spikes.transpose(0, 1).to(x.dtype), last


def _initial(x: Tensor, initial_state: Tensor | None, v_reset: float) -> Tensor:
    dtype = membrane_dtype(x.dtype)
    if initial_state is None:
        return torch.full((x.shape[0], *x.shape[2:]), float(v_reset), dtype=dtype, device=x.device)
    return initial_state.to(dtype)


def _check_args(x: Tensor, tau: float, initial_state: Tensor | None) -> None:
    if x.dim() < 3 or x.shape[1] == 0:
        raise ValueError(f"lif: x must be (B, T, *channels) with T >= 1, got shape {tuple(x.shape)}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"lif: x must be a real floating tensor, got {x.dtype}")
    if not float(tau) > 1.0:
        raise ValueError(f"lif: tau must be > 1 (the membrane leaks a fraction 1/tau per step), got {tau}")
    if initial_state is not None and tuple(initial_state.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(
            f"lif: initial_state must be (B, *channels) = {(x.shape[0], *x.shape[2:])}, got {tuple(initial_state.shape)}"
        )


# ---------------------------------------------------------------------------------------
# Triton
# ---------------------------------------------------------------------------------------

def _block_channels(rows: int, D: int, device: torch.device) -> int:
    """Neurons per program: 256, halved (down to 32) until rows × blocks fill the device
    (4 programs per SM). The membrane recurrence is nonlinear, so time cannot be split."""
    target = max(1, 4 * sm_count(device, cpu_default=0))  # 1 under the interpreter: no halving
    block = 256
    while block > 32 and rows * triton.cdiv(D, block) < target:
        block //= 2
    return block


class _LIFTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, v0: Tensor | None, tau: float, v_th: float, v_reset: float, alpha: float):
        B, T = x.shape[:2]
        D = int(x[0, 0].numel())
        acc = membrane_dtype(x.dtype)
        x_c = x.contiguous()
        spikes = torch.empty_like(x_c)
        membrane = torch.empty(x.shape, dtype=acc, device=x.device)
        final = torch.empty((B, *x.shape[2:]), dtype=acc, device=x.device)
        v0_c = v0.to(acc).contiguous() if v0 is not None else final
        block = _block_channels(B, D, x.device)
        _lif_fwd_kernel[(triton.cdiv(D, block), B)](
            x_c, v0_c, spikes, membrane, final, T, D, tau, v_th, v_reset,
            HAS_V0=v0 is not None, ACC=tl.float64 if acc == torch.float64 else tl.float32, BLOCK_D=block,
            num_warps=max(1, block // 64),
        )
        ctx.save_for_backward(membrane)
        ctx.constants = (tau, v_th, alpha, x.dtype, v0 is not None)
        return spikes, final

    @staticmethod
    def backward(ctx, grad_spikes: Tensor, grad_final: Tensor):
        (membrane,) = ctx.saved_tensors
        tau, v_th, alpha, x_dtype, has_v0 = ctx.constants
        B, T = membrane.shape[:2]
        D = int(membrane[0, 0].numel())
        grad_x = torch.empty(membrane.shape, dtype=x_dtype, device=membrane.device)
        grad_v0 = torch.empty_like(grad_final, dtype=membrane.dtype)
        block = _block_channels(B, D, membrane.device)
        _lif_bwd_kernel[(triton.cdiv(D, block), B)](
            membrane, grad_spikes.contiguous(), grad_final.to(membrane.dtype).contiguous(), grad_x, grad_v0,
            T, D, tau, v_th, alpha,
            ACC=tl.float64 if membrane.dtype == torch.float64 else tl.float32, BLOCK_D=block,
            num_warps=max(1, block // 64),
        )
        return grad_x, (grad_v0 if has_v0 else None), None, None, None, None


if triton is not None:

    @triton.jit(do_not_specialize=["T"])
    def _lif_fwd_kernel(
        x_ptr, v0_ptr, s_ptr, h_ptr, final_ptr, T, D, tau, v_th, v_reset,
        HAS_V0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_d = tl.program_id(0)
        row = tl.program_id(1).to(tl.int64)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        live = d < D
        if HAS_V0:
            v = tl.load(v0_ptr + row * D + d, mask=live, other=0.0).to(ACC)
        else:
            v = tl.zeros([BLOCK_D], dtype=ACC) + v_reset
        for t in range(T):
            off = (row * T + t) * D + d
            x = tl.load(x_ptr + off, mask=live, other=0.0).to(ACC)
            h = v + (x - (v - v_reset)) / tau
            fired = h >= v_th
            s = tl.where(fired, 1.0, 0.0).to(ACC)
            v = tl.where(fired, v_reset, h)
            tl.store(s_ptr + off, s.to(s_ptr.dtype.element_ty), mask=live)
            tl.store(h_ptr + off, h.to(h_ptr.dtype.element_ty), mask=live)
        tl.store(final_ptr + row * D + d, v.to(final_ptr.dtype.element_ty), mask=live)

    @triton.jit(do_not_specialize=["T"])
    def _lif_bwd_kernel(
        h_ptr, gs_ptr, gfinal_ptr, gx_ptr, gv0_ptr, T, D, tau, v_th, alpha,
        ACC: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        # carry = dL/dV_t arriving from step t + 1 (or from the final state)
        pid_d = tl.program_id(0)
        row = tl.program_id(1).to(tl.int64)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        live = d < D
        carry = tl.load(gfinal_ptr + row * D + d, mask=live, other=0.0).to(ACC)
        for i in range(T):
            t = T - 1 - i
            off = (row * T + t) * D + d
            h = tl.load(h_ptr + off, mask=live, other=0.0).to(ACC)
            gs = tl.load(gs_ptr + off, mask=live, other=0.0).to(ACC)
            s = tl.where(h >= v_th, 1.0, 0.0).to(ACC)
            sig = 1.0 / (1.0 + tl.exp(-alpha * (h - v_th)))
            grad_h = gs * alpha * sig * (1.0 - sig) + carry * (1.0 - s)
            tl.store(gx_ptr + off, (grad_h / tau).to(gx_ptr.dtype.element_ty), mask=live)
            carry = grad_h * (1.0 - 1.0 / tau)
        tl.store(gv0_ptr + row * D + d, carry.to(gv0_ptr.dtype.element_ty), mask=live)

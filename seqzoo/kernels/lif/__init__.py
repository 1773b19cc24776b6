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

from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, is_export_mode, resolve_impl
from seqzoo.kernels.lif.reference import _LIFTorch, _lif_scan, lif_ref, lif_step

membrane_dtype = accumulation_dtype
"""The membrane's dtype: :func:`seqzoo.kernels.dispatch.accumulation_dtype` (the same function)."""

__all__ = ["lif", "lif_ref", "lif_step"]


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
        from seqzoo.kernels.lif.triton import LIFFunction

        spikes, final = LIFFunction.apply(x, initial_state, float(tau), float(v_threshold), float(v_reset), float(alpha))
    elif is_export_mode():
        spikes, final = _lif_scan(x, initial_state, tau, v_threshold, v_reset)
    else:
        spikes, final = _LIFTorch.apply(x, initial_state, float(tau), float(v_threshold), float(v_reset), float(alpha))
    return (spikes, final) if return_final_state else spikes


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

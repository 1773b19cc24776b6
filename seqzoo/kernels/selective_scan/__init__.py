"""Mamba's selective scan (S6): a diagonal linear recurrence with input-dependent Δ, B, C.

Per channel e and state index n (Gu & Dao 2023, eq. 2 with zero-order-hold on A and
Euler on B):

    Δ_t   = softplus(δ_t + b_Δ)                         (optional softplus and bias)
    h_t   = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t          h: (E, N), h_{-1} = initial state
    y_t   = C_t h_t + D ⊙ u_t                           (optional skip D)
    out_t = y_t ⊙ SiLU(z_t)                             (optional gate z)

Layout (time-major, the backbones' own layout, so no transposes):

* ``u``, ``delta``, ``z``: (B, T, E);  ``A``: (E, N) real (Mamba passes -exp(A_log));
* ``B``, ``C``: (B, T, N), or grouped (B, T, G, N) with channel e reading group e // (E/G);
* ``D``, ``delta_bias``: (E,);  ``initial_state`` and the final state: (B, E, N).

The state accumulates in float32 whatever the input dtype (float64 stays float64); the
output has ``u``'s dtype and the final state is float32 (float64).

Implementations, chosen by :func:`selective_scan` (``impl``, see
:mod:`seqzoo.kernels.dispatch`):

* :mod:`.reference` -- :func:`selective_scan_ref` (one step at a time: the oracle and the
  eager CPU path) and :func:`selective_scan_chunked` (loop-free in T: the path under
  ``torch.export`` and ``torch.compile``);
* :mod:`.triton` -- forward and backward Triton kernels in one autograd function: channels
  across lanes, time inside each thread, a loop over the state index with y accumulated
  in registers; the backward recomputes states from a checkpoint every 128 steps.

:func:`selective_state_update` advances one step for decoding (constant memory; in place
on request). :mod:`.variants` lists every Triton variant the dispatchers can launch, for
the compile gate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, is_export_mode, resolve_impl, triton_interpreted
from seqzoo.kernels.selective_scan.reference import (
    check_scan_args,
    check_step_args,
    selective_scan_chunked,
    selective_scan_ref,
    selective_state_update_ref,
)

__all__ = [
    "accumulation_dtype",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_ref",
]

OP = "selective_scan"


def _scan_impl(impl: str, u: Tensor, *rest: Tensor) -> str:
    """resolve_impl, except that float64 never runs the Triton scan on a real GPU."""
    chosen = resolve_impl(impl, u, *rest, op=OP)
    if chosen == "triton" and u.dtype == torch.float64 and not triton_interpreted():
        if impl == "triton":
            raise RuntimeError(f"{OP}: impl='triton' takes fp32, bf16 or fp16 on a GPU, got float64 "
                               "(use impl='torch' or 'auto' for float64)")
        return "torch"
    return chosen


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    impl: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """The selective scan; returns ``y`` (B, T, E), and the final state (B, E, N) if asked.

    ``impl="auto"`` runs Triton on CUDA tensors and the torch path otherwise (the
    reference in eager mode, the loop-free chunked form under export or compile).
    On a GPU the Triton scan takes fp32, bf16 and fp16 (as mamba_ssm's kernel): float64
    scans run the torch path under ``auto`` and are an error under ``impl="triton"`` (the
    float64 kernels spill registers on sm_80/sm_90; they run under the Triton interpreter,
    where the tests check them against the reference).
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    kw = dict(delta_bias=delta_bias, delta_softplus=delta_softplus, initial_state=initial_state)
    if _scan_impl(impl, u, delta, A, B, C) == "triton":
        from seqzoo.kernels.selective_scan.triton import selective_scan_triton

        y, final = selective_scan_triton(u, delta, A, B, C, D, z, **kw)
    elif is_export_mode() or torch.compiler.is_compiling():
        y, final = selective_scan_chunked(u, delta, A, B, C, D, z, **kw, return_final_state=True)
    else:
        y, final = selective_scan_ref(u, delta, A, B, C, D, z, **kw, return_final_state=True)
    return (y, final) if return_final_state else y


def selective_state_update(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    inplace: bool = False,
    impl: str = "auto",
) -> tuple[Tensor, Tensor]:
    """One step of the scan: ``state`` (B, E, N), ``u``/``delta``/``z`` (B, E), ``B``/``C``
    (B, N) or (B, G, N) -> (y (B, E), new state).

    Memory is constant in the number of steps. With ``inplace=True`` the new state is
    written into ``state`` itself (the Triton kernel and the torch path both; refused when
    autograd needs the old state); otherwise a new tensor is returned and ``state`` is
    left as it was.
    """
    check_step_args(state, u, delta, A, B, C, D, z, delta_bias)
    if inplace and torch.is_grad_enabled() and state.requires_grad:
        raise RuntimeError("selective_state_update: inplace=True on a state that requires grad; "
                           "pass inplace=False when differentiating through decoding")
    kw = dict(delta_bias=delta_bias, delta_softplus=delta_softplus)
    if resolve_impl(impl, state, u, delta, A, B, C, op="selective_state_update") == "triton":
        from seqzoo.kernels.selective_scan.triton import selective_state_update_triton

        return selective_state_update_triton(state, u, delta, A, B, C, D, z, **kw, inplace=inplace)
    y, new_state = selective_state_update_ref(state, u, delta, A, B, C, D, z, **kw)
    if inplace:
        return y, state.copy_(new_state)
    return y, new_state

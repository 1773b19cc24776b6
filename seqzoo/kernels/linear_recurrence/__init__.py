"""Linear recurrences: diagonal (real or complex, Triton) and dense time-invariant (torch).

Diagonal, element-wise over channels (S4D's state, LRU-style layers, any gated linear RNN):

    h_t = a_t ⊙ h_{t-1} + b_t,      t = 0 .. T-1,      h_{-1} = initial_state (zeros if None)

``b`` is ``(B, T, *channels)``; ``a`` is either ``channels``-shaped (a fixed transition,
e.g. S4D's Ā = exp(ΔA)) or ``b``-shaped (time-varying). Real tensors or torch complex
tensors (complex64/128; the Triton kernel reads them as interleaved real/imag planes).
States accumulate in fp32 (fp64 for fp64 inputs); ``h`` comes back in ``b``'s dtype and
the final state h_{T-1} in the accumulation dtype.

Dense and time-invariant (HiPPO/Legendre memories whose transition is not diagonalisable
in floating point -- the LMU's Legendre Ā has eigenvector condition numbers of 1e8 at
order 16 -- and S4's normal-plus-low-rank Ā after discretisation):

    h_t = A h_{t-1} + b_t,          A (*groups, N, N) fixed

* :func:`linear_recurrence` -- public op: Triton on CUDA, the reference on CPU, the
  loop-free scan path inside :func:`seqzoo.kernels.export_mode`.
* :func:`linear_recurrence_ref` -- readable loop over time: the oracle and the CPU path.
* :func:`lti_recurrence` -- the dense form (a loop in eager mode; torch's ``scan``
  operator under export, so the graph keeps a symbolic length): the LMU's memory and
  S4's kernel in exported graphs, S4's chunks with a carried state.

The Triton kernel runs one program per (batch row, block of 256 channels, time chunk),
sequential inside its chunk with the state in registers (loads do not depend on the
state, so the compiler pipelines them). When batch × channel blocks already fill the
device there is one chunk per sequence and one pass. Otherwise time is cut into chunks:
a summary pass gives each chunk's end state from zero and its transition product, a
short sequential pass over chunks gives the state entering each, and the output pass
rescans every chunk from it (inputs read twice, outputs written once). The backward is
the same kernel run backwards in time on the adjoint recurrence
λ_t = g_t + conj(a_{t+1}) λ_{t+1}, giving ∂b_t = λ_t, ∂a_t = λ_t conj(h_{t-1}) (from the
saved outputs) and ∂h_{-1} = conj(a_0) λ_0.
"""

from __future__ import annotations

from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, is_export_mode, resolve_impl
from seqzoo.kernels.linear_recurrence.reference import (
    _linear_recurrence_scan,
    linear_recurrence_ref,
    lti_recurrence,
)

state_dtype = accumulation_dtype
"""The backbones' name for :func:`seqzoo.kernels.dispatch.accumulation_dtype` (the same function)."""

__all__ = ["linear_recurrence", "linear_recurrence_ref", "lti_recurrence"]


def linear_recurrence(
    a: Tensor,
    b: Tensor,
    *,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    impl: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """h_t = a_t ⊙ h_{t-1} + b_t over ``b`` (B, T, *channels); ``a`` is ``channels``- or ``b``-shaped.

    Returns ``h`` (B, T, *channels) and, when ``return_final_state``, h_{T-1} (B, *channels).
    ``initial_state`` (B, *channels) continues an earlier call.
    """
    _check_args(a, b, initial_state)
    path = resolve_impl(impl, a, b, initial_state, op="linear_recurrence")
    if path == "triton":
        from seqzoo.kernels.linear_recurrence.triton import LinearRecurrenceFunction

        h, final = LinearRecurrenceFunction.apply(a, b, initial_state)
    elif is_export_mode():
        h, final = _linear_recurrence_scan(a, b, initial_state)
    else:
        h, final = linear_recurrence_ref(a, b, initial_state=initial_state)
    return (h, final) if return_final_state else h


def _check_args(a: Tensor, b: Tensor, initial_state: Tensor | None) -> None:
    if b.dim() < 3:
        raise ValueError(f"linear_recurrence: b must be (B, T, *channels), got shape {tuple(b.shape)}")
    if b.shape[1] == 0:
        raise ValueError("linear_recurrence: b has no time steps (T = 0)")
    channels = tuple(b.shape[2:])
    if tuple(a.shape) not in (channels, tuple(b.shape)):
        raise ValueError(
            f"linear_recurrence: a must have the channel shape {channels} (fixed transition) or b's shape "
            f"{tuple(b.shape)} (time-varying), got {tuple(a.shape)}"
        )
    if a.is_complex() != b.is_complex():
        raise TypeError(f"linear_recurrence: a and b must both be real or both complex, got {a.dtype} and {b.dtype}")
    if initial_state is not None:
        if tuple(initial_state.shape) != (b.shape[0], *channels):
            raise ValueError(
                f"linear_recurrence: initial_state must be (B, *channels) = {(b.shape[0], *channels)}, "
                f"got {tuple(initial_state.shape)}"
            )
        if initial_state.is_complex() != b.is_complex():
            raise TypeError("linear_recurrence: initial_state must be complex exactly when b is")

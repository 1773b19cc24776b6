"""Linear recurrences in plain torch: the loop over time (oracle and CPU path), the same
recurrence under torch's scan operator (export), and the dense time-invariant form. The
math is in :mod:`seqzoo.kernels.linear_recurrence`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, is_export_mode
from seqzoo.kernels.scan import scan


# ---------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------


def linear_recurrence_ref(a: Tensor, b: Tensor, *, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The recurrence as a loop over time (oracle and CPU path). Returns (h, h_{T-1})."""
    acc = accumulation_dtype(b.dtype)
    h = _initial(b, initial_state, acc)
    a_fixed = a.dim() == b.dim() - 2
    a, b_acc = a.to(acc), b.to(acc)
    outs = []
    for t in range(b.shape[1]):
        h = (a if a_fixed else a[:, t]) * h + b_acc[:, t]
        outs.append(h)
    return torch.stack(outs, dim=1).to(b.dtype), h


def _linear_recurrence_scan(a: Tensor, b: Tensor, initial_state: Tensor | None) -> tuple[Tensor, Tensor]:
    """The recurrence under torch's scan operator: no Python loop over time, so export keeps
    T symbolic. Complex values travel as real/imaginary planes (ONNX has no complex dtype;
    complex inputs still cannot reach onnxruntime, real ones can)."""
    acc = accumulation_dtype(b.dtype)
    a_fixed = a.dim() == b.dim() - 2
    h0 = _initial(b, initial_state, acc)
    if b.is_complex():
        planes = lambda z: torch.view_as_real(z.to(acc)).movedim(-1, 0).contiguous()  # noqa: E731
        carry0 = planes(h0)
        b_seq = planes(b).movedim(2, 0)  # (T, 2, B, ...)
        if a_fixed:
            def combine(h, b_t, a_pl):
                return _cmul_add(a_pl, h, b_t)

            last, hs = scan(combine, carry0, b_seq, (planes(a),))
        else:
            a_seq = planes(a).movedim(2, 0)

            def combine(h, inputs):
                a_t, b_t = inputs
                return _cmul_add(a_t, h, b_t)

            last, hs = scan(combine, carry0, (a_seq, b_seq))
        h = torch.view_as_complex(hs.movedim(1, -1).movedim(0, 1).contiguous())
        return h.to(b.dtype), torch.view_as_complex(last.movedim(0, -1).contiguous())
    b_seq = b.to(acc).transpose(0, 1)
    if a_fixed:
        def combine(h, b_t, a_acc):
            new = a_acc * h + b_t
            return new, new.clone()

        last, hs = scan(combine, h0, b_seq, (a.to(acc),))
    else:

        def combine(h, inputs):
            a_t, b_t = inputs
            new = a_t * h + b_t
            return new, new.clone()

        last, hs = scan(combine, h0, (a.to(acc).transpose(0, 1), b_seq))
    return hs.transpose(0, 1).to(b.dtype), last


def _cmul_add(a: Tensor, h: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One complex step a h + b on (real, imag) planes stacked in dim 0: (new state, its copy
    as the scan's output)."""
    re = a[0] * h[0] - a[1] * h[1] + b[0]
    im = a[0] * h[1] + a[1] * h[0] + b[1]
    new = torch.stack([re, im])
    return new, new.clone()


def lti_recurrence(
    A: Tensor,
    b: Tensor,
    *,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """h_t = A h_{t-1} + b_t with a dense fixed ``A`` (*groups, N, N) over ``b`` (B, T, *groups, N).

    Real tensors only. A loop over time in eager mode; inside :func:`export_mode` torch's
    scan operator, so the exported graph keeps T symbolic. Returns ``h`` like ``b`` and,
    when asked, h_{T-1} (B, *groups, N).
    """
    if A.is_complex() or b.is_complex():
        raise TypeError("lti_recurrence: real tensors only (write complex systems in real coordinates)")
    if A.dim() < 2 or A.shape[-1] != A.shape[-2] or b.dim() < 3 or tuple(b.shape[2:]) != tuple(A.shape[:-1]):
        raise ValueError(
            f"lti_recurrence: A must be (*groups, N, N) and b (B, T, *groups, N); got A {tuple(A.shape)}, "
            f"b {tuple(b.shape)}"
        )
    acc = accumulation_dtype(b.dtype)
    h = _initial(b, initial_state, acc)
    A_acc = A.to(acc)

    def advance(h, b_t, A_acc):
        if A_acc.dim() == 2:  # F.linear: inside scan, ops that broadcast over a symbolic batch do not convert to ONNX
            return F.linear(h, A_acc) + b_t
        return (A_acc @ h.unsqueeze(-1)).squeeze(-1) + b_t

    if is_export_mode():
        def combine(h, b_t, A_acc):
            new = advance(h, b_t, A_acc)
            return new, new.clone()

        h, hs = scan(combine, h, b.to(acc).transpose(0, 1), (A_acc,))
        out = hs.transpose(0, 1)
    else:
        outs = []
        for t in range(b.shape[1]):
            h = advance(h, b[:, t].to(acc), A_acc)
            outs.append(h)
        out = torch.stack(outs, dim=1)
    out = out.to(b.dtype)
    return (out, h) if return_final_state else out


def _initial(b: Tensor, initial_state: Tensor | None, acc: torch.dtype) -> Tensor:
    shape = (b.shape[0], *b.shape[2:])
    if initial_state is None:
        return torch.zeros(shape, dtype=acc, device=b.device)
    return initial_state.to(acc)

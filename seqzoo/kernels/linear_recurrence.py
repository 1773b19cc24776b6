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
  operator under export, so the graph keeps a symbolic length); S4 and the LMU use it
  to export and to run chunks with a carried state.

The Triton forward runs one program per (batch row, block of channels), sequential in
time with the state in registers; loads do not depend on the state, so the compiler
pipelines them. The backward runs the adjoint recurrence in reverse,
λ_t = g_t + conj(a_{t+1}) λ_{t+1}, giving ∂b_t = λ_t, ∂a_t = λ_t conj(h_{t-1}) and
∂h_{-1} = conj(a_0) λ_0, reading the saved outputs for h_{t-1}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqzoo.kernels.dispatch import is_export_mode, resolve_impl

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


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
        h, final = _LinearRecurrenceTriton.apply(a, b, initial_state)
    elif is_export_mode():
        h, final = _linear_recurrence_scan(a, b, initial_state)
    else:
        h, final = linear_recurrence_ref(a, b, initial_state=initial_state)
    return (h, final) if return_final_state else h


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32, fp64 for fp64 inputs, complex64/complex128 for complex."""
    if dtype.is_complex:
        return torch.complex128 if dtype == torch.complex128 else torch.complex64
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------


def linear_recurrence_ref(a: Tensor, b: Tensor, *, initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The recurrence as a loop over time (oracle and CPU path). Returns (h, h_{T-1})."""
    acc = state_dtype(b.dtype)
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
    from torch._higher_order_ops.scan import scan

    acc = state_dtype(b.dtype)
    a_fixed = a.dim() == b.dim() - 2
    h0 = _initial(b, initial_state, acc)
    if b.is_complex():
        planes = lambda z: torch.view_as_real(z.to(acc)).movedim(-1, 0).contiguous()  # noqa: E731
        carry0 = planes(h0)
        b_seq = planes(b).movedim(2, 0)  # (T, 2, B, ...)
        if a_fixed:
            a_pl = planes(a)  # one closure tensor: scan rejects aliased closure inputs

            def combine(h, b_t):
                re = a_pl[0] * h[0] - a_pl[1] * h[1] + b_t[0]
                im = a_pl[0] * h[1] + a_pl[1] * h[0] + b_t[1]
                new = torch.stack([re, im])
                return new, new.clone()

            last, hs = scan(combine, carry0, b_seq)
        else:
            a_seq = planes(a).movedim(2, 0)

            def combine(h, inputs):
                a_t, b_t = inputs
                re = a_t[0] * h[0] - a_t[1] * h[1] + b_t[0]
                im = a_t[0] * h[1] + a_t[1] * h[0] + b_t[1]
                new = torch.stack([re, im])
                return new, new.clone()

            last, hs = scan(combine, carry0, (a_seq, b_seq))
        h = torch.view_as_complex(hs.movedim(1, -1).movedim(0, 1).contiguous())
        return h.to(b.dtype), torch.view_as_complex(last.movedim(0, -1).contiguous())
    b_seq = b.to(acc).transpose(0, 1)
    if a_fixed:
        a_acc = a.to(acc)

        def combine(h, b_t):
            new = a_acc * h + b_t
            return new, new.clone()

        last, hs = scan(combine, h0, b_seq)
    else:

        def combine(h, inputs):
            a_t, b_t = inputs
            new = a_t * h + b_t
            return new, new.clone()

        last, hs = scan(combine, h0, (a.to(acc).transpose(0, 1), b_seq))
    return hs.transpose(0, 1).to(b.dtype), last


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
    acc = state_dtype(b.dtype)
    h = _initial(b, initial_state, acc)
    A_acc = A.to(acc)

    def advance(h, b_t):
        if A_acc.dim() == 2:  # F.linear: inside scan, ops that broadcast over a symbolic batch do not convert to ONNX
            return F.linear(h, A_acc) + b_t
        return (A_acc @ h.unsqueeze(-1)).squeeze(-1) + b_t

    if is_export_mode():
        from torch._higher_order_ops.scan import scan

        def combine(h, b_t):
            new = advance(h, b_t)
            return new, new.clone()

        h, hs = scan(combine, h, b.to(acc).transpose(0, 1))
        out = hs.transpose(0, 1)
    else:
        outs = []
        for t in range(b.shape[1]):
            h = advance(h, b[:, t].to(acc))
            outs.append(h)
        out = torch.stack(outs, dim=1)
    out = out.to(b.dtype)
    return (out, h) if return_final_state else out


def _initial(b: Tensor, initial_state: Tensor | None, acc: torch.dtype) -> Tensor:
    shape = (b.shape[0], *b.shape[2:])
    if initial_state is None:
        return torch.zeros(shape, dtype=acc, device=b.device)
    return initial_state.to(acc)


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


# ---------------------------------------------------------------------------------------
# Triton
# ---------------------------------------------------------------------------------------

BLOCK_CHANNELS = 256
"""Channels per program (one contiguous, coalesced load per time step)."""


class _LinearRecurrenceTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None):
        if triton is None:
            raise RuntimeError("linear_recurrence: impl='triton' needs Triton, which does not import")
        B, T = b.shape[:2]
        channels = b.shape[2:]
        D = int(torch.Size(channels).numel())
        acc = state_dtype(b.dtype)
        a_fixed = a.dim() == b.dim() - 2
        a_c = _planes(a.contiguous())
        b_c = _planes(b.contiguous())
        h0_c = _planes(h0.to(acc).contiguous()) if h0 is not None else None
        h = torch.empty_like(b, memory_format=torch.contiguous_format)
        final = torch.empty((B, *channels), dtype=acc, device=b.device)
        grid = (triton.cdiv(D, BLOCK_CHANNELS), B)
        _recurrence_fwd_kernel[grid](
            a_c, b_c, h0_c if h0_c is not None else b_c, _planes(h), _planes(final), T, D,
            A_FIXED=a_fixed, HAS_H0=h0 is not None, COMPLEX=b.is_complex(), ACC=_tl_acc(b.dtype),
            BLOCK_D=BLOCK_CHANNELS,
        )
        ctx.save_for_backward(a, h, h0)
        ctx.a_fixed = a_fixed
        return h, final

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_final: Tensor):
        a, h, h0 = ctx.saved_tensors
        B, T = h.shape[:2]
        channels = h.shape[2:]
        D = int(torch.Size(channels).numel())
        acc = state_dtype(h.dtype)
        grad_b = torch.empty_like(h, memory_format=torch.contiguous_format)
        if ctx.a_fixed:
            grad_a_rows = torch.empty((B, *channels), dtype=acc, device=h.device)
        else:
            grad_a_rows = torch.empty_like(h, memory_format=torch.contiguous_format)
        grad_h0 = torch.empty((B, *channels), dtype=acc, device=h.device)
        grid = (triton.cdiv(D, BLOCK_CHANNELS), B)
        h_c = _planes(h.contiguous())
        _recurrence_bwd_kernel[grid](
            _planes(a.contiguous()), h_c,
            _planes(h0.to(acc).contiguous()) if h0 is not None else h_c,
            _planes(grad_h.contiguous()), _planes(grad_final.to(acc).contiguous()),
            _planes(grad_b), _planes(grad_a_rows), _planes(grad_h0), T, D,
            A_FIXED=ctx.a_fixed, HAS_H0=h0 is not None, COMPLEX=h.is_complex(), ACC=_tl_acc(h.dtype),
            BLOCK_D=BLOCK_CHANNELS,
        )
        grad_a = grad_a_rows.sum(0).to(a.dtype) if ctx.a_fixed else grad_a_rows.to(a.dtype)
        return grad_a, grad_b, (grad_h0.to(h0.dtype) if h0 is not None else None)


def _planes(x: Tensor) -> Tensor:
    """Complex tensors as interleaved real/imag planes (a view); real tensors unchanged."""
    return torch.view_as_real(x) if x.is_complex() else x


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype in (torch.float64, torch.complex128) else tl.float32


if triton is not None:

    @triton.jit(do_not_specialize=["T"])
    def _recurrence_fwd_kernel(
        a_ptr, b_ptr, h0_ptr, h_ptr, final_ptr, T, D,
        A_FIXED: tl.constexpr, HAS_H0: tl.constexpr, COMPLEX: tl.constexpr, ACC: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        W: tl.constexpr = 2 if COMPLEX else 1
        pid_d = tl.program_id(0)
        row = tl.program_id(1).to(tl.int64)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        live = d < D
        state_off = (row * D + d) * W
        h_re = tl.zeros([BLOCK_D], dtype=ACC)
        h_im = tl.zeros([BLOCK_D], dtype=ACC)
        if HAS_H0:
            h_re = tl.load(h0_ptr + state_off, mask=live, other=0.0).to(ACC)
            if COMPLEX:
                h_im = tl.load(h0_ptr + state_off + 1, mask=live, other=0.0).to(ACC)
        if A_FIXED:
            a_re = tl.load(a_ptr + d * W, mask=live, other=0.0).to(ACC)
            a_im = tl.zeros([BLOCK_D], dtype=ACC)
            if COMPLEX:
                a_im = tl.load(a_ptr + d * W + 1, mask=live, other=0.0).to(ACC)
        for t in range(T):
            off = ((row * T + t) * D + d) * W
            if not A_FIXED:
                a_re = tl.load(a_ptr + off, mask=live, other=0.0).to(ACC)
                if COMPLEX:
                    a_im = tl.load(a_ptr + off + 1, mask=live, other=0.0).to(ACC)
            b_re = tl.load(b_ptr + off, mask=live, other=0.0).to(ACC)
            if COMPLEX:
                b_im = tl.load(b_ptr + off + 1, mask=live, other=0.0).to(ACC)
                new_re = a_re * h_re - a_im * h_im + b_re
                h_im = a_re * h_im + a_im * h_re + b_im
                h_re = new_re
                tl.store(h_ptr + off + 1, h_im.to(h_ptr.dtype.element_ty), mask=live)
            else:
                h_re = a_re * h_re + b_re
            tl.store(h_ptr + off, h_re.to(h_ptr.dtype.element_ty), mask=live)
        tl.store(final_ptr + state_off, h_re.to(final_ptr.dtype.element_ty), mask=live)
        if COMPLEX:
            tl.store(final_ptr + state_off + 1, h_im.to(final_ptr.dtype.element_ty), mask=live)

    @triton.jit(do_not_specialize=["T"])
    def _recurrence_bwd_kernel(
        a_ptr, h_ptr, h0_ptr, gh_ptr, gfinal_ptr, gb_ptr, ga_ptr, gh0_ptr, T, D,
        A_FIXED: tl.constexpr, HAS_H0: tl.constexpr, COMPLEX: tl.constexpr, ACC: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        # Adjoint: lam_t = g_t + conj(a_{t+1}) lam_{t+1}; carry holds conj(a_{t+1}) lam_{t+1}.
        W: tl.constexpr = 2 if COMPLEX else 1
        pid_d = tl.program_id(0)
        row = tl.program_id(1).to(tl.int64)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        live = d < D
        state_off = (row * D + d) * W
        c_re = tl.load(gfinal_ptr + state_off, mask=live, other=0.0).to(ACC)
        c_im = tl.zeros([BLOCK_D], dtype=ACC)
        if COMPLEX:
            c_im = tl.load(gfinal_ptr + state_off + 1, mask=live, other=0.0).to(ACC)
        p0_re = tl.zeros([BLOCK_D], dtype=ACC)
        p0_im = tl.zeros([BLOCK_D], dtype=ACC)
        if HAS_H0:
            p0_re = tl.load(h0_ptr + state_off, mask=live, other=0.0).to(ACC)
            if COMPLEX:
                p0_im = tl.load(h0_ptr + state_off + 1, mask=live, other=0.0).to(ACC)
        if A_FIXED:
            a_re = tl.load(a_ptr + d * W, mask=live, other=0.0).to(ACC)
            a_im = tl.zeros([BLOCK_D], dtype=ACC)
            if COMPLEX:
                a_im = tl.load(a_ptr + d * W + 1, mask=live, other=0.0).to(ACC)
            ga_re = tl.zeros([BLOCK_D], dtype=ACC)
            ga_im = tl.zeros([BLOCK_D], dtype=ACC)
        for i in range(T):
            t = T - 1 - i
            off = ((row * T + t) * D + d) * W
            prev_off = off - D * W
            has_prev = live & (t > 0)
            lam_re = tl.load(gh_ptr + off, mask=live, other=0.0).to(ACC) + c_re
            hp_re = tl.where(t > 0, tl.load(h_ptr + prev_off, mask=has_prev, other=0.0).to(ACC), p0_re)
            if not A_FIXED:
                a_re = tl.load(a_ptr + off, mask=live, other=0.0).to(ACC)
            if COMPLEX:
                lam_im = tl.load(gh_ptr + off + 1, mask=live, other=0.0).to(ACC) + c_im
                hp_im = tl.where(t > 0, tl.load(h_ptr + prev_off + 1, mask=has_prev, other=0.0).to(ACC), p0_im)
                if not A_FIXED:
                    a_im = tl.load(a_ptr + off + 1, mask=live, other=0.0).to(ACC)
                # grad a_t = lam * conj(h_prev); carry = conj(a_t) * lam
                da_re = lam_re * hp_re + lam_im * hp_im
                da_im = lam_im * hp_re - lam_re * hp_im
                c_re = a_re * lam_re + a_im * lam_im
                c_im = a_re * lam_im - a_im * lam_re
                tl.store(gb_ptr + off + 1, lam_im.to(gb_ptr.dtype.element_ty), mask=live)
            else:
                da_re = lam_re * hp_re
                c_re = a_re * lam_re
            tl.store(gb_ptr + off, lam_re.to(gb_ptr.dtype.element_ty), mask=live)
            if A_FIXED:
                ga_re += da_re
                if COMPLEX:
                    ga_im += da_im
            else:
                tl.store(ga_ptr + off, da_re.to(ga_ptr.dtype.element_ty), mask=live)
                if COMPLEX:
                    tl.store(ga_ptr + off + 1, da_im.to(ga_ptr.dtype.element_ty), mask=live)
        if A_FIXED:
            tl.store(ga_ptr + state_off, ga_re.to(ga_ptr.dtype.element_ty), mask=live)
            if COMPLEX:
                tl.store(ga_ptr + state_off + 1, ga_im.to(ga_ptr.dtype.element_ty), mask=live)
        tl.store(gh0_ptr + state_off, c_re.to(gh0_ptr.dtype.element_ty), mask=live)
        if COMPLEX:
            tl.store(gh0_ptr + state_off + 1, c_im.to(gh0_ptr.dtype.element_ty), mask=live)

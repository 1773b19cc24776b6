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

import torch
import torch.nn.functional as F
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, is_export_mode, resolve_impl, sm_count

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


state_dtype = accumulation_dtype
"""Accumulation dtype: fp32, fp64 for fp64 inputs, complex64/complex128 for complex."""


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
                return _cmul_add(a_pl, h, b_t)

            last, hs = scan(combine, carry0, b_seq)
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

MIN_CHUNK = 16
"""Shortest time chunk a program scans when time is split for parallelism."""


class _LinearRecurrenceTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None):
        acc = state_dtype(b.dtype)
        start = h0.to(acc) if h0 is not None else torch.zeros((b.shape[0], *b.shape[2:]), dtype=acc, device=b.device)
        h = torch.empty_like(b, memory_format=torch.contiguous_format)
        ends = _chunked_scan(a.contiguous(), b.contiguous(), start, h, adjoint=False)
        ctx.save_for_backward(a, h, h0)
        return h, ends[:, -1]

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_final: Tensor):
        a, h, h0 = ctx.saved_tensors
        a_fixed = a.dim() == h.dim() - 2
        grad_b = torch.empty_like(h, memory_format=torch.contiguous_format)
        grad_a = None if a_fixed else torch.empty_like(h, memory_format=torch.contiguous_format)
        ends, grad_a_parts = _chunked_scan(
            a.contiguous(), grad_h.contiguous(), grad_final.to(state_dtype(h.dtype)).contiguous(), grad_b,
            adjoint=True, h=h, h0=h0, grad_a=grad_a,
        )
        if a_fixed:
            grad_a = grad_a_parts.sum((0, 1))
        grad_h0 = ends[:, 0].to(h0.dtype) if h0 is not None else None
        return grad_a.to(a.dtype), grad_b, grad_h0


def _chunked_scan(a, b, start, out, *, adjoint, h=None, h0=None, grad_a=None, chunks=None):
    """Run the recurrence (``adjoint=False``: h_t = a_t h_{t-1} + b_t forwards in time, into
    ``out``) or its adjoint (``adjoint=True``: λ_t = b_t + conj(a_{t+1}) λ_{t+1} backwards,
    ``b`` holding the output gradient, λ into ``out``, ∂a from the saved ``h``).

    Time is cut into chunks when batch × channel blocks alone cannot fill the device: a
    summary pass gives each chunk's end state from zero and its transition product, a
    sequential pass over chunks (this function again, with one chunk) gives the state
    entering each chunk, and the output pass rescans every chunk from it. Returns the
    state after each chunk (B, n_chunks, *channels) in processing order's terms: its last
    chunk holds the final state (forwards) and its first the gradient of h_{-1} (adjoint);
    with ``adjoint`` also the per-chunk partial sums of ∂a for a fixed ``a``.
    """
    B, T = b.shape[:2]
    channels = b.shape[2:]
    D = int(torch.Size(channels).numel())
    acc = start.dtype
    a_fixed = a.dim() == b.dim() - 2
    n = chunks or _num_chunks(T, B, D, b.device)
    chunk = triton.cdiv(T, n)
    n = triton.cdiv(T, chunk)
    grid = (triton.cdiv(D, BLOCK_CHANNELS), n, B)
    flags = dict(A_FIXED=a_fixed, COMPLEX=b.is_complex(), ACC=_tl_acc(b.dtype), BLOCK_D=BLOCK_CHANNELS,
                 ADJOINT=adjoint, HAS_H0=h0 is not None)
    if n > 1:
        ends = torch.empty((B, n, *channels), dtype=acc, device=b.device)
        products = torch.empty_like(ends)
        a_, b_ = _planes(a), _planes(b)
        _chunk_scan_kernel[grid](a_, b_, b_, b_, _planes(ends), _planes(products), b_, b_, b_, T, D, chunk,
                                 SUMMARY=True, **flags)
        if adjoint:  # chunks are processed from the last one
            ends, products = ends.flip(1), products.flip(1)
        after = torch.empty_like(ends)  # the state after each chunk, sequentially over chunks
        _chunked_scan(products.contiguous(), ends.contiguous(), start, after, adjoint=False, chunks=1)
        enters = torch.cat([start[:, None], after[:, :-1]], dim=1)
        if adjoint:
            enters = enters.flip(1)
    else:
        enters = start[:, None]
    enters = _planes(enters.contiguous())
    ends = torch.empty((B, n, *channels), dtype=acc, device=b.device)
    grad_a_parts = torch.empty_like(ends) if adjoint and a_fixed else None
    h_c = _planes(h if h is not None else b)  # (a placeholder when unused)
    _chunk_scan_kernel[grid](
        _planes(a), _planes(b), enters, _planes(out), _planes(ends), _planes(ends), h_c,
        _planes(h0.to(acc).contiguous()) if h0 is not None else h_c,
        _planes(grad_a if grad_a is not None else grad_a_parts) if adjoint else h_c,
        T, D, chunk, SUMMARY=False, **flags,
    )
    return (ends, grad_a_parts) if adjoint else ends


def _num_chunks(T: int, rows: int, D: int, device: torch.device) -> int:
    """Time chunks per sequence: enough programs to fill the device (4 per SM), none when
    batch × channel blocks already do. Depends on the parallelism, not on tuning by T."""
    programs = rows * triton.cdiv(D, BLOCK_CHANNELS)
    target = 4 * sm_count(device, cpu_default=4)  # 16 programs under the interpreter
    if programs >= target or T < 2 * MIN_CHUNK:
        return 1
    return min(T // MIN_CHUNK, triton.cdiv(target, programs))


def _planes(x: Tensor) -> Tensor:
    """Complex tensors as interleaved real/imag planes (a view); real tensors unchanged."""
    return torch.view_as_real(x) if x.is_complex() else x


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype in (torch.float64, torch.complex128) else tl.float32


if triton is not None:

    @triton.jit(do_not_specialize=["T", "CHUNK"])
    def _chunk_scan_kernel(
        a_ptr, b_ptr, enter_ptr, out_ptr, end_ptr, prod_ptr, h_ptr, h0_ptr, ga_ptr, T, D, CHUNK,
        SUMMARY: tl.constexpr, ADJOINT: tl.constexpr, A_FIXED: tl.constexpr, HAS_H0: tl.constexpr,
        COMPLEX: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """One (channel block, time chunk, batch row). Forwards: s <- a s + b, out = s. Adjoint,
        backwards in time: λ = b + s, out = λ, ∂a = λ conj(h_{t-1}), s <- conj(a) λ.
        SUMMARY: start from zero, write only the end state and the product of the a's."""
        W: tl.constexpr = 2 if COMPLEX else 1
        pid_d = tl.program_id(0)
        c = tl.program_id(1)
        n_chunks = tl.num_programs(1)
        row = tl.program_id(2).to(tl.int64)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        live = d < D
        lo = c * CHUNK
        steps = tl.minimum(CHUNK, T - lo)
        chunk_off = ((row * n_chunks + c) * D + d) * W
        s_re = tl.zeros([BLOCK_D], dtype=ACC)
        s_im = tl.zeros([BLOCK_D], dtype=ACC)
        p_re = tl.zeros([BLOCK_D], dtype=ACC) + 1.0
        p_im = tl.zeros([BLOCK_D], dtype=ACC)
        ga_re = tl.zeros([BLOCK_D], dtype=ACC)
        ga_im = tl.zeros([BLOCK_D], dtype=ACC)
        a_re = tl.zeros([BLOCK_D], dtype=ACC)
        a_im = tl.zeros([BLOCK_D], dtype=ACC)
        if not SUMMARY:
            s_re = tl.load(enter_ptr + chunk_off, mask=live, other=0.0).to(ACC)
            if COMPLEX:
                s_im = tl.load(enter_ptr + chunk_off + 1, mask=live, other=0.0).to(ACC)
        if A_FIXED:
            a_re = tl.load(a_ptr + d * W, mask=live, other=0.0).to(ACC)
            if COMPLEX:
                a_im = tl.load(a_ptr + d * W + 1, mask=live, other=0.0).to(ACC)
        for i in range(steps):
            if ADJOINT:
                t = lo + steps - 1 - i
            else:
                t = lo + i
            off = ((row * T + t) * D + d) * W
            if not A_FIXED:
                a_re = tl.load(a_ptr + off, mask=live, other=0.0).to(ACC)
                if COMPLEX:
                    a_im = tl.load(a_ptr + off + 1, mask=live, other=0.0).to(ACC)
            b_re = tl.load(b_ptr + off, mask=live, other=0.0).to(ACC)
            b_im = tl.zeros([BLOCK_D], dtype=ACC)
            if COMPLEX:
                b_im = tl.load(b_ptr + off + 1, mask=live, other=0.0).to(ACC)
            if ADJOINT:
                lam_re = b_re + s_re
                lam_im = b_im + s_im
                if not SUMMARY:
                    tl.store(out_ptr + off, lam_re.to(out_ptr.dtype.element_ty), mask=live)
                    if COMPLEX:
                        tl.store(out_ptr + off + 1, lam_im.to(out_ptr.dtype.element_ty), mask=live)
                    prev = off - D * W
                    has_prev = live & (t > 0)
                    if HAS_H0:
                        hp_re = tl.where(t > 0, tl.load(h_ptr + prev, mask=has_prev, other=0.0),
                                         tl.load(h0_ptr + (row * D + d) * W, mask=live, other=0.0)).to(ACC)
                    else:
                        hp_re = tl.load(h_ptr + prev, mask=has_prev, other=0.0).to(ACC)
                    hp_im = tl.zeros([BLOCK_D], dtype=ACC)
                    if COMPLEX:
                        if HAS_H0:
                            hp_im = tl.where(t > 0, tl.load(h_ptr + prev + 1, mask=has_prev, other=0.0),
                                             tl.load(h0_ptr + (row * D + d) * W + 1, mask=live, other=0.0)).to(ACC)
                        else:
                            hp_im = tl.load(h_ptr + prev + 1, mask=has_prev, other=0.0).to(ACC)
                    da_re = lam_re * hp_re + lam_im * hp_im  # λ conj(h_{t-1})
                    da_im = lam_im * hp_re - lam_re * hp_im
                    if A_FIXED:
                        ga_re += da_re
                        ga_im += da_im
                    else:
                        tl.store(ga_ptr + off, da_re.to(ga_ptr.dtype.element_ty), mask=live)
                        if COMPLEX:
                            tl.store(ga_ptr + off + 1, da_im.to(ga_ptr.dtype.element_ty), mask=live)
                s_re = a_re * lam_re + a_im * lam_im  # conj(a) λ
                s_im = a_re * lam_im - a_im * lam_re
                if SUMMARY:
                    new_re = a_re * p_re + a_im * p_im
                    p_im = a_re * p_im - a_im * p_re
                    p_re = new_re
            else:
                new_re = a_re * s_re - a_im * s_im + b_re
                s_im = a_re * s_im + a_im * s_re + b_im
                s_re = new_re
                if SUMMARY:
                    new_re = a_re * p_re - a_im * p_im
                    p_im = a_re * p_im + a_im * p_re
                    p_re = new_re
                else:
                    tl.store(out_ptr + off, s_re.to(out_ptr.dtype.element_ty), mask=live)
                    if COMPLEX:
                        tl.store(out_ptr + off + 1, s_im.to(out_ptr.dtype.element_ty), mask=live)
        tl.store(end_ptr + chunk_off, s_re.to(end_ptr.dtype.element_ty), mask=live)
        if COMPLEX:
            tl.store(end_ptr + chunk_off + 1, s_im.to(end_ptr.dtype.element_ty), mask=live)
        if SUMMARY:
            tl.store(prod_ptr + chunk_off, p_re.to(prod_ptr.dtype.element_ty), mask=live)
            if COMPLEX:
                tl.store(prod_ptr + chunk_off + 1, p_im.to(prod_ptr.dtype.element_ty), mask=live)
        if ADJOINT and A_FIXED and not SUMMARY:
            tl.store(ga_ptr + chunk_off, ga_re.to(ga_ptr.dtype.element_ty), mask=live)
            if COMPLEX:
                tl.store(ga_ptr + chunk_off + 1, ga_im.to(ga_ptr.dtype.element_ty), mask=live)

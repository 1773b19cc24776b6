"""Compile-gate variants of :func:`seqzoo.kernels.linear_recurrence.linear_recurrence` (see
:mod:`seqzoo.kernels.compile_gate`): bench shapes (B = 4, T = 4,096, D = 1,024 channels, so
time is chunked; the chunk pass compiles the one-chunk kernels too), every accepted dtype
(real and complex), a fixed or time-varying ``a``, with and without initial / final state,
forward and backward."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from seqzoo.kernels.compile_gate import FLOAT_DTYPES, Variant
from seqzoo.kernels.linear_recurrence import linear_recurrence

BATCH, LENGTH, CHANNELS = 4, 4096, 1024
DTYPES = {**FLOAT_DTYPES, "complex64": torch.complex64, "complex128": torch.complex128}


def variants() -> Iterator[Variant]:
    for label, dtype in DTYPES.items():
        for fixed in (True, False):
            for initial in (False, True):
                for final in (False, True):
                    flags = "+".join(f for f, on in (("init", initial), ("final", final)) if on) or "plain"
                    kind = "fixed a" if fixed else "time-varying a"
                    yield Variant(f"{label} {kind} {flags} fwd+bwd",
                                  functools.partial(_run, dtype, fixed, initial, final))


def _run(dtype: torch.dtype, fixed: bool, initial: bool, final: bool, device: torch.device) -> None:
    b = torch.empty(BATCH, LENGTH, CHANNELS, device=device, dtype=dtype, requires_grad=True)
    a = torch.empty((CHANNELS,) if fixed else b.shape, device=device, dtype=dtype, requires_grad=True)
    h0 = torch.empty(BATCH, CHANNELS, device=device, dtype=dtype, requires_grad=True) if initial else None
    h, last = linear_recurrence(a, b, initial_state=h0, return_final_state=True, impl="triton")
    outputs = [h] + ([last] if final else [])
    wrt = [a, b] + ([h0] if initial else [])
    torch.autograd.grad(outputs, wrt, [torch.empty_like(x) for x in outputs])

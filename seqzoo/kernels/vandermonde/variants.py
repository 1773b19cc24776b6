"""Compile-gate variants of :func:`seqzoo.kernels.vandermonde.vandermonde_kernel` (see
:mod:`seqzoo.kernels.compile_gate`): S4D's shapes in the backbone benchmark (H = 256
channels, T = 4,096, N = 32 state pairs of d_state 64; N = 64 for d_state 128), one and two
directions, every accepted dtype, forward and backward."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from seqzoo.kernels.compile_gate import FLOAT_DTYPES, Variant
from seqzoo.kernels.vandermonde import vandermonde_kernel

CHANNELS, LENGTH = 256, 4096


def variants() -> Iterator[Variant]:
    for label, dtype in FLOAT_DTYPES.items():
        for n_dir in (1, 2):
            for N in (32, 64):
                yield Variant(f"{label} N={N} dir={n_dir} fwd+bwd", functools.partial(_run, dtype, n_dir, N))


def _run(dtype: torch.dtype, n_dir: int, N: int, device: torch.device) -> None:
    dta = [torch.empty(CHANNELS, N, device=device, dtype=dtype, requires_grad=True) for _ in range(2)]
    cbar = [torch.empty(n_dir, CHANNELS, N, device=device, dtype=dtype, requires_grad=True) for _ in range(2)]
    k = vandermonde_kernel(*dta, *cbar, LENGTH, impl="triton")
    torch.autograd.grad(k, [*dta, *cbar], torch.empty_like(k))

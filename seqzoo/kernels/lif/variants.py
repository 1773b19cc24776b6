"""Compile-gate variants of :func:`seqzoo.kernels.lif.lif` (see :mod:`seqzoo.kernels.compile_gate`):
bench shapes (B = 4, T = 4,096, D = 1,024 neurons: 32 neurons per program) and a large batch
(B = 512: 256 per program), every accepted dtype, with and without initial / final membrane,
forward and backward."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from seqzoo.kernels.compile_gate import FLOAT_DTYPES, Variant
from seqzoo.kernels.lif import lif

SHAPES = {"B=4 T=4096": (4, 4096), "B=512 T=64": (512, 64)}
NEURONS = 1024
DTYPES = FLOAT_DTYPES


def variants() -> Iterator[Variant]:
    for shape_label, (batch, length) in SHAPES.items():
        for label, dtype in DTYPES.items():
            for initial in (False, True):
                for final in (False, True):
                    flags = "+".join(f for f, on in (("init", initial), ("final", final)) if on) or "plain"
                    yield Variant(f"{label} {shape_label} {flags} fwd+bwd",
                                  functools.partial(_run, batch, length, dtype, initial, final))


def _run(batch: int, length: int, dtype: torch.dtype, initial: bool, final: bool, device: torch.device) -> None:
    x = torch.empty(batch, length, NEURONS, device=device, dtype=dtype, requires_grad=True)
    v0 = torch.empty(batch, NEURONS, device=device, dtype=dtype, requires_grad=True) if initial else None
    spikes, last = lif(x, initial_state=v0, return_final_state=True, impl="triton")
    outputs = [spikes] + ([last] if final else [])
    wrt = [x] + ([v0] if initial else [])
    torch.autograd.grad(outputs, wrt, [torch.empty_like(t) for t in outputs])

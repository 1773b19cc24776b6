"""Compile-gate variants of :func:`seqzoo.kernels.retention.retention` (see
:mod:`seqzoo.kernels.compile_gate`): bench shapes (H = 16, 16,384 tokens per call, T = 4,096),
head dims 64 and 128, every accepted dtype, with and without initial / final state, forward
and backward. There is no Triton decoding step (:func:`retention_step` is torch)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from seqzoo.kernels.compile_gate import Variant, head_state_variants
from seqzoo.kernels.retention import retention

BATCH, LENGTH, HEADS = 4, 4096, 16


def variants() -> Iterator[Variant]:
    return head_state_variants(_run)


def _run(dtype: torch.dtype, head_dim: int, initial: bool, final: bool, device: torch.device) -> None:
    q, k, v = (torch.empty(BATCH, LENGTH, HEADS, head_dim, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    gamma = torch.full((HEADS,), 0.97, device=device)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    s0 = (torch.empty(BATCH, HEADS, head_dim, head_dim, device=device, dtype=state_dtype, requires_grad=True)
          if initial else None)
    o, last = retention(q, k, v, gamma, initial_state=s0, return_final_state=True, impl="triton")
    outputs = [o] + ([last] if final else [])
    wrt = [q, k, v] + ([s0] if initial else [])
    torch.autograd.grad(outputs, wrt, [torch.empty_like(x) for x in outputs])

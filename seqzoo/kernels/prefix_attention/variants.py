"""Compile-gate variants of :func:`seqzoo.kernels.prefix_attention.prefix_attention` (see
:mod:`seqzoo.kernels.compile_gate`): bench shapes (H = 16, 16,384 tokens per call, T = 4,096),
head dims 64 and 128, every accepted dtype, with and without initial / final state, forward
and backward. The decoding step (:func:`prefix_attention_step`) is torch."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from seqzoo.kernels.compile_gate import Variant, head_state_variants
from seqzoo.kernels.prefix_attention import prefix_attention

BATCH, LENGTH, HEADS = 4, 4096, 16


def variants() -> Iterator[Variant]:
    return head_state_variants(_run)


def _run(dtype: torch.dtype, head_dim: int, initial: bool, final: bool, device: torch.device) -> None:
    s = torch.empty(BATCH, LENGTH, HEADS, device=device, dtype=dtype, requires_grad=True)
    v = torch.empty(BATCH, LENGTH, HEADS, head_dim, device=device, dtype=dtype, requires_grad=True)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    state = None
    if initial:
        state = tuple(torch.empty(*shape, device=device, dtype=acc, requires_grad=True)
                      for shape in ((BATCH, HEADS), (BATCH, HEADS), (BATCH, HEADS, head_dim)))
    o, last = prefix_attention(s, v, initial_state=state, return_final_state=True, impl="triton")
    outputs = [o] + (list(last) if final else [])
    wrt = [s, v] + (list(state) if initial else [])
    torch.autograd.grad(outputs, wrt, [torch.empty_like(x) for x in outputs])

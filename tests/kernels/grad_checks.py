"""Shared by the kernel tests: seeded inputs, gradient comparison, and the Triton skip rule.

The Triton kernels run on CUDA, or on CPU under the interpreter (``TRITON_INTERPRET=1``
set before seqzoo is imported, as ``make test`` does for ``tests/kernels``).
"""

from __future__ import annotations

import pytest
import torch

from seqzoo.kernels.dispatch import triton_available, triton_interpreted

TRITON_READY = triton_available() and (torch.cuda.is_available() or triton_interpreted())
needs_triton = pytest.mark.skipif(
    not TRITON_READY, reason="Triton kernels need CUDA or TRITON_INTERPRET=1 (make test sets it for tests/kernels)"
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BF16_ON_DEVICE = pytest.mark.skipif(
    DEVICE == "cpu", reason="the Triton interpreter multiplies bf16 tiles wrongly (numpy has no bf16); "
    "bf16 is checked on a GPU (fp16 covers half precision here)"
)
LOW_PRECISION = [
    pytest.param(torch.float32, 1e-4, id="fp32"),
    pytest.param(torch.float16, 1e-2, id="fp16"),
    pytest.param(torch.bfloat16, 3e-2, id="bf16", marks=BF16_ON_DEVICE),
]


def randn(*shape, dtype=torch.float64, seed=0, scale=1.0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def leaves(*tensors):
    """Fresh leaf copies that require grad (None stays None)."""
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def grads_of(outputs, inputs, seed=99):
    """Gradients of a random linear functional of every output w.r.t. every input."""
    flat = [o for o in outputs if o is not None]
    loss = sum((o * randn(*o.shape, dtype=o.dtype, seed=seed + i, device=o.device)).sum() for i, o in enumerate(flat))
    present = [x for x in inputs if x is not None]
    return torch.autograd.grad(loss, present)


def assert_all_close(got, want, atol, rtol, what=""):
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype, f"{what}[{i}]: dtype {g.dtype} != {w.dtype}"
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m, i=i: f"{what}[{i}]: {m}")

"""Diagonal linear recurrence h_t = a_t ⊙ h_{t-1} + b_t: Triton vs the torch loop.

Shapes: D = 1024 channels, B·T = 65 536 tokens per call, T from 512 to 65 536; real fp32
and bf16 with a time-varying a (gated RNN layers), complex64 with a fixed a (S4D's
Ā). Bandwidth counts the minimal bytes: read b (and a when it varies), write h; the
backward reads g, h (and a), writes ∂b (and ∂a). Target: >= 50% of the measured copy
bandwidth. Run through ``bench/kernels.py``.
"""

from __future__ import annotations

import torch

from seqzoo.kernels.linear_recurrence import linear_recurrence

CHANNELS = 1024
TOKENS = 1 << 16
LENGTHS = (512, 2048, 8192, 32768, 65536)
LOOP_MAX_T = 4096  # the torch loop is timed up to this length


def cases(smoke: bool):
    if smoke:
        return [(torch.float32, False, 2, 16, 32), (torch.complex64, True, 1, 8, 16)]
    out = []
    for dtype, fixed in ((torch.float32, False), (torch.bfloat16, False), (torch.complex64, True)):
        for T in LENGTHS:
            out.append((dtype, fixed, max(1, TOKENS // T), T, CHANNELS))
    return out


def run(ctx) -> None:
    device = ctx.device
    for dtype, fixed, B, T, D in cases(ctx.smoke):
        if not ctx.smoke and not ctx.wants(T, dtype):
            continue
        g = torch.Generator(device="cpu").manual_seed(0)
        real = torch.float32 if dtype.is_complex else dtype
        shape_a = (D,) if fixed else (B, T, D)
        if dtype.is_complex:
            a = torch.polar(torch.rand(shape_a, generator=g) * 0.5 + 0.45, torch.rand(shape_a, generator=g) * 6)
            b = torch.complex(torch.randn(B, T, D, generator=g), torch.randn(B, T, D, generator=g))
        else:
            a = (torch.rand(shape_a, generator=g) * 0.5 + 0.45).to(real)
            b = torch.randn(B, T, D, generator=g).to(real)
        a, b = a.to(device).requires_grad_(), b.to(device).requires_grad_()
        elem = b.element_size()
        n = B * T * D
        fwd_bytes = n * elem * (2 if fixed else 3)
        bwd_bytes = n * elem * (4 if fixed else 6)
        label = f"D={D}" + (" fixed a" if fixed else " time-varying a")
        impls = ["triton"] + (["torch"] if T <= LOOP_MAX_T or ctx.smoke else [])
        for impl in impls:
            fwd = lambda: linear_recurrence(a, b, impl=impl)  # noqa: E731
            h = fwd()
            grad = torch.ones_like(h)

            def fwd_bwd():  # grad(), not backward(): no accumulation into .grad inside the timing
                out = linear_recurrence(a, b, impl=impl)
                torch.autograd.grad(out, (a, b), grad)

            rep = 3 if impl == "torch" else 20
            with torch.no_grad():
                ms = ctx.time_ms(fwd, warmup=1 if impl == "torch" else 5, rep=rep)
            ctx.add("linear_recurrence", impl, "fwd", dtype, B, T, label, ms, bytes_moved=fwd_bytes)
            ms = ctx.time_ms(fwd_bwd, warmup=1 if impl == "torch" else 5, rep=rep)
            ctx.add("linear_recurrence", impl, "fwd+bwd", dtype, B, T, label, ms, bytes_moved=fwd_bytes + bwd_bytes)

"""Leaky integrate-and-fire neurons over time: Triton vs the torch loops.

Shapes: B = 8, D = 1024 neurons, T = 512, 4096, 16384, fp32 and bf16. Compared with the
CPU path run on the GPU (a loop of :func:`lif_step` plus a reverse linear recurrence) and
the autograd loop :func:`lif_ref`. Target: >= 20x the torch loop at T = 4096 (forward +
backward). Bytes: read x, write spikes and the fp32 membrane; backward reads the
membrane and the spike gradient, writes the input gradient. Run through ``bench/kernels.py``.
"""

from __future__ import annotations

import torch

from seqzoo.kernels.lif import lif, lif_ref

BATCH, NEURONS = 8, 1024
LENGTHS = (512, 4096, 16384)
LOOP_MAX_T = 4096


def run(ctx) -> None:
    device = ctx.device
    shapes = [(2, 16, 8, torch.float32)] if ctx.smoke else [
        (BATCH, T, NEURONS, dtype) for dtype in (torch.float32, torch.bfloat16) for T in LENGTHS
        if ctx.wants(T, dtype)
    ]
    for B, T, D, dtype in shapes:
        g = torch.Generator(device="cpu").manual_seed(0)
        x = (torch.randn(B, T, D, generator=g) * 1.5 + 0.8).to(device=device, dtype=dtype).requires_grad_()
        n = B * T * D
        fwd_bytes = n * (2 * x.element_size() + 4)
        bwd_bytes = n * (4 + 2 * x.element_size())
        runs = {"triton": lambda: lif(x, impl="triton")}
        if T <= LOOP_MAX_T or ctx.smoke:
            runs["torch loop"] = lambda: lif(x, impl="torch")
            runs["autograd loop (ref)"] = lambda: lif_ref(x)[0]
        for name, fn in runs.items():
            grad = torch.ones(x.shape, device=device, dtype=dtype)

            def fwd_bwd(fn=fn):  # grad(), not backward(): no accumulation into x.grad inside the timing
                torch.autograd.grad(fn(), x, grad)

            quick = name != "triton"
            with torch.no_grad():
                ms = ctx.time_ms(fn, warmup=1 if quick else 5, rep=3 if quick else 20)
            ctx.add("lif", name, "fwd", dtype, B, T, f"D={D}", ms, bytes_moved=fwd_bytes)
            ms = ctx.time_ms(fwd_bwd, warmup=1 if quick else 5, rep=3 if quick else 20)
            ctx.add("lif", name, "fwd+bwd", dtype, B, T, f"D={D}", ms, bytes_moved=fwd_bytes + bwd_bytes)

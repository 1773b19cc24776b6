"""S4D's convolution kernel (the Vandermonde product): Triton vs the chunked torch path.

Shapes: H = 256 channels (the backbone bench's d_model), N = 32 state pairs (d_state 64),
one direction, L = 1,024 / 4,096 / 16,384, fp32 (the parameters' dtype). Compared with the
chunked torch path (what the CPU runs; it ran on GPUs too before this kernel) and the plain
formula under autograd up to L = 4,096. Bytes: the (H, L) output (and the same gradient read
back in the backward); the work is H N L complex multiply-adds. Run through ``bench/kernels.py``.
"""

from __future__ import annotations

import torch

from seqzoo.kernels.vandermonde import vandermonde_kernel, vandermonde_kernel_chunked, vandermonde_kernel_ref

CHANNELS, STATES = 256, 32
LENGTHS = (1024, 4096, 16384)
FORMULA_MAX_L = 4096


def run(ctx) -> None:
    device = ctx.device
    shapes = [(4, 3, 40)] if ctx.smoke else [(CHANNELS, STATES, L) for L in LENGTHS
                                             if ctx.wants(L, torch.float32)]
    for H, N, L in shapes:
        g = torch.Generator(device="cpu").manual_seed(0)
        n = torch.arange(N, dtype=torch.float32)
        dta_re = torch.full((H, N), -0.005).to(device).requires_grad_()  # S4D-Lin, Δ = 0.01
        dta_im = (torch.pi * n * 0.01).expand(H, N).contiguous().to(device).requires_grad_()
        cbar = [torch.randn(1, H, N, generator=g).to(device).requires_grad_() for _ in range(2)]
        inputs = [dta_re, dta_im, *cbar]
        out_bytes = H * L * 4
        runs = {"triton": lambda: vandermonde_kernel(*inputs, L, impl="triton"),
                "chunked torch": lambda: vandermonde_kernel_chunked(*inputs, L)}
        if L <= FORMULA_MAX_L or ctx.smoke:
            runs["formula (autograd)"] = lambda: vandermonde_kernel_ref(*inputs, L)
        for name, fn in runs.items():
            grad = torch.ones(1, H, L, device=device)

            def fwd_bwd(fn=fn):
                torch.autograd.grad(fn(), inputs, grad)

            with torch.no_grad():
                ms = ctx.time_ms(fn, warmup=3, rep=10)
            ctx.add("vandermonde", name, "fwd", torch.float32, 1, L, f"H={H} N={N}", ms, bytes_moved=out_bytes)
            ms = ctx.time_ms(fwd_bwd, warmup=3, rep=10)
            ctx.add("vandermonde", name, "fwd+bwd", torch.float32, 1, L, f"H={H} N={N}", ms,
                    bytes_moved=2 * out_bytes)

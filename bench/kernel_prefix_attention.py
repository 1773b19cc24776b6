"""Aaren's prefix-attention scan: Triton vs the torch reference and PyTorch SDPA causal.

bf16, H = 16 heads, head dim 64, B * T = 16,384 tokens per call, T from 512 to 65,536,
forward and forward + backward (of ``o.sum()``). The scan reads one score per token and
head plus the values, so it is memory-bound: the figure of merit is GB/s against the
device copy bandwidth (target: >= 50% in forward). ``sdpa-causal`` is full softmax
attention with token queries on q, k, v of the same size, the cost Aaren avoids.

Bytes (minimal model): s and v read and o written once (forward); plus dO read and
ds, dv written (forward + backward).
"""

from __future__ import annotations

import torch
from common import MODES, Context, sdpa_causal, time_mode, token_budget_shapes

from seqzoo.kernels.dispatch import triton_interpreted
from seqzoo.kernels.prefix_attention import prefix_attention, prefix_attention_ref

OP = "prefix_attention"
CHUNK = 64


def run(ctx: Context) -> None:
    H, D, dtype = (2, 16, torch.float32) if ctx.smoke else (16, 64, torch.bfloat16)
    can_triton = ctx.device.type == "cuda" or triton_interpreted()
    for B, T in token_budget_shapes(ctx):
        g = torch.Generator(device=ctx.device).manual_seed(0)
        s = torch.randn(B, T, H, device=ctx.device, dtype=dtype, generator=g)
        v = torch.randn(B, T, H, D, device=ctx.device, dtype=dtype, generator=g)
        q = torch.randn(B, T, H, D, device=ctx.device, dtype=dtype, generator=g)
        scan_impls = {
            "triton": lambda s, v: prefix_attention(s, v, chunk_size=CHUNK, impl="triton"),
            "torch-reference": lambda s, v: prefix_attention_ref(s, v, chunk_size=CHUNK, return_final_state=False)[0],
        }
        if not can_triton:
            del scan_impls["triton"]
        for mode in MODES:
            runs = [(name, fn, [s, v]) for name, fn in scan_impls.items()] + [("sdpa-causal", sdpa_causal, [q, q, v])]
            for name, fn, inputs in runs:
                ms = time_mode(ctx, fn, inputs, mode, label=f"{OP} {name} B={B} T={T}")
                if ms is None:
                    continue
                per_token = (1 + 2 * D) if mode == "fwd" else (2 + 4 * D)  # s, v -> o (+ dO -> ds, dv)
                scan_bytes = B * T * H * per_token * v.element_size()
                ctx.add(OP, name, mode, dtype, B, T, f"H={H} D={D}", ms,
                        bytes_moved=scan_bytes if name != "sdpa-causal" else None,
                        note="token queries (not the same op)" if name == "sdpa-causal" else "")


if __name__ == "__main__":  # python bench/kernel_prefix_attention.py [--smoke]
    import sys

    sys.argv = [sys.argv[0], "--ops", OP, *sys.argv[1:]]
    from kernels import main

    raise SystemExit(main())

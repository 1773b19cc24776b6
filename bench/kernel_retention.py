"""Chunkwise retention (ViR): Triton vs the torch reference, PyTorch SDPA and fla.

bf16, H = 16 heads, head dim 64, B * T = 16,384 tokens per call (PEERS.md), T from 512
to 65,536, forward and forward + backward (of ``o.sum()``). Peers:

* ``sdpa-causal``: ``F.scaled_dot_product_attention(is_causal=True)`` on the same q, k, v
  (FlashAttention on an H100) -- softmax attention, the cost retention replaces;
* ``fla-chunk_simple_gla``: flash-linear-attention's chunk kernel with the same fixed
  per-head decay (``g_gamma = log γ``), skipped with a note when ``fla`` does not import.

On a CPU (no ``--smoke``) the run is fp32 at B·T = 4,096 tokens, T = 512 … 4,096, with
``naive-masked-matmul`` -- O = s · (Q K^T ⊙ M) V with the (T, T) decay mask
(:func:`retention_parallel_ref`), up to T = 2,048 (its (B, H, T, T) scores outgrow memory
beyond) -- beside the chunkwise torch path and SDPA; the note gives the chunkwise path's
speed-up over the naive form.

Bytes (minimal model): q, k, v read and o written once (forward); plus dO read and
dq, dk, dv written (forward + backward). TFLOP/s counts the chunked algorithm's matmuls
(C = 64): per token 4 Dk Dv + 2 C (Dk + Dv) forward, 14 Dk Dv + 8 C Dk + 6 C Dv for both.
"""

from __future__ import annotations

import inspect

import torch
from common import MODES, Context, sdpa_causal, time_mode, token_budget_shapes

from seqzoo.kernels.dispatch import triton_interpreted
from seqzoo.backbones.vir import decay_schedule
from seqzoo.kernels.retention import retention, retention_parallel_ref, retention_ref

OP = "retention"
CHUNK = 64
CPU_TOKENS, CPU_LENGTHS, NAIVE_MAX_T = 4096, (512, 1024, 2048, 4096), 2048


def run(ctx: Context) -> None:
    if ctx.device.type == "cpu" and not ctx.smoke:
        return run_cpu(ctx)
    H, D, dtype = (2, 16, torch.float32) if ctx.smoke else (16, 64, torch.bfloat16)
    gamma = decay_schedule(H).to(ctx.device)
    fla, fla_note = _fla_kernel()
    can_triton = ctx.device.type == "cuda" or triton_interpreted()
    if fla is None:
        print(f"{OP}: {fla_note}")
    for B, T in token_budget_shapes(ctx):
        g = torch.Generator(device=ctx.device).manual_seed(0)
        q, k, v = (torch.randn(B, T, H, D, device=ctx.device, dtype=dtype, generator=g) for _ in range(3))
        impls = {
            "triton": lambda q, k, v: retention(q, k, v, gamma, chunk_size=CHUNK, impl="triton"),
            "torch-reference": lambda q, k, v: retention_ref(q, k, v, gamma, chunk_size=CHUNK,
                                                             return_final_state=False)[0],
            "sdpa-causal": sdpa_causal,
        }
        if fla is not None:
            impls["fla-chunk_simple_gla"] = fla(gamma)
        if not can_triton:
            del impls["triton"]
        for mode in MODES:
            for name, fn in impls.items():
                ms = time_mode(ctx, fn, [q, k, v], mode, label=f"{OP} {name} B={B} T={T}")
                if ms is None:
                    continue
                tokens, elt = B * T * H, q.element_size()
                moved = (4 if mode == "fwd" else 8) * tokens * D * elt
                chunked = name in ("triton", "fla-chunk_simple_gla")
                ctx.add(OP, name, mode, dtype, B, T, f"H={H} D={D}", ms, bytes_moved=moved,
                        flops=tokens * _flops_per_token(D, D, mode) if chunked else None,
                        note=fla_note if name == "fla-chunk_simple_gla" else "")


def run_cpu(ctx: Context) -> None:
    """fp32 on the CPU: the chunkwise torch path against the naive masked-matmul form and SDPA."""
    H, D, dtype = 16, 64, torch.float32
    gamma = decay_schedule(H)
    for T in CPU_LENGTHS:
        B = max(1, CPU_TOKENS // T)
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, T, H, D, dtype=dtype, generator=g) for _ in range(3))
        impls = {
            "torch-reference": lambda q, k, v: retention_ref(q, k, v, gamma, chunk_size=CHUNK,
                                                             return_final_state=False)[0],
            "naive-masked-matmul": lambda q, k, v: retention_parallel_ref(q, k, v, gamma)[0],
            "sdpa-causal": sdpa_causal,
        }
        if T > NAIVE_MAX_T:
            del impls["naive-masked-matmul"]
        for mode in MODES:
            times = {}
            for name, fn in impls.items():
                times[name] = ms = time_mode(ctx, fn, [q, k, v], mode, label=f"{OP} {name} B={B} T={T}")
                note = ""
                if name == "naive-masked-matmul" and times.get("torch-reference"):
                    note = f"chunkwise is {ms / times['torch-reference']:.1f}x faster"
                ctx.add(OP, name, mode, dtype, B, T, f"H={H} D={D}", ms,
                        flops=B * T * H * _flops_per_token(D, D, mode) if name == "torch-reference" else None,
                        note=note)


def _flops_per_token(dk: int, dv: int, mode: str) -> float:
    forward = 4 * dk * dv + 2 * CHUNK * (dk + dv)
    return forward if mode == "fwd" else 14 * dk * dv + 8 * CHUNK * dk + 6 * CHUNK * dv


def _fla_kernel():
    """fla's chunk_simple_gla with a fixed per-head decay, or (None, why not)."""
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as err:  # not installed, or no GPU build
        return None, f"flash-linear-attention not available ({type(err).__name__}: {err}); peer skipped"
    params = inspect.signature(chunk_simple_gla).parameters

    def make(gamma):
        log_gamma = torch.log(gamma.float())

        def call(q, k, v):
            if "g_gamma" in params:
                out = chunk_simple_gla(q, k, v, g_gamma=log_gamma, scale=q.shape[-1] ** -0.5)
            else:  # older fla: a per-token gate, here constant in time
                g = log_gamma.expand(q.shape[0], q.shape[1], -1).contiguous()
                out = chunk_simple_gla(q, k, v, g=g, scale=q.shape[-1] ** -0.5)
            return out[0] if isinstance(out, tuple) else out

        return call

    version = getattr(__import__("fla"), "__version__", "?")
    return make, f"fla {version}, " + ("g_gamma" if "g_gamma" in params else "constant g") + " = log γ; γ per head"


if __name__ == "__main__":  # python bench/kernel_retention.py [--smoke]
    import sys

    sys.argv = [sys.argv[0], "--ops", OP, *sys.argv[1:]]
    from kernels import main

    raise SystemExit(main())

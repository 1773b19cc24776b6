"""Shared benchmark machinery: timing, bandwidth model, device facts, CSV + markdown output.

Benchmarks are scripts (not installed). On a GPU, times come from
``triton.testing.do_bench`` (median); ``--smoke`` runs tiny shapes on CPU so the
scripts are exercised by the test suite and never rot.
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class Result:
    """One measured configuration."""

    op: str
    impl: str
    mode: str  # "fwd" or "fwd+bwd"
    dtype: str
    B: int
    T: int
    shape: str
    ms: float
    tokens_per_s: float
    gbps: float = float("nan")
    pct_hbm: float = float("nan")
    tflops: float = float("nan")
    note: str = ""


@dataclass
class Context:
    device: torch.device
    smoke: bool
    hbm_gbps: float
    device_name: str
    command: str
    results: list[Result] = field(default_factory=list)
    lengths: frozenset[int] | None = None  # --lengths: only these T (None: each bench's own list)
    dtypes: frozenset[str] | None = None  # --dtypes: only these dtypes, by name ("bfloat16")

    def wants(self, T: int | None = None, dtype: torch.dtype | None = None) -> bool:
        """Whether a case of length ``T`` and ``dtype`` is among those asked for."""
        if T is not None and self.lengths is not None and T not in self.lengths:
            return False
        return dtype is None or self.dtypes is None or str(dtype).removeprefix("torch.") in self.dtypes

    def time_ms(self, fn: Callable[[], object], warmup: int = 5, rep: int = 20) -> float:
        """Median ms of ``fn()``; under ``--smoke`` one timed call without warm-up (the smoke
        run checks that every case runs, not how fast)."""
        if self.smoke:
            return time_ms(fn, self.device, warmup=0, rep=0, calls=1)
        return time_ms(fn, self.device, warmup=warmup, rep=rep)

    def add(self, op, impl, mode, dtype, B, T, shape, ms, *, bytes_moved=None, flops=None, note="") -> Result:
        tokens = B * T / (ms / 1e3) if ms > 0 else float("nan")
        gbps = bytes_moved / (ms / 1e3) / 1e9 if bytes_moved and ms > 0 else float("nan")
        pct = 100 * gbps / self.hbm_gbps if self.hbm_gbps and not math.isnan(gbps) else float("nan")
        tflops = flops / (ms / 1e3) / 1e12 if flops and ms > 0 else float("nan")
        r = Result(op, impl, mode, str(dtype).replace("torch.", ""), B, T, shape, ms, tokens, gbps, pct, tflops, note)
        self.results.append(r)
        print(f"{op:22s} {impl:18s} {mode:8s} {r.dtype:9s} B={B:<3d} T={T:<6d} {ms:9.3f} ms"
              + (f"  {gbps:7.1f} GB/s ({pct:4.1f}% HBM)" if not math.isnan(gbps) else "")
              + (f"  {tflops:6.1f} TFLOP/s" if not math.isnan(tflops) else ""), flush=True)
        return r


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int = 5, rep: int = 20,
            calls: int | None = None) -> float:
    """Median milliseconds of ``fn()``; ``calls``: exactly that many timed calls, no warmup
    (on a CPU; a GPU always times with ``do_bench``)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    for _ in range(0 if calls else max(1, warmup // 5)):
        fn()
    times = []
    for _ in range(calls or max(3, rep // 5)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def device_copy_gbps(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth (bytes read + written per second / 1e9)."""
    if device.type != "cuda":
        return float("nan")
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=10, rep=50)
    return 2 * nbytes / (ms / 1e3) / 1e9


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (checks the script runs)")
    p.add_argument("--out", default="docs/bench", help="folder for the CSV and markdown results")
    p.add_argument("--ops", default="all", help="comma-separated op names to run")
    p.add_argument("--lengths", default=None, help="comma-separated T: only these of each bench's lengths")
    p.add_argument("--dtypes", default=None, help="comma-separated dtypes (float32, bfloat16, complex64): only these")
    return p


def make_context(args: argparse.Namespace) -> Context:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'})"
    hbm = device_copy_gbps(device)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    if device.type == "cuda":
        print(f"{name}: device copy {hbm:.0f} GB/s, torch {torch.__version__}", flush=True)
    lengths = frozenset(int(t) for t in args.lengths.split(",")) if getattr(args, "lengths", None) else None
    dtypes = frozenset(d.strip() for d in args.dtypes.split(",")) if getattr(args, "dtypes", None) else None
    return Context(device=device, smoke=args.smoke, hbm_gbps=hbm, device_name=name, command=command,
                   lengths=lengths, dtypes=dtypes)


def write(ctx: Context, out: str | Path, name: str) -> tuple[Path, Path]:
    """``<out>/<name>.csv`` and ``<out>/<name>.md`` (a table per op)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    rows = [asdict(r) for r in ctx.results]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(Result.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Device: {ctx.device_name}" + (f" (measured copy bandwidth {ctx.hbm_gbps:.0f} GB/s)"
                                              if not math.isnan(ctx.hbm_gbps) else ""),
             f"torch {torch.__version__}. Command: `{ctx.command}`", ""]
    for op in dict.fromkeys(r.op for r in ctx.results):
        lines += [f"### {op}", "", "| impl | mode | dtype | B | T | ms | tokens/s | GB/s | % HBM | TFLOP/s | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in ctx.results if r.op == op):
            lines.append(f"| {r.impl} | {r.mode} | {r.dtype} | {r.B} | {r.T} | {r.ms:.3f} | {r.tokens_per_s:.3g} | "
                         f"{_n(r.gbps)} | {_n(r.pct_hbm)} | {_n(r.tflops)} | {r.note} |")
        lines.append("")
    md_path.write_text("\n".join(lines))
    return csv_path, md_path


def _n(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.1f}"


# ---------------------------------------------------------------------------------------
# Shapes and modes shared by the attention-like kernel benchmarks
# ---------------------------------------------------------------------------------------

MODES = ("fwd", "fwd+bwd")
LENGTHS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def token_budget_shapes(ctx: Context, tokens: int = 16384) -> list[tuple[int, int]]:
    """(B, T) pairs with B * T = ``tokens`` (PEERS.md's setting), T from 512 to 65,536;
    tiny shapes under ``--smoke``."""
    if ctx.smoke:
        return [(1, 64)]
    return [(max(1, tokens // T), T) for T in LENGTHS if ctx.wants(T)]


def time_mode(ctx: Context, fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], mode: str,
              label: str = "") -> float | None:
    """Median ms of ``fn(*inputs)`` (no autograd) or of forward + backward of ``out.sum()``;
    None (and a printed note) when it does not fit in GPU memory."""
    try:
        return _time_mode(ctx, fn, inputs, mode)
    except Exception as err:  # a reference or peer may not fit at 64k tokens
        if not (isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()):
            raise
        print(f"{label} {mode}: out of memory, skipped")
        torch.cuda.empty_cache()
        return None


def _time_mode(ctx: Context, fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], mode: str) -> float:
    if mode == "fwd":
        def run() -> object:
            with torch.no_grad():
                return fn(*inputs)
    else:
        leaves = [x.detach().requires_grad_() if x.is_floating_point() else x for x in inputs]
        wrt = [x for x in leaves if x.requires_grad]

        def run() -> object:
            return torch.autograd.grad(fn(*leaves).sum(), wrt)
    return ctx.time_ms(run)


def sdpa_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch SDPA with a causal mask on ``[B, T, H, D]`` tensors (FlashAttention on a GPU)."""
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           is_causal=True)
    return out.transpose(1, 2)

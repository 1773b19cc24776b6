"""The kernel benchmark script runs end to end (tiny shapes on CPU, Triton interpreted)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_kernel_benchmarks_smoke(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "kernels.py"), "--smoke", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ops = sorted(p.stem.removeprefix("kernel_") for p in (ROOT / "bench").glob("kernel_*.py"))
    rows = list(csv.DictReader(open(tmp_path / "kernels.csv")))
    assert sorted({r["op"] for r in rows}) == ops, "every op module reports at least one row"
    assert all(float(r["ms"]) > 0 for r in rows)
    assert (tmp_path / "kernels.md").exists()


def test_lengths_and_dtypes_narrow_a_benchmark():
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from common import make_context, parser, token_budget_shapes

    ctx = make_context(parser("t").parse_args(["--smoke", "--lengths", "1024,65536", "--dtypes", "bfloat16"]))
    assert ctx.wants(1024, torch.bfloat16) and ctx.wants(65536)
    assert not ctx.wants(512) and not ctx.wants(1024, torch.float32)
    ctx.smoke = False
    assert token_budget_shapes(ctx) == [(16, 1024), (1, 65536)]
    everything = make_context(parser("t").parse_args(["--smoke"]))
    assert everything.wants(512, torch.complex64)

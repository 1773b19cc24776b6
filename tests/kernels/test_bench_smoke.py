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

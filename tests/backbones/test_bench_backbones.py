"""The backbone throughput benchmark runs end to end (tiny shapes on CPU)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_backbone_benchmark_smoke(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "backbones.py"), "--smoke", "--out", str(tmp_path),
                           "--backbones", "transformer,s4d,lmuformer,tcnca,identity"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "identity: no parameters, nothing to train; skipped" in proc.stdout
    rows = list(csv.DictReader(open(tmp_path / "backbones.csv")))
    assert sorted({r["op"] for r in rows}) == ["lmuformer", "s4d", "tcnca", "transformer"]
    assert all(float(r["ms"]) > 0 and float(r["tokens_per_s"]) > 0 and "samples/s" in r["note"] for r in rows)
    assert (tmp_path / "backbones.md").read_text().count("### ") == 4

"""docs/guide.md runs as written: every ```bash and ```python block, in order, in one empty
folder, with the project's ``seqzoo`` on PATH (a block after ``<!-- not run -->`` is skipped)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
BLOCK = re.compile(r"(<!-- not run -->\s*)?```(bash|python)\n(.*?)```", re.S)


def guide_blocks() -> list[tuple[str, str]]:
    return [(lang, code) for skip, lang, code in BLOCK.findall(GUIDE.read_text()) if not skip]


def test_guide_has_the_end_to_end_steps():
    code = "\n".join(c for _, c in guide_blocks())
    for step in ("seqzoo fit", "seqzoo compare", "seqzoo predict", "seqzoo.load", "seqzoo.predict",
                 "seqzoo export", "--streaming", "onnxruntime"):
        assert step in code, step


@pytest.mark.slow
def test_guide_commands_run_as_written(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    for i, (lang, code) in enumerate(guide_blocks()):
        if lang == "bash":
            cmd = ["bash", "-euo", "pipefail", "-c", code]
        else:
            script = tmp_path / f"block{i}.py"
            script.write_text(code)
            cmd = [sys.executable, str(script)]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"guide block {i} ({lang}) failed:\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    run = tmp_path / "runs" / "my_load"
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "status.json").exists()
    assert "completed" in (run / "status.json").read_text()
    table = (tmp_path / "runs" / "my_load_compare" / "results.md").read_text()
    for row in ("gru", "s4d", "transformer", "DLinear"):
        assert row in table, row
    predictions = pd.read_csv(run / "predictions.csv")
    assert {"origin", "step", "date", "load"} <= set(predictions.columns)
    assert len(predictions) == 12  # --data.predict_windows last: one origin, the horizon
    assert predictions["date"].iloc[0] > pd.read_csv(tmp_path / "my_load_new.csv")["date"].iloc[-1]
    assert (tmp_path / "my_load.onnx").exists() and (tmp_path / "my_load.step.onnx").exists()

"""No module in seqzoo/ over 500 lines: a module that grows past it mixes concerns and is split
along them (e.g. compare's outputs in results.py, the selective scan's building blocks in
kernels/selective_scan/triton_blocks.py). docs/architecture.md says where each concern goes."""

from __future__ import annotations

from pathlib import Path

import seqzoo

MAX_LINES = 500


def test_no_module_over_the_line_limit():
    root = Path(seqzoo.__file__).resolve().parent
    sizes = {str(p.relative_to(root.parent)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert len(sizes) > 50, "the package's modules were not found"
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them by concern): {over}"

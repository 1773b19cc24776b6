"""Kernel benchmarks: every ``bench/kernel_<op>.py`` module's ``run(ctx)``.

    python bench/kernels.py                 # all ops, on the GPU
    python bench/kernels.py --ops selective_scan
    python bench/kernels.py --smoke         # tiny shapes on CPU (used by the tests)

Each op module times its Triton kernel against the torch reference, PyTorch SDPA
and a peer library where one is installed, forward and forward+backward, for T
from 512 to 65,536, and reports ms, tokens/s, GB/s from a minimal-bytes model
(% of the measured copy bandwidth) and TFLOP/s for chunked matmul kernels.
Results: ``<out>/kernels.csv`` and ``<out>/kernels.md``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import make_context, parser, write  # noqa: E402


def op_modules() -> dict[str, object]:
    here = Path(__file__).resolve().parent
    return {p.stem.removeprefix("kernel_"): importlib.import_module(p.stem) for p in sorted(here.glob("kernel_*.py"))}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    ctx = make_context(args)
    modules = op_modules()
    wanted = list(modules) if args.ops == "all" else [o.strip() for o in args.ops.split(",")]
    unknown = [o for o in wanted if o not in modules]
    if unknown:
        print(f"unknown op(s) {unknown}; known: {', '.join(modules)}", file=sys.stderr)
        return 2
    for op in wanted:
        modules[op].run(ctx)
    csv_path, md_path = write(ctx, args.out, "kernels")
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

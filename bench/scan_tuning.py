"""Selective-scan block sizes on a GPU, side by side: each candidate of ``launch_config``'s
chunk lengths, forward prefetch and backward program width (``triton_blocks.TUNING``) checked
against the float64 reference, then timed at PEERS.md's shape (B = 4, E = 1,536, N = 16,
T = 4,096; fp32 and bf16).

    python bench/scan_tuning.py [--out DIR] [--configs "16,8,0 8,4,0 8,4,1 4,4,1,8"]

A config is ``fwd_t,bwd_t,prefetch[,bwd_e]`` (bwd_e: channels per backward program, the
forward's by default: 2 at N = 16, one warp). The forward time ranks fwd_t/prefetch; forward +
backward minus forward ranks bwd_t and bwd_e. Results: ``<out>/scan_tuning.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import time_ms  # noqa: E402
from kernel_selective_scan import _call, _inputs, _timed  # noqa: E402

from seqzoo.kernels.selective_scan import selective_scan, selective_scan_ref  # noqa: E402
from seqzoo.kernels.selective_scan import triton_blocks  # noqa: E402

CONFIGS = "16,8,0 8,4,0 8,4,1 4,2,0 4,2,1 8,2,0"


def max_error(device, shape=(2, 600, 64, 16)) -> float:
    """Largest error (relative to the reference's scale) of y, the final state and the
    gradients of u, Δ, B, C against the float64 reference at a small shape."""
    x = _inputs(*shape, torch.float32, device)
    wide = {k: v.double() for k, v in x.items()}
    outs = []
    for fn, inputs, kw in ((selective_scan, x, dict(impl="triton")), (selective_scan_ref, wide, {})):
        leaves = {k: inputs[k].clone().requires_grad_() for k in ("u", "delta", "B", "C")}
        args = {**inputs, **leaves}
        y, final = fn(args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"], args["z"],
                      delta_bias=args["delta_bias"], delta_softplus=True, return_final_state=True, **kw)
        grads = torch.autograd.grad(y.double().pow(2).sum() + final.double().sum(), list(leaves.values()))
        outs.append([y.double(), final.double(), *(g.double() for g in grads)])
    return max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(*outs))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/bench")
    p.add_argument("--configs", default=CONFIGS)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (TRITON_INTERPRET=1): the script runs")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.smoke else "cuda")
    shape, check = ((1, 40, 4, 4), (1, 24, 4, 4)) if args.smoke else ((4, 4096, 1536, 16), (2, 600, 64, 16))
    name = "CPU (interpreter)" if args.smoke else torch.cuda.get_device_name(device)
    lines = [f"Device: {name}, torch {torch.__version__}. "
             f"Command: `python bench/scan_tuning.py --configs \"{args.configs}\"`", "",
             "| fwd_t | bwd_t | prefetch | bwd_e | max rel. error | fp32 fwd ms | fp32 fwd+bwd ms | bf16 fwd ms "
             "| bf16 fwd+bwd ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    inputs = {dt: _inputs(*shape, dt, device) for dt in (torch.float32, torch.bfloat16)}
    for spec in args.configs.split():
        values = [int(v) for v in spec.split(",")]
        if len(values) not in (3, 4):
            p.error(f"a config is fwd_t,bwd_t,prefetch[,bwd_e], got {spec!r}")
        triton_blocks.TUNING.clear()
        triton_blocks.TUNING.update(zip(("fwd_t", "bwd_t", "prefetch", "bwd_e"), values))
        cells = [*map(str, values[:3]), str(values[3]) if len(values) == 4 else "default"]
        try:
            cells.append(f"{max_error(device, check):.1e}")
            for dt in (torch.float32, torch.bfloat16):
                x = inputs[dt]
                fn = lambda x=x: _call(selective_scan, x, impl="triton")  # noqa: E731
                for mode in ("fwd", "fwd+bwd"):
                    cells.append(f"{time_ms(_timed(fn, x, mode), device):.3f}")
        except Exception as err:  # a config that fails to compile or launch is reported, not fatal
            if args.smoke:
                raise
            cells.append(f"failed: {type(err).__name__}: {str(err)[:120]}")
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    triton_blocks.TUNING.clear()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scan_tuning.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'scan_tuning.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Backbone training throughput: samples/s and tokens/s of a full training step.

    python bench/backbones.py                           # GPU: T = 1k .. 16k, bf16 autocast
    python bench/backbones.py --backbones s4d,transformer
    python bench/backbones.py --backbones all           # every registered family
    python bench/backbones.py --smoke                   # tiny shapes on CPU (used by the tests)

Each backbone is built causal at d_model = 256, n_layers = 4 with its family defaults;
a step is forward + backward of a mean-square loss + AdamW update on (B, T, 256) inputs,
with B·T = 16 384 tokens on a GPU (B = 16 at T = 1k, 1 at T = 16k). Without a GPU the
same step runs in fp32 on the CPU at T = 1,024 and 4,096 with B = 1
(``--lengths`` / ``--tokens`` change both). Reported: ms per step, samples/s, tokens/s and
peak memory (GPU). A family that cannot be built causal is reported and skipped. Results:
``<out>/backbones.csv`` and ``.md``. Target (docs/benchmarks.md): S4D and LMUFormer above
the transformer at T >= 4096.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import make_context, parser, write  # noqa: E402

from seqzoo import build_backbone  # noqa: E402
from seqzoo.backbones import list_backbones  # noqa: E402

DEFAULT_BACKBONES = "transformer,s4d,lmuformer,tcnca"
LENGTHS = (1024, 2048, 4096, 8192, 16384)
CPU_LENGTHS = (1024, 4096)
TOKENS, CPU_TOKENS, D_MODEL, N_LAYERS = 16384, 1024, 256, 4


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--backbones", default=DEFAULT_BACKBONES, help="comma-separated registry names, or 'all'")
    p.add_argument("--tokens", type=int, default=None,
                   help="B·T per step (default: 16384 on a GPU; 1024 on CPU, i.e. B = 1)")
    args = p.parse_args(argv)
    ctx = make_context(args)
    names = (list_backbones() if args.backbones == "all"
             else [n.strip() for n in args.backbones.split(",") if n.strip()])
    on_gpu = ctx.device.type == "cuda"
    # --lengths (the shared option): these T instead of 1k..16k on a GPU, 1k,4k on CPU
    lengths = sorted(ctx.lengths) if ctx.lengths else (LENGTHS if on_gpu else CPU_LENGTHS)
    tokens = args.tokens or (TOKENS if on_gpu else CPU_TOKENS)
    failed = []
    for name in names:
        try:
            run_backbone(ctx, name, lengths, tokens)
        except Exception as err:  # one family's failure is reported; the others still run
            print(f"{name}: FAILED: {type(err).__name__}: {err}", flush=True)
            failed.append(name)
        # after each family: a run cut at its time limit keeps what it measured
        csv_path, md_path = write(ctx, args.out, "backbones")
    print(f"wrote {csv_path} and {md_path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def run_backbone(ctx, name: str, lengths=LENGTHS, tokens: int = TOKENS) -> None:
    device = ctx.device
    d_model, n_layers = (16, 1) if ctx.smoke else (D_MODEL, N_LAYERS)
    shapes = [(2, 32), (1, 64)] if ctx.smoke else [(max(1, tokens // T), T) for T in lengths]
    torch.manual_seed(0)
    try:
        model = build_backbone(name, d_model=d_model, n_layers=n_layers, causal=True).to(device).train()
    except (ValueError, TypeError) as err:  # e.g. a family without a causal form
        print(f"{name}: not built causal ({err}); skipped", flush=True)
        return
    if not any(p.requires_grad for p in model.parameters()):  # the `identity` ablation
        print(f"{name}: no parameters, nothing to train; skipped", flush=True)
        return
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    for B, T in shapes:
        x = torch.randn(B, T, d_model, device=device)

        def train_step():
            with autocast:
                loss = model(x).float().pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            quick = ctx.smoke or device.type != "cuda"  # CPU: 1 warm-up step, median of 3
            ms = ctx.time_ms(train_step, warmup=2 if quick else 5, rep=5 if quick else 20)
        except torch.OutOfMemoryError:
            print(f"{name}: out of memory at B={B}, T={T}", flush=True)
            torch.cuda.empty_cache()
            continue
        peak = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
        dtype = "bf16-autocast" if device.type == "cuda" else "float32"
        ctx.add(name, "train step", "fwd+bwd+opt", dtype, B, T, f"d={d_model} x{n_layers}", ms,
                note=f"{B / (ms / 1e3):.2f} samples/s{peak}")


if __name__ == "__main__":
    sys.exit(main())

"""ICD coding: training throughput and peak memory of IcdNet per backbone at long note lengths.

One training step = embedding -> backbone -> code-wise attention -> scorers, LDAM-BCE,
backward, AdamW step, on random token ids with a padding mask (the second half of the batch
padded to 3/4 of the length). Reported: median step time over ``--repeats`` steps after one
warm-up, tokens/s (real tokens), and peak memory of the step (CUDA peak allocated on a GPU;
on CPU the growth of peak RSS in a fresh subprocess per configuration, so one configuration's
memory does not hide the next's).

    python bench/icd_lengths.py --backbones transformer,s4d,gru,mamba --lengths 512,2048,4096 \\
        --batch 2 --d-model 64 --n-layers 2 --out docs/results/icd_lengths.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def one(spec: dict) -> dict:
    import torch

    from seqzoo.backbones.base import build_backbone
    from seqzoo.domains.icd import IcdNet, ldam_bce, ldam_margins

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    B, L, K = spec["batch"], spec["length"], spec["n_classes"]
    net = IcdNet(build_backbone(spec["backbone"], d_model=spec["d_model"], n_layers=spec["n_layers"]),
                 spec["vocab"], K, L).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    tokens = torch.randint(2, spec["vocab"], (B, L), device=device)
    mask = torch.ones(B, L, dtype=torch.bool, device=device)
    mask[B // 2:, (3 * L) // 4:] = False
    tokens = tokens.masked_fill(~mask, 0)
    targets = (torch.rand(B, K, device=device) < 0.1).float()
    margins = ldam_margins(torch.randint(1, 1000, (K,)), 3.0).to(device)

    def step() -> None:
        loss = ldam_bce(net(tokens, mask), targets, margins)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    ms = 1000 * times[len(times) // 2]
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    return {"backbone": spec["backbone"], "length": L, "batch": B, "ms_per_step": round(ms, 1),
            "train_tokens_per_s": round(int(mask.sum()) / (ms / 1000), 1), "peak_mem_mb": round(peak, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="transformer,s4d,gru,mamba")
    p.add_argument("--lengths", default="512,2048,4096")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-classes", type=int, default=50)
    p.add_argument("--vocab", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    p.add_argument("--out", default="")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(json.loads(a.one))))
        return
    rows = []
    for length in map(int, a.lengths.split(",")):
        for backbone in a.backbones.split(","):
            spec = dict(backbone=backbone, length=length, batch=a.batch, d_model=a.d_model, n_layers=a.n_layers,
                        n_classes=a.n_classes, vocab=a.vocab, repeats=a.repeats, device=a.device)
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                                  text=True, env=dict(os.environ))
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            row = json.loads(lines[-1][7:]) if lines else {
                "backbone": backbone, "length": length, "batch": a.batch,
                "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
            rows.append(row)
            print(row, flush=True)
    device = a.device if a.device != "cpu" else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    print(f"\ndevice: {device}; d_model {a.d_model}, {a.n_layers} layers, batch {a.batch}, {a.n_classes} codes")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        keys = ["backbone", "length", "batch", "ms_per_step", "train_tokens_per_s", "peak_mem_mb", "error"]
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in keys})


if __name__ == "__main__":
    main()

"""Memory-cue gap sweep for S4WM: imagination MSE on the recall frames against the cue-recall gap.

    python bench/worldmodel_gaps.py --gaps 12,52,124 --backbones s4d,gru,transformer --out runs/wm-gaps
    python bench/worldmodel_gaps.py --gaps 12,52,124 --reuse 52=runs/wm-compare --out runs/wm-gaps
    python bench/worldmodel_gaps.py --gaps 12,52,124 --plot-only --out runs/wm-gaps   # redraw from logs

For each gap the memory-cue episodes (``seqzoo data synth worldmodel --gap G``, 4 cue frames,
8 recall frames, so T = G + 12) are written to ``<out>/data/gap<G>`` and ``seqzoo compare``
trains every backbone on ``configs/worldmodel/memory_cue.yaml`` with ``seq_len = T``.
``--reuse G=DIR`` takes an existing compare folder for that gap instead. Outputs in ``--out``:
``gaps.csv`` (gap, backbone, test metrics), ``gaps.md`` and ``gaps.png`` (recall-frame MSE,
``test/tail_mse``, per backbone, with the copy-last-context-frame baseline). Runs that have
not finished are left out (the figure can be redrawn from whatever finished).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "worldmodel" / "memory_cue.yaml"
CUE_LEN, RECALL_LEN, CONTEXT = 4, 8, 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gaps", default="12,52,124", help="comma-separated gaps")
    parser.add_argument("--backbones", default="s4d,gru,transformer")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--reuse", action="append", default=[],
                        help="GAP=DIR: an existing compare folder for that gap (repeatable; adds to the gap's runs)")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--out", default="runs/wm-gaps")
    opts = parser.parse_args(argv)
    out = Path(opts.out)
    gaps = [int(g) for g in opts.gaps.split(",")]
    reuse: dict[int, list[Path]] = {}
    for gap, folder in (r.split("=", 1) for r in opts.reuse):
        reuse.setdefault(int(gap), []).append(Path(folder))
    folders: dict[int, list[Path]] = {}
    for gap in gaps:
        data = out / "data" / f"gap{gap}"
        if not data.exists():
            from seqzoo.datasets.worldmodel import synth_worldmodel

            synth_worldmodel(str(data), gap=gap, cue_len=CUE_LEN, recall_len=RECALL_LEN)
        own = out / f"gap{gap}"
        folders[gap] = reuse.get(gap, []) + ([own] if own.exists() or not (gap in reuse or opts.plot_only) else [])
        if gap in reuse or opts.plot_only:
            continue
        command = [sys.executable, "-m", "seqzoo.cli", "compare", "--config", str(CONFIG), "--backbones",
                   opts.backbones, "--seeds", opts.seeds, "--out", str(own),
                   "--data.init_args.path", str(data), "--data.init_args.seq_len", str(gap + CUE_LEN + RECALL_LEN)]
        if opts.max_epochs:
            command += ["--max_epochs", str(opts.max_epochs)]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=False)
    rows = collect(folders, out)
    write(rows, out)
    return 0


def collect(folders: dict[int, list[Path]], out: Path) -> list[dict]:
    from seqzoo.datasets.worldmodel import WorldModelDataModule
    from seqzoo.domains.worldmodel import copy_last_frame_scores

    rows = []
    for gap, gap_folders in folders.items():
        length = gap + CUE_LEN + RECALL_LEN
        dm = WorldModelDataModule(str(out / "data" / f"gap{gap}"), image_size=16, action_dim=5, seq_len=length,
                                  batch_size=64)
        dm.setup("test")
        totals, count = {}, 0
        for batch in dm.test_dataloader():
            for k, v in copy_last_frame_scores(batch, CONTEXT, RECALL_LEN).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(batch["image"])
            count += len(batch["image"])
        rows.append({"gap": gap, "backbone": "copy last context frame", "seed": "",
                     **{f"test/{k}": v / count for k, v in totals.items()}})
        for log in sorted(p for folder in gap_folders for p in (folder / "logs").glob("*.json")):
            backbone, seed = log.stem.rsplit("-seed", 1)
            result = json.loads(log.read_text())
            rows.append({"gap": gap, "backbone": backbone, "seed": seed, **result["metrics"],
                         "train_samples_per_s": result["train_samples_per_s"],
                         "imag_samples_per_s": result["infer_samples_per_s"]})
    return rows


def write(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    keys = ["gap", "backbone", "seed", "test/imag_mse", "test/tail_mse", "test/reward_acc", "test/tail_reward_acc",
            "train_samples_per_s", "imag_samples_per_s"]
    with open(out / "gaps.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    names = list(dict.fromkeys(r["backbone"] for r in rows))
    gaps = sorted({r["gap"] for r in rows})
    lines = ["| backbone | " + " | ".join(f"gap {g}: recall MSE / recall reward acc" for g in gaps) + " |",
             "|---|" + "---|" * len(gaps)]
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    for name in names:
        points = [(r["gap"], r["test/tail_mse"], r.get("test/tail_reward_acc")) for r in rows
                  if r["backbone"] == name and "test/tail_mse" in r]
        points.sort()
        cells = []
        for g in gaps:
            match = [p for p in points if p[0] == g]
            cells.append(f"{match[0][1]:.4f} / {match[0][2]:.2f}" if match else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        style = dict(linestyle="--", color="grey", marker="x") if name.startswith("copy") else dict(marker="o")
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, **style)
    ax.set_xlabel("cue-recall gap (steps)")
    ax.set_ylabel("imagination MSE on the recall frames (test/tail_mse)")
    ax.set_yscale("log")
    ax.set_title("S4WM memory-cue task: recall error vs gap")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gaps.png")
    plt.close(fig)
    (out / "gaps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

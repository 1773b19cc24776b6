"""``seqzoo reproduce``: a paper's results table with one command, beside the published numbers.

    seqzoo reproduce etth1 --out DIR [--tables itransformer,informer,informer_paper]
                           [--horizons 96,336] [--seeds 2021] [--max_epochs N] [--data.path CSV]

Each table is a paper-protocol config run at every horizon of the paper's table through
``seqzoo compare`` (one folder per horizon under ``DIR/<table>/h<H>``, with its own
``results.md``, runs and checkpoints), then collected into ``DIR/<name>.md`` and
``DIR/<name>.csv``: our test MSE/MAE (mean ± std over seeds) next to the paper's.
Other ``--trainer.*``, ``--model.*``, ``--data.*`` arguments pass through to every run
(after the table's own per-horizon settings, so they win).
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from seqzoo.cli_args import check_passthrough, int_list, option, sigint_ignored
from seqzoo.errors import ConfigError
from seqzoo.run_config import PACKAGED_CONFIGS

CONFIGS = PACKAGED_CONFIGS / "forecasting"  # the paper-protocol configs, shipped in the package


@dataclass(frozen=True)
class Row:
    horizon: int
    paper: tuple[float, float]  # published test (MSE, MAE)
    args: tuple[str, ...] = ()  # this horizon's settings, e.g. the iTransformer width


@dataclass(frozen=True)
class Table:
    config: str
    backbone: str
    source: str
    rows: tuple[Row, ...]
    args: tuple[str, ...] = field(default=())  # settings of every horizon


def _width(d: int) -> tuple[str, ...]:
    return ("--model.backbone.init_args.d_model", str(d))


def _windows(lookback: int, label_len: int) -> tuple[str, ...]:
    return ("--data.lookback", str(lookback), "--model.net.label_len", str(label_len))


ETTH1: dict[str, Table] = {
    # thuml/iTransformer scripts/multivariate_forecasting/ETT/iTransformer_ETTh1.sh: d_model = d_ff
    # = 256 up to horizon 192, 512 beyond; results from the paper's full table (lookback 96).
    "itransformer": Table(
        config="etth1_itransformer.yaml",
        backbone="itransformer",
        source="iTransformer (Liu et al., ICLR 2024), full results, lookback 96",
        rows=(
            Row(96, (0.386, 0.405), _width(256)),
            Row(192, (0.441, 0.436), _width(256)),
            Row(336, (0.487, 0.458), _width(512)),
            Row(720, (0.503, 0.491), _width(512)),
        ),
    ),
    # Informer under the same lookback-96 protocol (48 start tokens), as TimesNet reports it.
    "informer": Table(
        config="etth1_informer.yaml",
        backbone="informer",
        source="Informer under the lookback-96 protocol, as reported by TimesNet (Wu et al., ICLR 2023)",
        rows=(
            Row(96, (0.865, 0.713)),
            Row(192, (1.008, 0.792)),
            Row(336, (1.107, 0.809)),
            Row(720, (1.181, 0.865)),
        ),
    ),
    # The Informer paper's own table: zhouhaoyi/Informer2020 scripts/ETTh1.sh windows per
    # horizon (factor 3 at horizon 24), main_informer.py's 6 training epochs.
    "informer_paper": Table(
        config="etth1_informer.yaml",
        backbone="informer",
        source="Informer (Zhou et al., AAAI 2021), ETTh1 multivariate, the paper's windows per horizon",
        args=("--trainer.max_epochs", "6"),
        rows=(
            Row(24, (0.577, 0.549), _windows(48, 48)
                + ("--model.backbone.init_args.factor", "3", "--model.net.decoder_factor", "3")),
            Row(48, (0.685, 0.625), _windows(96, 48)),
            Row(168, (0.931, 0.752), _windows(168, 168)),
            Row(336, (1.128, 0.873), _windows(168, 168)),
            Row(720, (1.215, 0.896), _windows(336, 336)),
        ),
    ),
}

PAPER_TABLES: dict[str, dict[str, Table]] = {"etth1": ETTH1}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqzoo reproduce", description=__doc__.split("\n\n")[0],
                                     epilog="Other --trainer./--model./--data. arguments pass through to every run.")
    parser.add_argument("name", help=f"which paper tables: {', '.join(PAPER_TABLES)}")
    parser.add_argument("--tables", default="all", help="comma-separated tables, or 'all'")
    parser.add_argument("--horizons", default="all", help="comma-separated horizons of the tables, or 'all'")
    parser.add_argument("--seeds", default="2021", help="comma-separated integer seeds")
    parser.add_argument(*option("max_epochs"), type=int, default=None, help="override the protocol's epochs (quick looks)")
    parser.add_argument("--out", required=True, help="output folder")
    opts, passthrough = parser.parse_known_args(argv)
    check_passthrough("reproduce", passthrough)

    if opts.name not in PAPER_TABLES:
        raise ConfigError(f"no paper tables named {opts.name!r}; known: {', '.join(PAPER_TABLES)}")
    tables = select_tables(PAPER_TABLES[opts.name], opts.tables, opts.horizons)
    command = "seqzoo reproduce " + " ".join(shlex.quote(a) for a in argv)
    reproduce(opts.name, tables, int_list(opts.seeds, "--seeds"), Path(opts.out), max_epochs=opts.max_epochs,
              passthrough=passthrough, command=command)
    return 0


def select_tables(known: dict[str, Table], tables: str, horizons: str) -> dict[str, Table]:
    names = list(known) if tables.strip() == "all" else [t.strip() for t in tables.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown}; known: {', '.join(known)}")
    wanted = None
    if horizons.strip() != "all":
        wanted = set(int_list(horizons, "--horizons"))
    chosen = {}
    for name in names:
        table = known[name]
        rows = tuple(r for r in table.rows if wanted is None or r.horizon in wanted)
        if rows:
            chosen[name] = replace(table, rows=rows)
    if not chosen:
        offered = sorted({r.horizon for n in names for r in known[n].rows})
        raise ConfigError(f"none of the horizons {sorted(wanted or [])} is in the chosen tables (they have {offered})")
    return chosen


def reproduce(name: str, tables: dict[str, Table], seeds: list[int], out: Path, *, max_epochs: int | None = None,
              passthrough: list[str] = (), command: str = "") -> list[dict]:
    """Run every chosen table's horizons (one compare each) and write ours beside the paper's.
    After a Ctrl-C the tables hold the horizons that finished and the interrupted one's finished
    runs, and say where it stopped."""
    from seqzoo.compare import compare
    from seqzoo.results import read_results_csv

    results = []
    for table_name, table in tables.items():
        for row in table.rows:
            print(f"== {table_name}, horizon {row.horizon}", flush=True)
            args = ["--data.horizon", str(row.horizon), *table.args, *row.args, *passthrough]
            if max_epochs:
                args += ["--trainer.max_epochs", str(max_epochs)]  # last, so it beats a table's own epochs
            folder = out / table_name / f"h{row.horizon}"
            try:
                runs = compare(str(CONFIGS / table.config), [table.backbone], seeds, folder, passthrough=args)
            except KeyboardInterrupt:
                if (folder / "results.csv").is_file():  # the runs it finished, the rest "not run"
                    results.append(_horizon(table_name, table, row, read_results_csv(folder / "results.csv"), folder))
                if results:
                    with sigint_ignored():
                        write_tables(name, tables, results, out, command,
                                     interrupted=f"{table_name}, horizon {row.horizon}")
                raise
            results.append(_horizon(table_name, table, row, runs, folder))
    write_tables(name, tables, results, out, command)
    return results


def _horizon(table_name: str, table: Table, row, runs: list[dict], folder: Path) -> dict:
    """One horizon's line: the mean ± std of its successful runs beside the paper's figures."""
    from seqzoo.results import mean_std

    ok = [r for r in runs if r["status"] == "ok"]
    mse, mse_std = mean_std([r["metrics"]["test/mse"] for r in ok])
    mae, mae_std = mean_std([r["metrics"]["test/mae"] for r in ok])
    return {"table": table_name, "backbone": table.backbone, "horizon": row.horizon, "n": len(ok), "runs": len(runs),
            "mse": mse, "mse_std": mse_std, "mae": mae, "mae_std": mae_std, "paper_mse": row.paper[0],
            "paper_mae": row.paper[1], "folder": str(folder)}


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "failed"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def write_tables(name: str, tables: dict[str, Table], results: list[dict], out: Path, command: str,
                 interrupted: str = "") -> None:
    """``<name>.csv`` and ``<name>.md``: ours beside the paper's per horizon; ``interrupted``: where
    a Ctrl-C stopped the reproduction (said in the table)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    lines = [f"# {name}: seqzoo against the published tables", "", f"Command: `{command}`" if command else "", ""]
    for table_name, table in tables.items():
        lines += [f"## {table_name}: `{table.backbone}` with `configs/forecasting/{table.config}`", "",
                  f"Paper: {table.source}.", "",
                  "| horizon | test MSE | test MAE | paper MSE | paper MAE | ΔMSE | runs |",
                  "|---|---|---|---|---|---|---|"]
        for r in (r for r in results if r["table"] == table_name):
            delta = r["mse"] - r["paper_mse"]
            lines.append(f"| {r['horizon']} | {_cell(r['mse'], r['mse_std'])} | {_cell(r['mae'], r['mae_std'])} | "
                         f"{r['paper_mse']:.3f} | {r['paper_mae']:.3f} | "
                         f"{'' if math.isnan(delta) else f'{delta:+.3f}'} | {r['n']}/{r['runs']} |")
        lines.append("")
    if interrupted:
        lines += [f"Interrupted (Ctrl-C) at {interrupted}: the horizons after it did not run, and its own row "
                  "counts only the runs that finished (runs = finished / all).", ""]
    lines.append("Each horizon's folder holds its `results.md`, run folders and checkpoints.")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print((out / f"{name}.md").read_text())

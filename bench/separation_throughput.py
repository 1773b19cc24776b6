"""Where separation training time goes: data loading alone, a bare training step, and
``trainer.fit`` on the same batches (samples/s each).

    OMP_NUM_THREADS=1 python bench/separation_throughput.py --data data/speech-mix [--batches 30]

The data must exist (``seqzoo data prepare speech-mix --out data/speech-mix``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from seqzoo.domains.separation import pit_si_snr
from seqzoo.lightning_cli import make_cli
from seqzoo.run_config import rewrite_args


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/separation/speech_mix.yaml")
    p.add_argument("--data", default="data/speech-mix")
    p.add_argument("--batches", type=int, default=30)
    opts = p.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        args, name = rewrite_args([
            "--config", opts.config, "--data.path", opts.data, "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", str(opts.batches), "--trainer.limit_val_batches", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--run_dir", run_dir])
        cli = make_cli(args=args, run=False, config_name=name)
        dm, task = cli.datamodule, cli.model
        dm.prepare_data()
        dm.setup("fit")
        t0, n, batches = time.perf_counter(), 0, []
        for batch in dm.train_dataloader():
            batches.append(batch)
            n += batch["mix"].shape[0]
            if len(batches) == opts.batches:
                break
        print(f"data loading alone: {n / (time.perf_counter() - t0):.1f} samples/s")
        opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
        for rep in range(2):  # the first pass warms up
            t0 = time.perf_counter()
            for batch in batches:
                si_snr, _ = pit_si_snr(task(batch), batch["sources"], batch.get("lengths"))
                (-si_snr.mean()).backward()
                opt.step()
                opt.zero_grad()
            if rep:
                print(f"bare step: {n / (time.perf_counter() - t0):.1f} samples/s")
        t0 = time.perf_counter()
        cli.trainer.fit(task, dm)
        print(f"trainer.fit: {n / (time.perf_counter() - t0):.1f} samples/s "
              f"(torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()

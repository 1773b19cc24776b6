"""One ``seqzoo compare`` run, in its own process: train, test the best checkpoint, time inference.

    python -m seqzoo.compare_worker '{"config": ..., "seed": 0, "run_dir": ..., "result": ...}'

``compare`` starts one per (backbone, seed) so that peak-memory figures are clean and one
failure does not stop the rest; the result is a JSON file written atomically at ``result``.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path


def run_worker(spec: dict) -> None:
    import resource

    import torch
    from lightning.pytorch.callbacks import Callback

    from seqzoo.backbones.base import count_parameters
    from seqzoo.lightning_cli import make_cli

    class ThroughputMeter(Callback):
        """Time of forward + backward + optimiser step per training batch (no data loading)."""

        def __init__(self, warmup: int = 3) -> None:
            self.warmup, self.seen, self.samples, self.tokens, self.seconds = warmup, 0, 0, 0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            _sync(pl_module.device)
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            _sync(pl_module.device)
            self.seen += 1
            if self.seen > self.warmup:
                self.seconds += time.perf_counter() - self._t0
                n = pl_module.batch_size_of(batch)
                self.samples += n
                self.tokens += n * pl_module.tokens_per_sample(batch)

    args = ["--config", spec["config"], "--seed_everything", str(spec["seed"]), "--run_dir", spec["run_dir"],
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    if spec.get("max_epochs"):
        args += ["--trainer.max_epochs", str(spec["max_epochs"])]
    if spec.get("max_steps"):
        args += ["--trainer.max_steps", str(spec["max_steps"])]
    args += list(spec.get("extra", []))
    cli = make_cli(args=args, run=False, config_name=Path(spec["config"]).stem)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    device = trainer.strategy.root_device  # fit and test hand the model back on the CPU
    meter = ThroughputMeter()
    trainer.callbacks.append(meter)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule)
    fit_seconds = time.perf_counter() - t0
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    last = Path(spec["run_dir"]) / "checkpoints" / "last.ckpt"
    checkpoint = best or (str(last) if last.is_file() else "")
    tested = trainer.test(model, datamodule, ckpt_path=best or None, verbose=False)
    metrics = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    infer_samples, infer_tokens = measure_inference(model.to(device), datamodule)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        device_name = torch.cuda.get_device_name(device)
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        device_name = f"CPU ({os.cpu_count()} cores)"
    result = {
        "params": count_parameters(model.net if hasattr(model, "net") else model),
        "metrics": metrics,
        "train_samples_per_s": meter.samples / meter.seconds if meter.seconds else float("nan"),
        "train_tokens_per_s": meter.tokens / meter.seconds if meter.seconds else float("nan"),
        "infer_samples_per_s": infer_samples,
        "infer_tokens_per_s": infer_tokens,
        "peak_mem_mb": peak_mb,
        "device": device_name,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "fit_seconds": fit_seconds,
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else "",
    }
    tmp = Path(spec["result"] + ".partial")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, spec["result"])


def measure_inference(model, datamodule, max_batches: int = 12, warmup: int = 2) -> tuple[float, float]:
    """Samples/s and tokens/s of ``model(batch)`` in eval mode over test batches."""
    import torch

    model.eval()
    samples = tokens = 0
    seconds = 0.0
    batches = list(itertools.islice(datamodule.test_dataloader(), max_batches + warmup))
    if len(batches) <= warmup:  # a small test set (one window per unit): time its batches again after warm-up
        batches = batches * (warmup // max(len(batches), 1) + 2)
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            batch = model.transfer_batch_to_device(batch, model.device, 0)  # dicts, PyG batches...
            _sync(model.device)
            t0 = time.perf_counter()
            model(batch)
            _sync(model.device)
            if i >= warmup:
                seconds += time.perf_counter() - t0
                n = model.batch_size_of(batch)
                samples += n
                tokens += n * model.tokens_per_sample(batch)
    if not seconds:
        return float("nan"), float("nan")
    return samples / seconds, tokens / seconds


def _sync(device) -> None:
    import torch

    if getattr(device, "type", "") == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    run_worker(json.loads(sys.argv[1]))

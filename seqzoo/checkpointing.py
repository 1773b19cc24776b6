"""The run's checkpoints: ``last.ckpt`` always holds the latest state, resumable exactly.

:class:`RunCheckpoints` writes ``checkpoints/last.ckpt``

* at the end of every training epoch (after validation),
* every ``every_n_train_steps`` optimiser steps and every ``every_n_minutes`` of training
  (the default, 5 minutes, bounds the work a kill can lose),
* when training ends (the final model),

always atomically (``last.ckpt.partial`` then rename), so a kill while writing leaves the
previous one. ``best.ckpt`` is Lightning's ``ModelCheckpoint`` on the task's monitor, as before.

What makes ``--ckpt_path last`` continue exactly where the killed run was (same weights as an
uninterrupted run with the same seed, to floating-point determinism on CPU):

* Lightning's own state: weights, optimiser and LR schedulers, loop counters (mid-epoch too);
* the training loader's position (:mod:`seqzoo.resumable_data`: per-epoch seeded order, batches
  already trained skipped);
* the RNG states of every process (torch CPU and CUDA, numpy, Python), restored when training
  restarts (after Lightning's set-up has drawn what it draws), so dropout continues its stream;
* an epoch-interval LR scheduler is stepped once when resuming from an end-of-epoch
  checkpoint (Lightning steps it after the epoch-end hooks, i.e. after the save);
* ``metrics.csv`` loses the rows of steps after the checkpoint, so redone steps are not listed
  twice. (Epoch means of training metrics, such as ``train/loss_epoch``, of the epoch that was
  interrupted average only the batches trained after the resume: Lightning does not checkpoint
  its running means.)

It also stops training at the first non-finite loss (:class:`seqzoo.errors.TrainingError`
naming the step), before that state can be saved; ``status.json`` then says ``failed``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from seqzoo.errors import TrainingError
from seqzoo.runs import drop_metric_rows_from
from seqzoo.status import update_status

LAST = "last.ckpt"


def rng_states() -> dict[str, Any]:
    """This process's RNG states (torch CPU, every CUDA device, numpy, Python), as tensors,
    strings and numbers only (a checkpoint stays loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(),
              "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunCheckpoints(Checkpoint):
    """``last.ckpt`` every epoch, every N steps / M minutes and at the end; a non-finite loss stops training.

    A ``Checkpoint`` callback, so Lightning runs its epoch-end hook after the other callbacks' and
    after ``ModelCheckpoint`` has chosen ``best.ckpt`` (whose choice is then part of the state).

    Args:
        dirpath: the run's ``checkpoints/`` folder.
        every_n_train_steps: also save every this many optimiser steps (None: not by steps).
        every_n_minutes: also save when this many minutes of training passed since the last save
            (None: not by time).
        metrics_file: the run's ``metrics.csv`` (cut back to the checkpoint's rows on resume).
        run_dir: the run folder whose ``status.json`` records each save (None: no status).
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_train_steps: int | None = None,
                 every_n_minutes: float | None = 5.0, metrics_file: str | os.PathLike | None = None,
                 run_dir: str | os.PathLike | None = None) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1 or None, got {every_n_train_steps}")
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(f"every_n_minutes must be > 0 or None, got {every_n_minutes}")
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.every_n_minutes = every_n_minutes
        self.metrics_file = Path(metrics_file) if metrics_file else None
        self.run_dir = Path(run_dir) if run_dir else None
        self._last_save_time = time.monotonic()
        self._last_saved_step = -1
        self._at_epoch_end = False
        self._resume: dict | None = None
        self._flush_pending = False

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    # -- saving -------------------------------------------------------------------------
    def save(self, trainer: L.Trainer, at_epoch_end: bool) -> None:
        """Write ``last.ckpt`` (every rank takes part; rank 0 writes and renames)."""
        self._at_epoch_end = at_epoch_end
        tmp = self.path.with_name(LAST + ".partial")
        trainer.save_checkpoint(tmp, weights_only=False)  # collects every callback's state, this one's included
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
            self._record(trainer)
        trainer.strategy.barrier("seqzoo-last-checkpoint")
        self._last_save_time = time.monotonic()
        self._last_saved_step = trainer.global_step

    def _record(self, trainer: L.Trainer) -> None:
        if self.run_dir is None:
            return
        fields: dict[str, Any] = {
            "last_checkpoint": {"path": str(self.path.resolve()), "epoch": trainer.current_epoch,
                                "global_step": trainer.global_step, "time": time.strftime("%Y-%m-%d %H:%M:%S")},
            "epoch": trainer.current_epoch, "global_step": trainer.global_step,
        }
        best = trainer.checkpoint_callback
        if best is not None and best is not self and getattr(best, "best_model_path", ""):
            score = best.best_model_score
            fields["best"] = {"metric": best.monitor, "value": None if score is None else float(score),
                              "path": best.best_model_path}
        update_status(self.run_dir, **fields)

    def state_dict(self) -> dict[str, Any]:
        return {"every_n_train_steps": self.every_n_train_steps, "every_n_minutes": self.every_n_minutes}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = rng_states()
        states = _all_gather_object(states, trainer.world_size) if trainer.world_size > 1 else [states]
        if trainer.is_global_zero:
            _flush(trainer)  # what was logged up to this state is on disk
        self._flush_pending = True  # and the row of this very step, logged after this hook, soon
        checkpoint["seqzoo_resume"] = {"rng": states, "at_epoch_end": self._at_epoch_end}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._flush_pending and trainer.is_global_zero:
            _flush(trainer)
        self._flush_pending = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._check_finite(trainer, outputs, batch_idx)
        if trainer.fit_loop.epoch_loop._should_accumulate():
            return  # no optimiser step yet: mid-accumulation states are not resumable
        step = trainer.global_step
        due = bool(self.every_n_train_steps) and step % self.every_n_train_steps == 0
        if self.every_n_minutes is not None:
            late = time.monotonic() - self._last_save_time >= 60 * self.every_n_minutes
            due = due or bool(trainer.strategy.broadcast(late))
        if due and step != self._last_saved_step:
            self.save(trainer, at_epoch_end=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, at_epoch_end=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_saved_step:  # e.g. max_steps ended mid-epoch
            self.save(trainer, at_epoch_end=False)

    # -- non-finite loss ----------------------------------------------------------------
    def _check_finite(self, trainer: L.Trainer, outputs: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        bad = isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            value = float(loss.detach().float().cpu()) if isinstance(loss, torch.Tensor) else float("nan")
            raise TrainingError(
                f"training loss became {value} at step {trainer.global_step} (epoch {trainer.current_epoch}, "
                f"batch {batch_idx}); stopped before saving that state. Likely causes: non-finite or huge values "
                "in the data (the readers reject NaN/inf, but a value can overflow after scaling), a learning "
                "rate too high, or a float16 overflow (try precision 32 or bf16-mixed). last.ckpt holds the last "
                "finite state.")

    # -- resuming -----------------------------------------------------------------------
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resume = checkpoint.get("seqzoo_resume")
        if self._resume is None or trainer.state.fn != "fit":
            return
        if trainer.is_global_zero and self.metrics_file is not None:
            drop_metric_rows_from(self.metrics_file, int(checkpoint["global_step"]))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resume, self._resume = self._resume, None
        self._last_save_time = time.monotonic()
        self._last_saved_step = trainer.global_step
        if not resume:
            return
        states = resume["rng"]
        if len(states) == trainer.world_size:
            set_rng_states(states[trainer.global_rank])
        if resume.get("at_epoch_end"):
            _step_epoch_schedulers(trainer)


def _flush(trainer: L.Trainer) -> None:
    for logger in trainer.loggers:
        logger.save()


def _step_epoch_schedulers(trainer: L.Trainer) -> None:
    """The epoch-interval scheduler step Lightning takes after the epoch-end hooks (so after the save)."""
    epoch_done = trainer.fit_loop.epoch_progress.current.processed - 1
    for config in trainer.lr_scheduler_configs:
        if config.interval == "epoch" and not config.reduce_on_plateau and epoch_done % config.frequency == 0:
            config.scheduler.step()


def _all_gather_object(obj: Any, world_size: int) -> list:
    out: list = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out

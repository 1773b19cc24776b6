"""Run bookkeeping shared by the CLI verbs and ``compare``.

* Each run lives in ``runs/<config name>/<backbone>/seed<k>/``: resolved config,
  CSV metrics, TensorBoard logs, checkpoints in a pinned ``checkpoints/`` folder
  (so ``--ckpt_path last`` resumes), and ``status.json``.
* :class:`RunRecorder` writes that status, stores the resolved config and the data
  sizes in every checkpoint (so a checkpoint alone rebuilds its model), and removes
  a run folder that failed before it saved anything.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

# Re-exported from their own low modules (older imports of ``seqzoo.runs`` keep working).
from seqzoo.checkpoints import (  # noqa: F401
    CHECKPOINT_KEY,
    build_datamodule,
    build_task,
    read_checkpoint_record,
)
from seqzoo.run_config import (  # noqa: F401
    backbone_holder,
    backbone_name_of,
    class_path,
    import_class,
    load_yaml,
    resolve_backbone_value,
    rewrite_args,
    rewrite_backbone_names,
    task_class_of,
)
from seqzoo.status import (  # noqa: F401  (re-exported: their old home)
    RUNS_ROOT,
    default_run_dir,
    read_status_file,
    run_status,
    update_status,
    write_status,
)


class RunRecorder(Callback):
    """Status file, config-in-checkpoint, and cleanup of runs that failed before training.

    ``status.json`` holds ``status`` (running, completed, failed, interrupted, died), the verb,
    ``pid``, ``host``, ``started``, and -- kept up to date by :class:`seqzoo.checkpointing.RunCheckpoints`
    -- ``last_checkpoint`` (path, epoch, step, time), ``best`` (metric, value, path),
    ``epoch`` and ``global_step``.
    """

    def __init__(self, run_dir: Path, existed: bool, config_yaml: str, dims: dict | None, verb: str,
                 datamodule: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.datamodule = datamodule
        self.existed = existed
        self.config_yaml = config_yaml
        self.dims = dims
        self.verb = verb

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            if self.verb == "fit":
                print(f"seqzoo: run folder {self.run_dir}", file=sys.stderr, flush=True)
                note = streaming_note(pl_module)
                if note:
                    print(note, file=sys.stderr, flush=True)
            previous = (read_status_file(self.run_dir) or {}) if trainer.ckpt_path else {}
            keep = {k: previous[k] for k in ("last_checkpoint", "best") if k in previous}  # resumed: still true
            write_status(self.run_dir, "running", verb=self.verb, pid=os.getpid(), host=socket.gethostname(),
                         started=time.strftime("%Y-%m-%d %H:%M:%S"), world_size=trainer.world_size,
                         resumed_from=str(trainer.ckpt_path) if trainer.ckpt_path else None, **keep)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.interrupted:
            record = read_status_file(self.run_dir) or {}
            record.pop("time", None)
            record.pop("status", None)
            record.update(epochs=trainer.current_epoch, global_step=trainer.global_step,
                          ended=time.strftime("%Y-%m-%d %H:%M:%S"))
            write_status(self.run_dir, "completed", **record)
            if self.verb == "fit":
                print(f"seqzoo: fit completed; {_best_checkpoint_words(trainer)}", file=sys.stderr, flush=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        record = {"config": self.config_yaml, "dims": self.dims}
        transform = getattr(self.datamodule, "transform_state", None)
        if transform is not None:
            record["transform"] = transform()  # the fitted scaler, columns...: prediction reuses them
        checkpoint[CHECKPOINT_KEY] = record

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        saved = any((self.run_dir / "checkpoints").glob("*.ckpt"))
        trained = trainer.global_step > 0
        if not self.existed and not saved and not trained and self.verb == "fit":
            shutil.rmtree(self.run_dir, ignore_errors=True)  # failed before it trained: nothing to keep
            return
        interrupted = isinstance(exception, KeyboardInterrupt)
        record = read_status_file(self.run_dir) or {}
        record.pop("time", None)
        record.pop("status", None)
        record.update(verb=self.verb, error=f"{type(exception).__name__}: {exception}"[:2000],
                      global_step=trainer.global_step, ended=time.strftime("%Y-%m-%d %H:%M:%S"),
                      resume="seqzoo fit ... --ckpt_path last" if (self.run_dir / "checkpoints" / "last.ckpt").exists()
                      else None)
        write_status(self.run_dir, "interrupted" if interrupted else "failed", **record)
        print(f"seqzoo: {self.verb} {'interrupted' if interrupted else 'failed'}; run folder {self.run_dir}"
              + (f" (resume: {record['resume']})" if record.get("resume") else ""), file=sys.stderr, flush=True)


def _best_checkpoint_words(trainer: L.Trainer) -> str:
    """"best checkpoint runs/.../best.ckpt (val/loss 0.1234)", or why there is none."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not path:
        return "no best checkpoint (checkpointing off or nothing monitored)"
    score = getattr(callback, "best_model_score", None)
    said = f" ({callback.monitor} {float(score):.4g})" if score is not None and callback.monitor else ""
    return f"best checkpoint {path}{said}"


class HparamsLogger(Callback):
    """Hyperparameters (backbone, its sizes, optimiser and lr, batch size, seed...) in
    TensorBoard's HPARAMS tab, with the run's best monitored value as ``hp/best_<monitor>``
    so runs can be compared there. Written at the end of fit, by rank 0."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        self.hparams = hparams

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        if not trainer.is_global_zero:
            return
        callback = trainer.checkpoint_callback
        monitor = getattr(pl_module, "monitor", None)
        score = getattr(callback, "best_model_score", None) if callback is not None else None
        if score is None and monitor:
            score = trainer.callback_metrics.get(monitor)
        metrics = {f"hp/best_{monitor}": float(score)} if monitor and score is not None else {}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(self.hparams, metrics or None)
                logger.save()


def run_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config's scalar settings as flat hyperparameters: ``backbone`` (its
    registry name), ``seed``, ``backbone.<keyword>``, ``optimizer`` and ``optimizer.lr``...,
    ``task.<keyword>``, ``data.<keyword>``."""
    model = (config.get("model") or {}).get("init_args") or {}
    out: dict[str, Any] = {}
    backbone = model.get("backbone")
    if isinstance(backbone, dict) and backbone.get("class_path"):
        out["backbone"] = backbone_name_of(backbone["class_path"])
    if config.get("seed_everything") is not None:
        out["seed"] = config["seed_everything"]
    for key, value in model.items():
        if isinstance(value, dict) and "class_path" in value:
            prefix = {"backbone": "backbone", "optimizer": "optimizer", "lr_scheduler": "lr_scheduler"}.get(key, key)
            if key != "backbone":
                out[prefix] = str(value["class_path"]).rsplit(".", 1)[-1]
            _flatten(value.get("init_args") or {}, prefix + ".", out)
        else:
            _flatten({key: value}, "task.", out)
    _flatten(((config.get("data") or {}).get("init_args") or {}), "data.", out)
    return out


def _flatten(values: dict, prefix: str, out: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _flatten(value.get("init_args", value) if "class_path" in value else value, f"{prefix}{key}.", out)
        elif isinstance(value, (bool, int, float, str)):
            out[prefix + key] = value


def _item(prediction: Any, j: int) -> Any:
    """Item ``j`` of one batch's prediction: a row of a tensor, an element of a tuple, or, for a
    dict of per-batch values, the dict of its rows (tensors keep a batch axis of 1)."""
    import torch

    if isinstance(prediction, dict):
        return {k: (v[j : j + 1] if isinstance(v, torch.Tensor) else [v[j]] if isinstance(v, (list, tuple)) else v)
                for k, v in prediction.items()}
    return prediction[j]


def streaming_note(task: L.LightningModule) -> str | None:
    """What ``fit`` says when the model's backbone can stream but ``seqzoo export --streaming``
    will not work for this model as configured (and what it would need); None otherwise."""
    backbone = getattr(task, "backbone", None)
    requirements = getattr(task, "streaming_requirements", None)
    if backbone is None or requirements is None or not type(backbone).streaming:
        return None
    needs = requirements()
    if not needs:
        return None
    return f"seqzoo: note: {type(backbone).name!r} streams, but `seqzoo export --streaming` will not work for this model: {needs}"


class PredictionWriter(BasePredictionWriter):
    """``seqzoo predict`` writes its outputs to ``<run dir>/predictions.pt``: a dict with the
    concatenated predictions (``"predictions"``, in the data's order) and the number of batches.

    Under DDP every rank predicts its share of the windows; rank 0 gathers them, puts them back
    in the data's order (by the sample indices Lightning tracks) and writes one file."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        super().__init__(write_interval="epoch")
        self.path = Path(run_dir) / "predictions.pt"

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        import torch

        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        indices = batch_indices[0] if batch_indices and isinstance(batch_indices[0], list) and batch_indices[0] \
            and isinstance(batch_indices[0][0], list) else batch_indices
        if trainer.world_size > 1:
            shards: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, ([_cpu(p) for p in outputs], list(indices or [])))
            if not trainer.is_global_zero:
                return
            rows = [(i, _item(pred, j)) for preds, idx in shards for pred, batch in zip(preds, idx)
                    for j, i in enumerate(batch)]
            rows.sort(key=lambda r: r[0])
            items = [r[1] for r in rows]
            same = items and all(isinstance(x, torch.Tensor) and x.shape == items[0].shape for x in items)
            # one tensor when every item is one of a shape; else the items in data order (texts,
            # audio of different lengths, per-note dicts), which prediction_table reads alike
            record = {"predictions": torch.stack(items) if same else items, "batches": sum(len(p) for p, _ in shards)}
        else:
            tensors = [p for p in outputs if isinstance(p, torch.Tensor)]
            record = {"predictions": torch.cat(tensors) if tensors else outputs, "batches": len(outputs)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".partial")
        torch.save(record, tmp)
        os.replace(tmp, self.path)
        print(f"wrote {self.path}")
        write_files = getattr(trainer.datamodule, "prediction_files", None)
        if write_files is not None:  # e.g. separated sources as audio files
            write_files(record["predictions"], self.path.parent / "predictions")
        make_table = getattr(trainer.datamodule, "prediction_table", None)
        table = make_table(record["predictions"]) if make_table is not None else None
        if table is not None:
            csv_path = self.path.with_suffix(".csv")
            tmp = csv_path.with_name(csv_path.name + ".partial")
            table.to_csv(tmp, index=False)
            os.replace(tmp, csv_path)
            print(f"wrote {csv_path} ({len(table)} rows, in the data's units)")


def _cpu(value):
    return value.detach().cpu() if hasattr(value, "detach") else value


class RunCSVLogger(CSVLogger):
    """CSVLogger that appends to the run's ``metrics.csv``.

    Lightning's own deletes the file when its folder is not empty, which would wipe
    the history of a resumed run or of a fit followed by ``seqzoo test``.
    """

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def drop_metric_rows_from(path: str | os.PathLike, step: int) -> int:
    """Drop the rows of a metrics CSV logged at ``step`` or later; returns how many were dropped.

    A run resumed from a checkpoint taken after ``step`` optimiser steps logs those later steps
    again, so ``metrics.csv`` never holds a step twice."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or "step" not in lines[0]:
        return 0
    col = lines[0].index("step")
    keep = [lines[0]] + [row for row in lines[1:] if not (len(row) > col and row[col] and float(row[col]) >= step)]
    if len(keep) == len(lines):
        return 0
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, path)
    return len(lines) - len(keep)


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = [k for k in header if k]

    def _check_log_dir_exists(self) -> None:
        """Keep earlier metrics (the parent deletes them)."""

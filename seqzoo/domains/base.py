"""The task contract shared by every domain.

A task is a LightningModule that *receives* its backbone (LightningCLI subclass
mode) and owns everything around it: input embedding, head, loss, metrics. Its
network is a plain ``nn.Module`` in ``self.net`` (embedding -> backbone -> head),
so that export needs no Lightning.

What a task declares, for ``compare`` and the CLI:

* ``token_kinds``  -- which backbone token kinds it can feed ("time", "variate");
* ``needs_streaming`` -- it calls ``backbone.step`` (world-model imagination);
* ``monitor``/``monitor_mode`` -- the validation metric checkpoints follow;
* ``report_metrics`` -- test metrics that ``compare`` tabulates (first = main);
* ``baseline(datamodule)`` -- the trivial baseline's test metrics, if the domain has one
  (a list of (name, metrics) pairs when it has several); it reads the data only through
  batches and ``datamodule.train_targets()``.

Metrics, one idiom: a task returns its validation/test metrics, unprefixed, from
``make_metrics()`` (a torchmetrics ``MetricCollection``) and calls ``set_metrics()``
once its network is built; that clones them per stage into ``val_metrics`` (``val/``)
and ``test_metrics`` (``test/``). The steps ``update`` them; the default epoch ends log
and reset them (``log_collection``). Sizes reach a task as init arguments of the names
in ``seqzoo.datasets.base.DIM_NAMES`` (the CLI links them from ``datamodule.dims``).

Tasks do not call ``save_hyperparameters``: the resolved config, the data sizes and the
data module's fitted transform go into every checkpoint (``seqzoo.runs.RunRecorder``), and
LightningCLI would re-parse saved hyperparameters on ``--ckpt_path``, clashing with the
linked sizes. ``Task.load_from_checkpoint(path)`` and ``seqzoo.load(path)`` rebuild a trained
task from that record.

Optimiser and scheduler are init arguments (callables, LightningCLI style); the
backbone's ``param_groups()`` keep their own settings and biases/norm weights get
no weight decay.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection

from seqzoo.backbones.base import Backbone
from seqzoo.errors import ConfigError
from seqzoo.export_spec import ExportSpec
from seqzoo.layers import PositionalEmbedding, Positions

Batch = dict[str, Tensor]


class BaseTask(L.LightningModule):
    token_kinds: ClassVar[frozenset[str]] = frozenset({"time"})
    needs_streaming: ClassVar[bool] = False
    monitor: ClassVar[str] = "val/loss"
    monitor_mode: ClassVar[str] = "min"
    report_metrics: ClassVar[tuple[str, ...]] = ()
    report_modes: ClassVar[tuple[str, ...]] = ()
    #: Task settings a family's paper defines for this task -- its own embedding or head --
    #: as {family: {task keyword: value}}. ``compare`` gives a family these unless asked for
    #: the shared embedding/head (``--shared_heads``), which it then labels as a variant.
    paper_forms: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Options of older configs that live elsewhere now: {old key: new dotted key} (the CLI's
    #: error for the old key names the new place).
    moved_options: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        backbone: Backbone,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        reason = self.incompatibility(type(backbone))
        if reason:
            raise ConfigError(f"{type(self).__name__} cannot use backbone {type(backbone).name!r}: {reason}")
        # None -> AdamW with torch's defaults. (A class as the signature's default would leak its
        # init args into a config that names another optimiser: jsonargparse keeps the arguments
        # the new class also accepts, so ``torch.optim.Adam`` silently got AdamW's weight_decay 0.01.)
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.lr_scheduler_factory = lr_scheduler
        # Subclasses build self.net (embedding -> backbone -> head) around the backbone.

    @property
    def backbone(self) -> Backbone:
        return self.net.backbone

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """The trained task of a seqzoo checkpoint (or run folder), rebuilt from the config and data
        sizes stored inside it, in eval mode on the CPU, with ``data_transform`` attached (see
        :func:`seqzoo.load`). Lightning's keyword overrides are not taken: the saved config is the model."""
        from seqzoo.trained import load

        if kwargs or hparams_file is not None:
            raise ConfigError(f"{cls.__name__}.load_from_checkpoint takes no overrides "
                              f"({', '.join(sorted(kwargs)) or 'hparams_file'}): the checkpoint's config rebuilds the model")
        task = load(checkpoint_path)
        if not isinstance(task, cls):
            raise ConfigError(f"{checkpoint_path}: holds a {type(task).__name__}, not a {cls.__name__}")
        return task if map_location is None else task.to(map_location)

    # -- what the task can feed -------------------------------------------------------
    #: The ``dims`` entry that is the number of time tokens the task feeds its backbone, for a
    #: task whose every sample has the same length (None: lengths vary or the task cannot say).
    token_count_dim: ClassVar[str | None] = None

    @classmethod
    def fixed_token_keywords(cls, backbone_cls: type[Backbone], task_args: dict, dims: dict) -> dict[str, Any]:
        """The keywords that build a fixed-token family (``n_tokens``...) for the tokens this
        task feeds, from its init args and the data's ``dims``; ``{}`` where the task cannot
        say (``compare`` then lists the family n/a unless the config sets them). By default:
        ``n_tokens`` from the ``token_count_dim`` entry, for a time-token family."""
        if backbone_cls.tokens == "time" and cls.token_count_dim in dims:
            return {"n_tokens": int(dims[cls.token_count_dim])}
        return {}

    @classmethod
    def incompatibility(cls, backbone_cls: type[Backbone]) -> str | None:
        """Why this task cannot use a backbone family, or None if it can."""
        if backbone_cls.tokens not in cls.token_kinds:
            return f"needs {' or '.join(sorted(cls.token_kinds))} tokens (the backbone mixes {backbone_cls.tokens} tokens)"
        if cls.needs_streaming and not backbone_cls.streaming:
            return "needs a streaming backbone (step/init_state)"
        return None

    # -- the network ------------------------------------------------------------------
    def forward(self, batch: Batch) -> Tensor:
        """Predictions for a batch (the task's output, before any loss)."""
        raise TypeError(f"{type(self).__name__} must define forward(batch)")

    def batch_size_of(self, batch: Batch) -> int:
        return int(next(iter(batch.values())).shape[0])

    def tokens_per_sample(self, batch: Batch) -> int:
        """Sequence positions the backbone mixes per sample (for tokens/s)."""
        first = next(iter(batch.values()))
        return int(first.shape[1]) if first.dim() > 1 else 1

    # -- export -----------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        raise TypeError(f"{type(self).__name__} does not define export_spec()")

    def export_step_spec(self) -> ExportSpec:
        raise ConfigError(f"{type(self).__name__} has no one-step (streaming) export")

    def streaming_requirements(self) -> str | None:
        """None when ``seqzoo export --streaming`` can write this model's one-step graph;
        otherwise what it needs, in words (checked without touching the model, so ``fit`` can
        say it before training). Tasks with a one-step export override it."""
        return (f"{type(self).__name__} has no one-step (streaming) export; "
                "`seqzoo export` writes its whole-input graph")

    # -- baseline ---------------------------------------------------------------------
    def baseline(
        self, datamodule: L.LightningDataModule
    ) -> tuple[str, dict[str, float]] | list[tuple[str, dict[str, float]]] | None:
        """(name, test metrics) of the domain's trivial baseline, a list of such pairs, or None."""
        return None

    # -- optimisation -----------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.param_groups())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config = {"scheduler": scheduler}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    def param_groups(self) -> list[dict]:
        """Backbone-declared groups first; the rest split into decay / no-decay (ndim <= 1)."""
        groups = [dict(g) for g in self.backbone.param_groups()]
        taken = {id(p) for g in groups for p in g["params"]}
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad or id(p) in taken:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups.append({"params": decay})
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return [g for g in groups if len(list(g["params"]))]

    # -- metrics ------------------------------------------------------------------------
    def make_metrics(self) -> MetricCollection:
        """The validation and test metrics, unprefixed (see the module docstring)."""
        raise TypeError(f"{type(self).__name__} does not define make_metrics()")

    def set_metrics(self) -> None:
        """``val_metrics`` and ``test_metrics``: :meth:`make_metrics` cloned with the stage prefixes."""
        metrics = self.make_metrics()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def on_validation_epoch_end(self) -> None:
        if isinstance(getattr(self, "val_metrics", None), MetricCollection):
            self.log_collection(self.val_metrics, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        if isinstance(getattr(self, "test_metrics", None), MetricCollection):
            self.log_collection(self.test_metrics)

    # -- logging ----------------------------------------------------------------------
    def log_metrics(self, stage: str, values: dict[str, Any], batch_size: int, prog_bar: Iterable[str] = ()) -> None:
        bar = set(prog_bar)
        for key, value in values.items():
            self.log(
                f"{stage}/{key}",
                value,
                on_step=stage == "train",
                on_epoch=True,
                prog_bar=key in bar,
                batch_size=batch_size,
                sync_dist=True,
            )

    def log_collection(self, metrics: MetricCollection, prog_bar: bool = False) -> None:
        """Log an epoch's computed metrics (a MetricCollection, keys already prefixed) and reset them."""
        self.log_dict(metrics.compute(), prog_bar=prog_bar, sync_dist=True)
        metrics.reset()


class WindowEncoder(nn.Module):
    """Per-step embedding Linear(C, D) + positions + dropout -> backbone: (B, L, C) -> (B, L, D)."""

    def __init__(self, backbone: Backbone, n_channels: int, length: int, positions: Positions = "sinusoidal",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Linear(n_channels, backbone.d_model)
        self.positions = PositionalEmbedding(positions, length, backbone.d_model)
        self.dropout = nn.Dropout(dropout)
        self.backbone = backbone
        self.length, self.n_channels = length, n_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1:] != (self.length, self.n_channels):
            raise ValueError(f"expected input (B, {self.length}, {self.n_channels}), got {tuple(x.shape)}")
        return self.backbone(self.dropout(self.positions(self.embed(x))))


def fixed_window_spec(module: nn.Module, length: int, n_channels: int, output_names: list[str]) -> ExportSpec:
    """Export spec of a model of fixed-length windows x (B, length, C): the batch stays free."""
    gen = torch.Generator().manual_seed(0)

    def make(batch: int) -> tuple[Tensor]:
        return (torch.randn(batch, length, n_channels, generator=gen),)

    return ExportSpec(module=module, example_inputs=make(2), input_names=["x"], output_names=output_names,
                      dynamic={"x": {0: "batch"}}, check_inputs=[make(2), make(5)])

"""Synthetic diagnostics of memory and selectivity with any causal time-token backbone.

Pipeline: token embedding E[x_t] + positions -> backbone (built causal, so the output at t
sees tokens <= t) -> LayerNorm -> linear answer head, logits (B, L, K) at every position.
Loss and metrics use only the answer positions (targets != -100): cross-entropy

    L = -1/|A| sum_{(b,t) in A} log softmax(z_{b,t})[y_{b,t}],

and torchmetrics' micro accuracy over A (``acc``) plus the share of sequences whose every
answer is right (``seq_acc``). The probes (MQAR, selective copying, the SelectivBench-style
grammar, passkey retrieval) and their papers are in :mod:`seqzoo.datasets.diagnostics`.

Baseline: the best constant predictor, the most frequent answer of the training split (its
log loss uses the training answer frequencies). Export: token ids (B, L) int64 -> logits
(B, L, K), with dynamic batch and length (up to ``seq_len`` with sinusoidal or learned
positions, any length with ``positions="none"``).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask
from seqzoo.errors import ConfigError
from seqzoo.export import ExportSpec
from seqzoo.layers import PositionalEmbedding, Positions

IGNORE = -100


class DiagnosticsNet(nn.Module):
    """Token embedding -> positions -> backbone -> norm -> head: ids (B, L) -> logits (B, L, K)."""

    def __init__(self, backbone: Backbone, vocab_size: int, n_classes: int, max_len: int,
                 positions: Positions = "sinusoidal", embed_dropout: float = 0.0) -> None:
        super().__init__()
        d = backbone.d_model
        self.embed = nn.Embedding(vocab_size, d)
        # N(0, 1) (torch's default): token identity is then as loud as the sinusoidal positions
        # (entries in [-1, 1]) after the first norm, instead of drowned by them.
        self.positions = PositionalEmbedding(positions, max_len, d)
        self.dropout = nn.Dropout(embed_dropout)
        self.backbone = backbone
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_classes)
        self.vocab_size, self.max_len = vocab_size, max_len

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"expected token ids (B, L), got shape {tuple(tokens.shape)}")
        h = self.backbone(self.dropout(self.positions(self.embed(tokens))))
        return self.head(self.norm(h))


class DiagnosticsTask(BaseTask):
    """Answer-position classification over a causal token backbone."""

    monitor = "val/acc"
    monitor_mode = "max"
    report_metrics = ("test/acc", "test/seq_acc", "test/loss")
    report_modes = ("max", "max", "min")

    def __init__(
        self,
        backbone: Backbone,
        vocab_size: int,
        n_classes: int,
        seq_len: int,
        positions: Positions = "sinusoidal",
        embed_dropout: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """
        Args:
            backbone: any time-token backbone built with causal=True.
            vocab_size: input tokens (linked from the data).
            n_classes: answer classes (linked from the data).
            seq_len: longest sequence, sizes the position table (linked from the data).
            positions: sinusoidal, learned or no absolute positions added to the embeddings.
            embed_dropout: dropout on the embedded tokens.
            optimizer: optimiser factory (default: AdamW with torch's defaults).
            lr_scheduler: optional scheduler factory.
        """
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if not backbone.is_causal:
            raise ConfigError(f"DiagnosticsTask needs a causal backbone (the answer at t may only see tokens <= t); "
                              f"build {type(backbone).name!r} with causal: true")
        for name, value, least in (("vocab_size", vocab_size, 2), ("n_classes", n_classes, 2), ("seq_len", seq_len, 1)):
            if value < least:
                raise ConfigError(f"{name} must be >= {least}, got {value}")
        self.net = DiagnosticsNet(backbone, vocab_size, n_classes, seq_len, positions=positions,
                                  embed_dropout=embed_dropout)
        self.n_classes = n_classes
        self.train_acc = MulticlassAccuracy(n_classes, average="micro", ignore_index=IGNORE)
        self.eval_metrics = nn.ModuleDict({
            stage: MetricCollection({
                "acc": MulticlassAccuracy(n_classes, average="micro", ignore_index=IGNORE),
                "seq_acc": MeanMetric(),
                "loss": MeanMetric(),
            }, prefix=f"{stage}/")
            for stage in ("val", "test")
        })

    @classmethod
    def incompatibility(cls, backbone_cls: type[Backbone]) -> str | None:
        reason = super().incompatibility(backbone_cls)
        if reason is None and not backbone_cls.causal:
            return "needs a causal backbone (answers may only see earlier tokens)"
        return reason

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch["tokens"])

    def batch_size_of(self, batch: Batch) -> int:
        return int(batch["tokens"].shape[0])

    def tokens_per_sample(self, batch: Batch) -> int:
        return int(batch["tokens"].shape[1])

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits, targets = self(batch), batch["targets"]
        loss = answer_loss(logits, targets)
        self.train_acc(logits.flatten(0, 1), targets.flatten())
        self.log_metrics("train", {"loss": loss, "acc": self.train_acc}, batch_size=len(targets), prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._update("val", self(batch), batch["targets"])

    def on_validation_epoch_end(self) -> None:
        self.log_collection(self.eval_metrics["val"], prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._update("test", self(batch), batch["targets"])

    def on_test_epoch_end(self) -> None:
        self.log_collection(self.eval_metrics["test"])

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch).argmax(dim=-1)

    def _update(self, stage: str, logits: Tensor, targets: Tensor) -> None:
        metrics = self.eval_metrics[stage]
        metrics["acc"].update(logits.flatten(0, 1), targets.flatten())
        scored = targets != IGNORE
        right = (logits.argmax(-1) == targets) | ~scored
        metrics["seq_acc"].update(right.all(dim=1).float())
        per_answer = F.cross_entropy(logits[scored], targets[scored], reduction="none")
        metrics["loss"].update(per_answer)

    # -- baseline and export ----------------------------------------------------------
    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """The best constant predictor: always the training split's most frequent answer."""
        train = torch.as_tensor(datamodule.answers("train"))
        test = torch.as_tensor(datamodule.answers("test"))
        counts = torch.bincount(train, minlength=self.n_classes).double()
        prior = counts / counts.sum()
        best = int(counts.argmax())
        accuracy = float((test == best).double().mean())
        log_loss = float(-torch.log(prior[test].clamp_min(1e-12)).mean())
        datamodule.setup("test")
        targets = datamodule.test_dataloader().dataset.targets
        seq_acc = float(((targets == best) | (targets == IGNORE)).all(dim=1).double().mean())
        return "most frequent answer", {"test/acc": accuracy, "test/seq_acc": seq_acc, "test/loss": log_loss}

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        gen = torch.Generator().manual_seed(0)
        longest = net.max_len

        def make(batch: int, length: int) -> tuple[Tensor]:
            return (torch.randint(0, net.vocab_size, (batch, length), generator=gen),)

        shorter = max(2, longest // 2)
        return ExportSpec(
            module=net,
            example_inputs=make(2, longest),
            input_names=["tokens"],
            output_names=["logits"],
            dynamic={"tokens": {0: "batch", 1: "length"}},
            check_inputs=[make(2, longest), make(3, shorter)],
        )


def answer_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the answer positions (targets != -100) of (B, L, K) logits."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

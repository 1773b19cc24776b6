"""Protective-behaviour detection with any backbone and the L-SFAN head (Ortigoso-Narro
et al., "L-SFAN: Lightweight spatially-focused attention network for pain behavior
detection", 2024).

Window (B, T, C) of joint angles/energies and sEMG envelopes -> class logits (B, K).
Embedding Linear(C, D) + positions -> backbone (the temporal mixer) -> head:

* ``generic``: mean over time -> LayerNorm -> Linear(D, K);
* ``paper`` (:class:`LSFANHead`): the window is a 2-D time x channel map. Two planes,
  the input window and the backbone's read-out per channel (Linear(D, C)), pass
  through 2-D convolution blocks (k_t x k_c kernels, BatchNorm, ReLU, max-pooling
  over time only); *oriented* global pooling averages over time alone, leaving one
  F-dim feature vector per sensor channel; multi-head self-attention mixes the
  channel vectors (plus a learned channel identity); their mean -> Linear(F, K).

Loss: class-weighted cross-entropy, w_c = N / (K n_c) from the training windows
(``loss="weighted_ce"``), focal loss FL = -w_c (1 - p_t)^gamma log p_t, or plain CE.
Metrics: accuracy, macro F1 (the unweighted mean of the per-class F1), per-class F1,
Matthews correlation (MCC).
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.wrappers import ClasswiseWrapper
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask, WindowEncoder, fixed_window_spec
from seqzoo.errors import ConfigError
from seqzoo.export_spec import ExportSpec
from seqzoo.layers import Positions, SelfAttention


def focal_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al. 2017), mean over the batch: -w_c (1 - p_t)^gamma log p_t."""
    log_p = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    if weight is not None:
        loss = loss * weight[target]
    return loss.mean()


def balanced_class_weights(counts: Tensor) -> Tensor:
    """w_c = N / (K n_c) (scikit-learn's 'balanced'); classes absent from training get weight 0."""
    counts = counts.double()
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.float()


class MatthewsCorrCoef(MulticlassMatthewsCorrCoef):
    """torchmetrics' MCC, defined as 0 where it is 0/0 (predictions or targets of one class).

    That is scikit-learn's convention and torchmetrics' own for K > 2; its binary path
    substitutes an epsilon limit there, which would give a constant predictor MCC > 0.
    """

    def compute(self) -> Tensor:
        confmat = self.confmat
        if int((confmat.sum(0) > 0).sum()) < 2 or int((confmat.sum(1) > 0).sum()) < 2:
            return torch.zeros((), device=confmat.device)
        return super().compute()


def classification_metrics(n_classes: int) -> MetricCollection:
    """Accuracy, macro F1 and MCC over all windows."""
    return MetricCollection({
        "acc": MulticlassAccuracy(n_classes, average="micro"),
        "f1_macro": MulticlassF1Score(n_classes, average="macro"),
        "mcc": MatthewsCorrCoef(n_classes),
    })


class LSFANHead(nn.Module):
    """2-D convolutions over the time x channel map, oriented (temporal) global pooling,
    multi-head self-attention over per-channel features."""

    def __init__(self, d_model: int, n_channels: int, n_classes: int, filters: int = 16,
                 kernel: tuple[int, int] = (5, 3), n_blocks: int = 2, n_heads: int = 4, time_pool: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise ConfigError(f"lsfan_kernel must be odd in both axes (same padding), got {tuple(kernel)}")
        self.readout = nn.Linear(d_model, n_channels)
        blocks: list[nn.Module] = []
        for i in range(n_blocks):
            blocks += [nn.Conv2d(2 if i == 0 else filters, filters, kernel, padding=(kernel[0] // 2, kernel[1] // 2)),
                       nn.BatchNorm2d(filters), nn.ReLU()]
            if time_pool > 1:
                blocks.append(nn.MaxPool2d((time_pool, 1), ceil_mode=True))
        self.conv = nn.Sequential(*blocks)
        self.channel_identity = nn.Parameter(torch.zeros(n_channels, filters))
        nn.init.trunc_normal_(self.channel_identity, std=0.02)
        self.norm_attn, self.norm_out = nn.LayerNorm(filters), nn.LayerNorm(filters)
        self.attention = SelfAttention(filters, n_heads)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(filters, n_classes))

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        planes = torch.stack([x, self.readout(h)], dim=1)  # (B, 2, T, C)
        maps = self.conv(planes)  # (B, F, T', C)
        tokens = maps.mean(dim=2).transpose(1, 2) + self.channel_identity  # oriented pooling -> (B, C, F)
        tokens = tokens + self.attention(self.norm_attn(tokens))
        return self.classifier(self.norm_out(tokens).mean(dim=1))


class PainNet(nn.Module):
    """Embedding -> backbone -> generic or L-SFAN head: (B, T, C) -> logits (B, K)."""

    def __init__(self, backbone: Backbone, n_channels: int, seq_len: int, n_classes: int,
                 head: Literal["paper", "generic"] = "paper", positions: Positions = "sinusoidal",
                 embed_dropout: float = 0.0, **lsfan) -> None:
        super().__init__()
        if head not in ("paper", "generic"):
            raise ConfigError(f"head must be 'paper' (L-SFAN) or 'generic', got {head!r}")
        d = backbone.d_model
        self.n_channels, self.seq_len, self.head_kind = n_channels, seq_len, head
        self.encoder = WindowEncoder(backbone, n_channels, seq_len, positions, embed_dropout)
        if head == "paper":
            self.head = LSFANHead(d, n_channels, n_classes, **lsfan)
        else:
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, n_classes))

    @property
    def backbone(self) -> Backbone:
        return self.encoder.backbone

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(x)
        return self.head(x, h) if self.head_kind == "paper" else self.head(h.mean(dim=1))


class PainTask(BaseTask):
    """Window classification (protective / not, or K activities), split by subject."""

    monitor = "val/mcc"
    monitor_mode = "max"
    report_metrics = ("test/mcc", "test/f1_macro", "test/acc")
    report_modes = ("max", "max", "max")
    token_count_dim = "seq_len"  # one token per window step

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        seq_len: int,
        n_classes: int = 2,
        head: Literal["paper", "generic"] = "paper",
        loss: Literal["weighted_ce", "focal", "ce"] = "weighted_ce",
        focal_gamma: float = 2.0,
        lsfan_filters: int = 16,
        lsfan_kernel: tuple[int, int] = (5, 3),
        lsfan_blocks: int = 2,
        lsfan_heads: int = 4,
        lsfan_time_pool: int = 2,
        head_dropout: float = 0.1,
        positions: Positions = "sinusoidal",
        embed_dropout: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if loss not in ("weighted_ce", "focal", "ce"):
            raise ConfigError(f"loss must be 'weighted_ce', 'focal' or 'ce', got {loss!r}")
        lsfan = dict(filters=lsfan_filters, kernel=tuple(lsfan_kernel), n_blocks=lsfan_blocks, n_heads=lsfan_heads,
                     time_pool=lsfan_time_pool, dropout=head_dropout) if head == "paper" else {}
        self.net = PainNet(backbone, n_channels, seq_len, n_classes, head=head, positions=positions,
                           embed_dropout=embed_dropout, **lsfan)
        self.n_classes, self.loss_kind, self.focal_gamma = n_classes, loss, focal_gamma
        self.register_buffer("class_weights", torch.ones(n_classes))
        self.set_metrics()

    def make_metrics(self) -> MetricCollection:
        """:func:`classification_metrics` and the F1 of each class (``f1_class<k>``)."""
        per_class = ClasswiseWrapper(MulticlassF1Score(self.n_classes, average="none"), prefix="f1_class")
        return MetricCollection({**classification_metrics(self.n_classes), "f1_class": per_class})

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch["x"])

    def on_fit_start(self) -> None:
        """Class weights from the training windows (kept in the checkpoint)."""
        if self.loss_kind == "ce":
            return
        counts = torch.bincount(self.trainer.datamodule.train_targets().long(), minlength=self.n_classes)
        self.class_weights.copy_(balanced_class_weights(counts).to(self.class_weights))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.loss_kind == "focal":
            return focal_loss(logits, target, self.class_weights, self.focal_gamma)
        weight = self.class_weights if self.loss_kind == "weighted_ce" else None
        return F.cross_entropy(logits, target, weight=weight)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self.loss(self(batch), batch["label"])
        self.log_metrics("train", {"loss": loss}, batch_size=batch["x"].shape[0], prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits = self(batch)
        self.val_metrics.update(logits, batch["label"])
        self.log_metrics("val", {"loss": self.loss(logits, batch["label"])}, batch_size=batch["x"].shape[0])

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(self(batch), batch["label"])

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Class probabilities (items, classes); ``seqzoo predict`` tabulates them with class names."""
        return self(batch).softmax(dim=-1)

    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Predict the training windows' majority class for every test window."""
        majority = int(torch.bincount(datamodule.train_targets().long(), minlength=self.n_classes).argmax())
        metrics = classification_metrics(self.n_classes).clone(prefix="test/")
        for batch in datamodule.test_dataloader():
            metrics.update(torch.full_like(batch["label"], majority), batch["label"])
        return f"majority class ({majority})", {k: float(v) for k, v in metrics.compute().items()}

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        return fixed_window_spec(net, net.seq_len, net.n_channels, ["logits"])

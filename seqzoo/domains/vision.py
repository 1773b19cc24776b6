"""Image classification with any time-token backbone (ViR, ViT-style, recurrent...) or a 2-D one (ViM2).

Pipeline: patch embedding (timm's ``PatchEmbed``: a PxP convolution with stride P) ->
positions -> backbone over the patch tokens -> head. With ``pool="cls"`` (default) a
learned class token is appended **last**, after the patches, and the head reads the
backbone's output there: a causal backbone (ViR, Aaren, GRU...) then sees every patch
before it. ``pool="mean"`` averages the patch outputs instead (no class token). A backbone
of token kind ``"image"`` (ViM2) mixes the H x W patch grid in 2-D: it takes the patches
alone (``pool="mean"``, global average pooling) and is built for their grid.

Loss: cross-entropy (optional label smoothing). Metrics: top-1 accuracy (torchmetrics),
loss, and test throughput in images/s. Baseline: the training split's majority class
(its log loss uses the training class frequencies). Export: dynamic batch; the image
size is fixed by the learned position table.
"""

from __future__ import annotations

import time
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from timm.layers import PatchEmbed, trunc_normal_
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask
from seqzoo.errors import ConfigError
from seqzoo.export_spec import ExportSpec
from seqzoo.layers import PositionalEmbedding, Positions

Pool = Literal["cls", "mean"]


class VisionNet(nn.Module):
    """Patch embedding -> backbone -> linear head on plain tensors: (B, C, H, W) -> logits (B, K)."""

    def __init__(
        self,
        backbone: Backbone,
        n_classes: int,
        image_size: int,
        in_chans: int,
        patch_size: int = 2,
        pool: Pool = "cls",
        positions: Positions = "learned",
        embed_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ConfigError(f"patch_size ({patch_size}) must divide image_size ({image_size})")
        if pool not in ("cls", "mean"):
            raise ConfigError(f"pool must be 'cls' or 'mean', got {pool!r}")
        d = backbone.d_model
        self.backbone = backbone
        self.pool = pool
        self.image_size, self.in_chans = image_size, in_chans
        self.patch_embed = PatchEmbed(img_size=image_size, patch_size=patch_size, in_chans=in_chans, embed_dim=d)
        self.n_patches = self.patch_embed.num_patches
        if type(backbone).tokens == "image":  # a 2-D model of the patch grid (ViM2): no class token
            _check_image_backbone(backbone, pool, self.n_patches, image_size // patch_size)
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            trunc_normal_(self.cls_token, std=0.02)
        self.positions = PositionalEmbedding(positions, self.n_tokens, d)
        self.dropout = nn.Dropout(embed_dropout)
        self.head = nn.Linear(d, n_classes)

    @property
    def n_tokens(self) -> int:
        return self.n_patches + (self.pool == "cls")

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or tuple(images.shape[1:]) != (self.in_chans, self.image_size, self.image_size):
            raise ValueError(f"expected images (B, {self.in_chans}, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        tokens = self.patch_embed(images)  # (B, N, D), patches in raster order
        if self.pool == "cls":
            tokens = torch.cat([tokens, self.cls_token.expand(tokens.shape[0], -1, -1)], dim=1)
        h = self.backbone(self.dropout(self.positions(tokens)))
        return self.head(h[:, -1] if self.pool == "cls" else h.mean(dim=1))


def _check_image_backbone(backbone: Backbone, pool: str, n_patches: int, width: int) -> None:
    name = type(backbone).name
    if pool != "mean":
        raise ConfigError(f"backbone {name!r} mixes the image's patch grid, which a class token would break: "
                          f"set model.pool to 'mean' (global average pooling), got {pool!r}")
    if (backbone.n_tokens, backbone.grid_width) != (n_patches, width):
        raise ConfigError(f"backbone {name!r} was built for {backbone.n_tokens} patches, {backbone.grid_width} per row; "
                          f"the images give {n_patches} patches, {width} per row (image_size / patch_size): set its "
                          f"n_tokens and grid_width")


class MeanCrossEntropy(MeanMetric):
    """The mean cross-entropy of logits (B, K) against labels (B,) over all samples."""

    def update(self, logits: Tensor, labels: Tensor) -> None:
        super().update(F.cross_entropy(logits, labels, reduction="none"))


class VisionTask(BaseTask):
    """Top-1 image classification over patch tokens."""

    token_kinds = frozenset({"time", "image"})
    monitor = "val/acc"
    monitor_mode = "max"
    report_metrics = ("test/acc", "test/loss")
    report_modes = ("max", "min")
    # ViM2 (Behrouz et al. 2024) reads out by global average pooling over the patch grid
    paper_forms = {"vim2": {"pool": "mean"}}

    @classmethod
    def fixed_token_keywords(cls, backbone_cls, task_args: dict, dims: dict) -> dict:
        """The patch grid (image_size / patch_size per side), plus the class token when pooled by it."""
        if "image_size" not in dims:
            return {}
        side = dims["image_size"] // task_args.get("patch_size", 2)
        if backbone_cls.tokens == "image":
            return {"n_tokens": side * side, "grid_width": side}
        return {"n_tokens": side * side + (task_args.get("pool", "cls") == "cls")}

    def __init__(
        self,
        backbone: Backbone,
        n_classes: int,
        image_size: int,
        in_chans: int,
        patch_size: int = 2,
        pool: Pool = "cls",
        positions: Positions = "learned",
        embed_dropout: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if n_classes < 2:
            raise ConfigError(f"n_classes must be >= 2, got {n_classes}")
        self.label_smoothing = label_smoothing
        self.net = VisionNet(backbone, n_classes, image_size, in_chans, patch_size=patch_size, pool=pool,
                             positions=positions, embed_dropout=embed_dropout)
        self.train_acc = MulticlassAccuracy(n_classes, top_k=1, average="micro")
        self.n_classes = n_classes
        self.set_metrics()
        self._test_images, self._test_seconds = 0, 0.0

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch["image"])

    def tokens_per_sample(self, batch: Batch) -> int:
        return self.net.n_tokens

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)
        self.train_acc(logits, batch["label"])
        self.log_metrics("train", {"loss": loss, "acc": self.train_acc}, batch_size=len(logits), prog_bar=["loss"])
        return loss

    def make_metrics(self) -> MetricCollection:
        """Top-1 accuracy and the mean cross-entropy (no label smoothing) of logits against labels."""
        return MetricCollection({"acc": MulticlassAccuracy(self.n_classes, top_k=1, average="micro"),
                                 "loss": MeanCrossEntropy()})

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.val_metrics.update(self(batch), batch["label"])

    def on_test_epoch_start(self) -> None:
        self._test_images, self._test_seconds = 0, 0.0

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        _synchronize(self.device)
        start = time.perf_counter()
        logits = self(batch)
        _synchronize(self.device)
        self._test_seconds += time.perf_counter() - start
        self._test_images += len(logits)
        self.test_metrics.update(logits, batch["label"])

    def on_test_epoch_end(self) -> None:
        values = dict(self.test_metrics.compute())
        self.test_metrics.reset()
        if self._test_seconds > 0:
            values["test/images_per_s"] = torch.tensor(self._test_images / self._test_seconds)
        self.log_dict(values, sync_dist=True)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Class probabilities (items, classes); ``seqzoo predict`` tabulates them with class names."""
        return self(batch).softmax(dim=-1)

    # -- baseline and export ----------------------------------------------------------
    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Always predict the training split's most frequent class."""
        counts = torch.bincount(datamodule.train_targets().long(), minlength=self.net.head.out_features).double()
        test = torch.cat([batch["label"] for batch in datamodule.test_dataloader()])
        prior = counts / counts.sum()
        accuracy = float((test == counts.argmax()).double().mean())
        log_loss = float(-torch.log(prior[test].clamp_min(1e-12)).mean())
        return "majority class", {"test/acc": accuracy, "test/loss": log_loss}

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        gen = torch.Generator().manual_seed(0)

        def make(b: int) -> tuple[Tensor]:
            return (torch.randn(b, net.in_chans, net.image_size, net.image_size, generator=gen),)

        return ExportSpec(
            module=net,
            example_inputs=make(2),
            input_names=["images"],
            output_names=["logits"],
            # The learned position table fixes the number of patches: only the batch is free.
            dynamic={"images": {0: "batch"}},
            check_inputs=[make(2), make(5)],
        )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

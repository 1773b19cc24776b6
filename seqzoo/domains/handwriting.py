"""Handwriting recognition from a sensor pen (OnHW): IMU (B, T, 13) -> text or character.

Both tasks embed the normalised IMU sequence with a small convolutional front end
(Conv1d kernel 5, GELU; ``downsample`` of them with stride 2, as the CNN front of the
OnHW CNN+BiLSTM baselines), add sinusoidal positions and run the backbone over the
frames (padding masked).

* :class:`HandwritingCTCTask` -- sequence recognition: a linear head to
  ``n_classes + 1`` log-probabilities per frame, CTC loss (blank 0,
  ``zero_infinity=True``), greedy decoding (best path, repeats merged, blanks
  dropped), corpus-level CER and WER (torchmetrics). CTC needs at least
  ``len(label) + repeated neighbours`` frames; a sample whose output is shorter is an
  error naming it, not a silently zeroed loss. Baseline: the untrained model.
* :class:`HandwritingCharTask` -- single-character classification: masked mean over
  frames, a linear head, cross-entropy, accuracy. Baseline: the majority class.
"""

from __future__ import annotations


import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import CharErrorRate, WordErrorRate

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask
from seqzoo.errors import ConfigError
from seqzoo.export_spec import ExportSpec
from seqzoo.layers import sinusoidal_positions

KERNEL = 5


class IMUEncoder(nn.Module):
    """(B, T, C) -> (B, T', d_model) with T' = ceil(T / 2^downsample); frame lengths alike."""

    def __init__(self, n_channels: int, d_model: int, downsample: int = 2, positions: bool = True) -> None:
        super().__init__()
        if downsample < 0:
            raise ConfigError(f"downsample must be >= 0 (stride-2 layers), got {downsample}")
        self.strides = [2] * downsample or [1]
        layers, width = [], n_channels
        for stride in self.strides:
            layers += [nn.Conv1d(width, d_model, KERNEL, stride=stride, padding=KERNEL // 2), nn.GELU()]
            width = d_model
        self.convs = nn.Sequential(*layers)
        self.positions = positions

    def out_lengths(self, lengths: Tensor) -> Tensor:
        for stride in self.strides:
            lengths = (lengths + 2 * (KERNEL // 2) - KERNEL) // stride + 1
        return lengths

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.convs(x.transpose(1, 2)).transpose(1, 2)
        if self.positions:
            h = h + sinusoidal_positions(h.shape[1], h.shape[2]).to(h)
        mask = None
        if lengths is not None:
            mask = torch.arange(h.shape[1], device=h.device)[None, :] < self.out_lengths(lengths)[:, None]
        return h, mask


class CTCRecognitionNet(nn.Module):
    """Encoder -> backbone -> per-frame log-probabilities over blank + characters."""

    def __init__(self, backbone: Backbone, n_channels: int, n_classes: int, downsample: int = 2,
                 positions: bool = True) -> None:
        super().__init__()
        self.encoder = IMUEncoder(n_channels, backbone.d_model, downsample, positions)
        self.backbone = backbone
        self.head = nn.Linear(backbone.d_model, n_classes + 1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, mask = self.encoder(x, lengths)
        return F.log_softmax(self.head(self.backbone(h, mask)), dim=-1)


class CharacterNet(nn.Module):
    """Encoder -> backbone -> mean over valid frames -> class logits."""

    def __init__(self, backbone: Backbone, n_channels: int, n_classes: int, downsample: int = 1,
                 positions: bool = True) -> None:
        super().__init__()
        self.encoder = IMUEncoder(n_channels, backbone.d_model, downsample, positions)
        self.backbone = backbone
        self.head = nn.Linear(backbone.d_model, n_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h, mask = self.encoder(x, lengths)
        h = self.backbone(h, mask)
        if mask is None:
            return self.head(h.mean(dim=1))
        weights = mask.to(h.dtype)[..., None]
        return self.head((h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0))


class _HandwritingTask(BaseTask):
    """What both handwriting tasks share: sizes, alphabet, export."""

    def __init__(self, backbone: Backbone, n_classes: int, n_channels: int, alphabet: str | None,
                 optimizer: OptimizerCallable, lr_scheduler: LRSchedulerCallable | None) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if alphabet is not None and len(alphabet) != n_classes:
            raise ConfigError(f"alphabet has {len(alphabet)} characters but n_classes is {n_classes}")
        self.n_channels, self.n_classes = n_channels, n_classes
        # Without the data's alphabet, ids still decode to distinct symbols (CER is unchanged).
        self.alphabet = alphabet or "".join(chr(0x2460 + i) for i in range(n_classes))

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch["x"], batch.get("lengths"))

    def tokens_per_sample(self, batch: Batch) -> int:
        return int(batch["x"].shape[1])

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        gen = torch.Generator().manual_seed(0)

        def make(b: int, n: int) -> tuple[Tensor]:
            return (torch.randn(b, n, self.n_channels, generator=gen),)

        return ExportSpec(module=net, example_inputs=make(2, 120), input_names=["x"], output_names=["y"],
                          dynamic={"x": {0: "batch", 1: "length"}}, check_inputs=[make(2, 120), make(3, 157)])


class HandwritingCTCTask(_HandwritingTask):
    """Sequence recognition (words, equations) with CTC and greedy decoding."""

    monitor = "val/cer"
    monitor_mode = "min"
    report_metrics = ("test/cer", "test/wer")
    report_modes = ("min", "min")

    def __init__(
        self,
        backbone: Backbone,
        n_classes: int,
        n_channels: int = 13,
        alphabet: str | None = None,
        downsample: int = 2,
        positions: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, n_classes, n_channels, alphabet, optimizer, lr_scheduler)
        self.net = CTCRecognitionNet(backbone, n_channels, n_classes, downsample, positions)
        self.set_metrics()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"cer": CharErrorRate(), "wer": WordErrorRate()})

    def ctc_loss(self, batch: Batch, log_probs: Tensor | None = None, frames: Tensor | None = None) -> Tensor:
        """CTC loss of the batch; ``log_probs`` (``self(batch)``) and ``frames`` (output lengths)
        are computed here unless given."""
        log_probs = self(batch) if log_probs is None else log_probs
        frames = self.net.encoder.out_lengths(batch["lengths"]) if frames is None else frames
        check_ctc_lengths(frames, batch["targets"], batch["target_lengths"], batch["lengths"])
        return F.ctc_loss(log_probs.transpose(0, 1), batch["targets"], frames, batch["target_lengths"],
                          blank=0, zero_infinity=True)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self.ctc_loss(batch)
        self.log_metrics("train", {"loss": loss}, batch_size=batch["x"].shape[0], prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        log_probs, frames = self(batch), self.net.encoder.out_lengths(batch["lengths"])
        self.log_metrics("val", {"loss": self.ctc_loss(batch, log_probs, frames)}, batch_size=batch["x"].shape[0])
        self.val_metrics.update(*self._texts(batch, log_probs, frames))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(*self._texts(batch))

    def predict_step(self, batch: Batch, batch_idx: int) -> tuple[str, ...]:
        """The greedy CTC transcription of each sequence (a tuple per batch)."""
        return tuple(self._texts(batch)[0])

    def _texts(self, batch: Batch, log_probs: Tensor | None = None,
               frames: Tensor | None = None) -> tuple[list[str], list[str]]:
        frames = self.net.encoder.out_lengths(batch["lengths"]) if frames is None else frames
        predicted = greedy_decode(self(batch) if log_probs is None else log_probs, frames)
        decode = lambda ids: "".join(self.alphabet[i - 1] for i in ids)  # noqa: E731
        targets = [batch["targets"][b, :n].tolist() for b, n in enumerate(batch["target_lengths"].tolist())]
        return [decode(p) for p in predicted], [decode(t) for t in targets]

    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """The same network untrained (its random initialisation), decoded greedily."""
        datamodule.setup("test")
        metrics = self.test_metrics.clone()
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for batch in datamodule.test_dataloader():
                metrics.update(*self._texts(batch))
        self.train(was_training)
        return "untrained model", {k: float(v) for k, v in metrics.compute().items()}


class HandwritingCharTask(_HandwritingTask):
    """Single-character classification with cross-entropy."""

    monitor = "val/accuracy"
    monitor_mode = "max"
    report_metrics = ("test/accuracy",)
    report_modes = ("max",)

    def __init__(
        self,
        backbone: Backbone,
        n_classes: int,
        n_channels: int = 13,
        alphabet: str | None = None,
        downsample: int = 1,
        positions: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, n_classes, n_channels, alphabet, optimizer, lr_scheduler)
        self.net = CharacterNet(backbone, n_channels, n_classes, downsample, positions)
        self.set_metrics()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"accuracy": MulticlassAccuracy(self.n_classes, average="micro")})

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = F.cross_entropy(logits, character_labels(batch))
        self.log_metrics("train", {"loss": loss}, batch_size=logits.shape[0], prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits, labels = self(batch), character_labels(batch)
        self.val_metrics.update(logits, labels)
        self.log_metrics("val", {"loss": F.cross_entropy(logits, labels)}, batch_size=logits.shape[0])

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(self(batch), character_labels(batch))

    def predict_step(self, batch: Batch, batch_idx: int) -> tuple[str, ...]:
        """The predicted character of each sequence (a tuple per batch)."""
        return tuple(self.alphabet[i] for i in self(batch).argmax(-1).tolist())

    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Always the most frequent training character."""
        majority = int(torch.bincount(datamodule.train_targets()).argmax())
        test = torch.cat([batch["targets"][:, 0] for batch in datamodule.test_dataloader()])
        return "majority class", {"test/accuracy": float((test == majority).double().mean())}


# ---------------------------------------------------------------------------------------
# CTC helpers
# ---------------------------------------------------------------------------------------


def check_ctc_lengths(frames: Tensor, targets: Tensor, target_lengths: Tensor, lengths: Tensor | None = None) -> None:
    """Every sample needs ``len(label) + repeated neighbours`` output frames for CTC."""
    repeats = ((targets[:, 1:] == targets[:, :-1]) & (targets[:, 1:] != 0)).sum(dim=1)
    needed = target_lengths + repeats
    short = torch.nonzero(frames < needed).flatten()
    if len(short):
        b = int(short[0])
        raise ConfigError(
            f"CTC: sample {b} of the batch gives {int(frames[b])} output frames"
            + (f" (from {int(lengths[b])} input steps)" if lengths is not None else "")
            + f" but its label of {int(target_lengths[b])} characters ({int(repeats[b])} repeated neighbours) "
            f"needs at least {int(needed[b])}; lower the task's downsample or drop such samples"
            + (f" ({len(short)} samples in this batch are too short)" if len(short) > 1 else "")
        )


def greedy_decode(log_probs: Tensor, frames: Tensor | None = None) -> list[list[int]]:
    """Best-path decoding: argmax per frame, merge repeats, drop blanks (0)."""
    best = log_probs.argmax(dim=-1)
    out = []
    for b in range(best.shape[0]):
        path = best[b, : int(frames[b])] if frames is not None else best[b]
        merged = torch.unique_consecutive(path)
        out.append([int(i) for i in merged if i != 0])
    return out


def character_labels(batch: Batch) -> Tensor:
    if bool((batch["target_lengths"] != 1).any()):
        raise ConfigError(
            f"character classification needs single-character labels; this data has labels of up to "
            f"{int(batch['target_lengths'].max())} characters (use HandwritingCTCTask for words)"
        )
    return batch["targets"][:, 0] - 1

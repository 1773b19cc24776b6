"""Monaural speech separation, MossFormer2-style: mixture (B, T) -> sources (B, S, T).

Pipeline (Zhao et al. 2024, after Conv-TasNet / SepFormer): a learned filterbank
encoder w = ReLU(Conv1d_{K=16, stride 8}(x)) with ``n_filters`` filters; a mask
network -- per-frame LayerNorm, Linear to d_model, scaled sinusoidal positions, the
backbone (with a skip around it), PReLU, Linear to S x d_model, the gated output
tanh(W_a h) * sigmoid(W_b h), Linear to ``n_filters`` and ReLU -- giving one mask
m_s per source; and a ConvTranspose1d decoder, s_hat_s = Dec(m_s * w).

Loss: negative SI-SNR with utterance-level permutation-invariant training (the best
source order per example, torchmetrics' PIT). Metrics on whole test utterances:
SI-SNRi = SI-SNR(s_hat, s) - SI-SNR(x, s) and SDRi (BSS-eval SDR, torchmetrics),
averaged over sources and utterances, and the SI-SNR itself. The trivial baseline
is the mixture as every estimate: SI-SNRi = SDRi = 0 by definition; its SI-SNR is
reported. Padded batches carry ``lengths``: frames past an utterance's end are
masked in the backbone and zeroed before decoding, and metrics use only valid
samples, so a padded batch gives what each utterance gives alone.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.functional.audio import (
    permutation_invariant_training,
    pit_permutate,
    scale_invariant_signal_noise_ratio,
    signal_distortion_ratio,
)

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask
from seqzoo.errors import ConfigError
from seqzoo.export_spec import ExportSpec
from seqzoo.layers import make_norm, sinusoidal_positions


class SeparationNet(nn.Module):
    """Conv1d encoder -> masks from the backbone -> ConvTranspose1d decoder, on plain tensors."""

    def __init__(self, backbone: Backbone, n_sources: int = 2, n_filters: int = 512, kernel_size: int = 16,
                 stride: int = 8, positions: bool = True) -> None:
        super().__init__()
        if n_sources < 1 or n_filters < 1:
            raise ConfigError(f"n_sources and n_filters must be >= 1, got {n_sources}, {n_filters}")
        if not 1 <= stride <= kernel_size:
            raise ConfigError(f"stride must be in [1, kernel_size], got stride {stride}, kernel_size {kernel_size}")
        d = backbone.d_model
        self.n_sources, self.kernel_size, self.stride = n_sources, kernel_size, stride
        self.encoder = nn.Conv1d(1, n_filters, kernel_size, stride=stride, bias=False)
        self.norm = make_norm("layer", n_filters)
        self.proj_in = nn.Linear(n_filters, d)
        self.position_scale = nn.Parameter(torch.ones(1)) if positions else None
        self.backbone = backbone
        self.act = nn.PReLU()
        self.proj_out = nn.Linear(d, d * n_sources)
        self.gate_value = nn.Linear(d, d)
        self.gate = nn.Linear(d, d)
        self.to_mask = nn.Linear(d, n_filters, bias=False)
        self.decoder = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=stride, bias=False)
        with torch.no_grad():  # start from the encoder's transpose: an untrained model returns ~ the mixture
            self.decoder.weight.copy_(self.encoder.weight * (stride / kernel_size))

    def n_frames(self, n_samples):
        """Encoder frames covering ``n_samples`` (the input is zero-padded to a whole frame)."""
        return (n_samples - self.kernel_size + self.stride - 1) // self.stride + 1

    def forward(self, mix: Tensor, lengths: Tensor | None = None) -> Tensor:
        B, T = mix.shape
        if T < self.kernel_size - self.stride + 1:
            raise ValueError(f"a mixture needs at least {self.kernel_size - self.stride + 1} samples, got {T}")
        n_frames = self.n_frames(T)
        padded = F.pad(mix, (0, (n_frames - 1) * self.stride + self.kernel_size - T))
        w = F.relu(self.encoder(padded[:, None, :])).transpose(1, 2)  # (B, F, N)
        frame_mask = None
        if lengths is not None and not bool((lengths >= T).all()):  # a batch of whole crops needs no mask
            frame_mask = torch.arange(n_frames, device=mix.device)[None, :] < self.n_frames(lengths)[:, None]
        h = self.proj_in(self.norm(w))
        if self.position_scale is not None:
            h = h + self.position_scale * sinusoidal_positions(n_frames, h.shape[-1]).to(h)
        h = h + self.backbone(h, frame_mask)
        h = self.proj_out(self.act(h)).view(B, n_frames, self.n_sources, -1)
        masks = F.relu(self.to_mask(torch.tanh(self.gate_value(h)) * torch.sigmoid(self.gate(h))))  # (B, F, S, N)
        separated = w[:, :, None, :] * masks
        if frame_mask is not None:
            separated = separated * frame_mask[:, :, None, None].to(separated.dtype)
        separated = separated.permute(0, 2, 3, 1).reshape(B * self.n_sources, -1, n_frames)
        return self.decoder(separated).view(B, self.n_sources, -1)[..., :T]


class SeparationTask(BaseTask):
    """Speech separation with any time-token backbone as the mask network."""

    monitor = "val/si_snri"
    monitor_mode = "max"
    report_metrics = ("test/si_snri", "test/sdri", "test/si_snr")
    report_modes = ("max", "max", "max")

    def __init__(
        self,
        backbone: Backbone,
        n_sources: int = 2,
        n_filters: int = 512,
        kernel_size: int = 16,
        stride: int = 8,
        positions: bool = True,
        sdr_filter_length: int = 512,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.net = SeparationNet(backbone, n_sources, n_filters, kernel_size, stride, positions)
        self.sdr_filter_length = sdr_filter_length
        self.set_metrics()
        # Validation scores SI-SNR(i) only: BSS-eval SDR solves a Toeplitz system per source
        # and utterance (the slowest part of an epoch); the monitor is SI-SNRi.
        self.val_metrics["scores"].with_sdr = False

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"scores": SeparationScores(self.sdr_filter_length)})

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch["mix"], batch.get("lengths"))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        si_snr, _ = pit_si_snr(self(batch), batch["sources"], batch.get("lengths"))
        loss = -si_snr.mean()
        self.log_metrics("train", {"loss": loss, "si_snr": si_snr.mean()}, batch_size=si_snr.shape[0],
                         prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        estimate = self(batch)
        si_snr, _ = pit_si_snr(estimate, batch["sources"], batch.get("lengths"))
        self.log_metrics("val", {"loss": -si_snr.mean()}, batch_size=batch["mix"].shape[0])
        self.val_metrics.update(estimate, batch["sources"], batch["mix"], batch.get("lengths"))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(self(batch), batch["sources"], batch["mix"], batch.get("lengths"))

    def predict_step(self, batch: Batch, batch_idx: int) -> tuple[Tensor, ...]:
        """One (n_sources, samples) estimate per mixture, cut to the mixture's own length (a
        tuple: mixtures differ in length, so a batch's estimates are not one tensor)."""
        estimates = self(batch).detach().cpu()
        lengths = batch.get("lengths")
        return tuple(estimates[b, :, : int(lengths[b])] if lengths is not None else estimates[b]
                     for b in range(len(estimates)))

    # -- baseline and export ----------------------------------------------------------
    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """The mixture itself as every source estimate (SI-SNRi = SDRi = 0 by definition)."""
        datamodule.setup("test")
        total: dict[str, list[Tensor]] = {}
        for batch in datamodule.test_dataloader():
            estimate = batch["mix"][:, None, :].expand_as(batch["sources"])
            scores = separation_scores(estimate, batch["sources"], batch["mix"], batch.get("lengths"),
                                       sdr_filter_length=self.sdr_filter_length)
            for key, value in scores.items():
                total.setdefault(key, []).append(value)
        means = {key: float(torch.cat(v).mean()) for key, v in total.items()}
        return "mixture as estimate", {f"test/{k}": means[k] for k in ("si_snri", "sdri", "si_snr")}

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        gen = torch.Generator().manual_seed(0)

        def make(b: int, n: int) -> tuple[Tensor]:
            return (0.1 * torch.randn(b, n, generator=gen),)

        return ExportSpec(
            module=net,
            example_inputs=make(2, 1600),
            input_names=["mix"],
            output_names=["sources"],
            dynamic={"mix": {0: "batch", 1: "samples"}},
            # lengths that are and are not a whole number of encoder frames
            check_inputs=[make(2, 1600), make(3, 2403), make(1, 805)],
        )


# ---------------------------------------------------------------------------------------
# PIT SI-SNR and evaluation scores
# ---------------------------------------------------------------------------------------


class SeparationScores(Metric):
    """Mean per-utterance SI-SNR, SI-SNRi and (``with_sdr``) BSS-eval SDR, SDRi in dB over an
    epoch (:func:`separation_scores`); sums and counts, so ranks reduce exactly under DDP."""

    full_state_update = False
    KEYS = ("si_snr", "si_snri", "sdr", "sdri")

    def __init__(self, sdr_filter_length: int = 512, with_sdr: bool = True) -> None:
        super().__init__()
        self.sdr_filter_length = sdr_filter_length
        self.with_sdr = with_sdr
        for key in self.KEYS:
            self.add_state(f"sum_{key}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, estimate: Tensor, sources: Tensor, mix: Tensor, lengths: Tensor | None = None) -> None:
        scores = separation_scores(estimate, sources, mix, lengths, sdr=self.with_sdr,
                                   sdr_filter_length=self.sdr_filter_length)
        for key, value in scores.items():
            total = getattr(self, f"sum_{key}")
            setattr(self, f"sum_{key}", total + value.double().sum())
        self.count += scores["si_snr"].numel()

    def compute(self) -> dict[str, Tensor]:
        keys = self.KEYS if self.with_sdr else self.KEYS[:2]
        n = self.count.clamp(min=1)
        return {key: (getattr(self, f"sum_{key}") / n).float() for key in keys}


def pit_si_snr(estimate: Tensor, sources: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Utterance-level PIT SI-SNR: per example, the source order with the best mean SI-SNR.

    Returns (best mean SI-SNR in dB per example (B,), best permutation (B, S)); examples
    of different ``lengths`` are scored on their own samples only.
    """
    if estimate.shape != sources.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and sources {tuple(sources.shape)} differ in shape")
    if lengths is None or bool((lengths == estimate.shape[-1]).all()):
        return permutation_invariant_training(estimate, sources, scale_invariant_signal_noise_ratio,
                                              mode="speaker-wise", eval_func="max")
    best, perms = [], []
    for b, n in enumerate(lengths.tolist()):
        value, perm = permutation_invariant_training(estimate[b : b + 1, :, :n], sources[b : b + 1, :, :n],
                                                     scale_invariant_signal_noise_ratio, mode="speaker-wise",
                                                     eval_func="max")
        best.append(value)
        perms.append(perm)
    return torch.cat(best), torch.cat(perms)


def separation_scores(estimate: Tensor, sources: Tensor, mix: Tensor, lengths: Tensor | None = None, *,
                      sdr: bool = True, sdr_filter_length: int = 512) -> dict[str, Tensor]:
    """Per-utterance scores in dB, averaged over sources: ``si_snr``, ``si_snri`` and, with
    ``sdr``, BSS-eval ``sdr`` and ``sdri`` (improvements over the mixture as estimate)."""
    estimate, sources, mix = estimate.detach().float(), sources.float(), mix.float()
    n_valid = [estimate.shape[-1]] * estimate.shape[0] if lengths is None else lengths.tolist()
    out: dict[str, list[Tensor]] = {k: [] for k in ("si_snr", "si_snri", "sdr", "sdri")}
    for b, n in enumerate(n_valid):
        est, ref = estimate[b : b + 1, :, :n].contiguous(), sources[b : b + 1, :, :n].contiguous()
        mixture = mix[b : b + 1, None, :n].expand_as(ref).contiguous()
        si_snr, perm = pit_si_snr(est, ref)
        out["si_snr"].append(si_snr)
        out["si_snri"].append(si_snr - scale_invariant_signal_noise_ratio(mixture, ref).mean(-1))
        if sdr:
            filter_length = min(sdr_filter_length, n)
            est_sdr = _mean_sdr(pit_permutate(est, perm)[0], ref[0], filter_length)
            out["sdr"].append(est_sdr)
            out["sdri"].append(est_sdr - _mean_sdr(mixture[0], ref[0], filter_length))
    return {k: torch.cat(v) for k, v in out.items() if v}


def _mean_sdr(estimate: Tensor, sources: Tensor, filter_length: int) -> Tensor:
    """Mean BSS-eval SDR over sources (S, T) -> (1,). One source per call: torch 2.14's
    batched ``linalg.solve`` (MKL) fails after ``torch.set_num_threads``, a single solve does not."""
    values = [signal_distortion_ratio(e, r, filter_length=filter_length) for e, r in zip(estimate, sources)]
    return torch.stack(values).mean()[None]

"""Predictive maintenance in three stages (Abdelli et al., "A machine learning-based
framework for predictive maintenance of semiconductor laser for optical
communication", JLT 2022), with any backbone, and RUL on C-MAPSS:

1. :class:`DegradationForecastTask` -- a window of monitored values -> the next
   ``horizon`` values of the degradation indicator (the paper: an attention-GRU,
   here the ``attention_gru`` backbone or any other); RMSE. It is the forecasting
   task with RMSE as its metric.
2. :class:`AnomalyDetectionTask` -- a convolutional autoencoder trained on normal
   windows; a window is flagged when its reconstruction error
   e = mean_t,c (x - x_hat)^2 exceeds a threshold chosen on validation (best F1);
   accuracy, precision, recall, F1. The backbone mixes the encoder's latent steps.
3. :class:`RULTask` -- a window -> capped RUL. RMSE and the asymmetric C-MAPSS score
   S = sum_i (exp(-d_i / 13) - 1 if d_i < 0 else exp(d_i / 10) - 1), d = pred - true,
   at the last cycle of each test unit.

``python -m seqzoo.domains.rul pipeline --forecast CKPT --detect CKPT --rul CKPT``
chains the three trained stages over every device history (see
:func:`run_pipeline`): forecast, anomaly flag on the observed + forecast sequence,
RUL estimate.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryF1Score, BinaryPrecision, BinaryRecall

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask, PositionalEmbedding, WindowEncoder, fixed_window_spec
from seqzoo.domains.forecasting import ForecastingTask, Head
from seqzoo.errors import ConfigError, SeqzooError
from seqzoo.export_spec import ExportSpec

# ---------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------


def cap_rul(remaining: Tensor | float, cap: float = 125.0) -> Tensor:
    """Piecewise-linear RUL target: min(cap, remaining life)."""
    return torch.clamp(torch.as_tensor(remaining, dtype=torch.float64), max=cap)


def cmapss_score(pred: Tensor, true: Tensor, time_unit: float = 1.0) -> Tensor:
    """Asymmetric C-MAPSS score (Saxena et al. 2008), summed over units; late predictions
    (d = pred - true > 0) cost more than early ones. ``d`` is counted in ``time_unit``s
    (1 = cycles, as in the benchmark; for hours of laser aging, the monitoring interval)."""
    d = (pred.double() - true.double()) / time_unit
    return torch.where(d < 0, torch.exp(-d / 13.0) - 1.0, torch.exp(d / 10.0) - 1.0).sum()


class CMAPSSScore(Metric):
    """:func:`cmapss_score` accumulated over batches (a sum, as in the benchmark)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, time_unit: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.time_unit = time_unit
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, true: Tensor) -> None:
        self.total += cmapss_score(pred, true, self.time_unit)

    def compute(self) -> Tensor:
        return self.total


def best_threshold(scores: Tensor, labels: Tensor, criterion: Literal["f1", "accuracy"] = "f1") -> float:
    """The cut on ``scores`` (flag = score > cut) that maximises F1 or accuracy on ``labels``."""
    if scores.numel() == 0:
        raise ValueError("no scores to choose a threshold from")
    s, order = torch.sort(scores.double(), descending=True)
    y = labels[order].double()
    n, positives = len(s), y.sum()
    tp = torch.cat([y.new_zeros(1), torch.cumsum(y, 0)])  # flagging the top k, k = 0..n
    fp = torch.arange(n + 1, dtype=torch.float64) - tp
    fn, tn = positives - tp, (n - positives) - fp
    if criterion == "f1":
        value = 2 * tp / torch.clamp(2 * tp + fp + fn, min=1)
    elif criterion == "accuracy":
        value = (tp + tn) / n
    else:
        raise ConfigError(f"threshold criterion must be 'f1' or 'accuracy', got {criterion!r}")
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[:-1] > s[1:]  # cut only between distinct scores
    k = int(torch.argmax(torch.where(valid, value, torch.full_like(value, -1.0))))
    if k == 0:
        return float(s[0]) + 1e-12 * max(1.0, abs(float(s[0])))
    if k == n:
        return float(s[-1]) - 1e-12 * max(1.0, abs(float(s[-1])))
    return float((s[k - 1] + s[k]) / 2)


# ---------------------------------------------------------------------------------------
# stage 1: degradation forecasting
# ---------------------------------------------------------------------------------------


class DegradationForecastTask(ForecastingTask):
    """Window of monitored values (B, L, C) -> next values of the degradation targets (B, H, C_out)."""

    monitor = "val/rmse"
    report_metrics = ("test/rmse", "test/mae")
    report_modes = ("min", "min")

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        n_targets: int,
        lookback: int,
        horizon: int,
        revin: bool = True,
        head: Head = "linear",
        positions: Literal["sinusoidal", "learned", "none"] = "sinusoidal",
        embed_dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, n_channels=n_channels, n_targets=n_targets, lookback=lookback, horizon=horizon,
                         revin=revin, head=head, positions=positions, embed_dropout=embed_dropout,
                         optimizer=optimizer, lr_scheduler=lr_scheduler)

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError()})

    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """The forecasting baseline. Its RMSE is the float64 square root of the MSE (the float32
        RMSE metric rounds differently), so the baseline's numbers are the ones reported before."""
        values = self.repeat_last_scores(datamodule, ForecastingTask.make_metrics(self).clone(prefix="test/"))
        return "repeat last value", {"test/rmse": math.sqrt(values["test/mse"]), "test/mae": values["test/mae"]}


# ---------------------------------------------------------------------------------------
# stage 2: convolutional-autoencoder anomaly detection
# ---------------------------------------------------------------------------------------


class ConvAutoencoder(nn.Module):
    """Conv encoder (stride-2 steps) -> backbone over latent steps -> bottleneck -> transposed-conv decoder."""

    def __init__(self, backbone: Backbone, n_channels: int, lookback: int, n_down: int = 2, bottleneck: int = 2,
                 kernel_size: int = 5, positions: str = "sinusoidal") -> None:
        super().__init__()
        if n_down < 0 or lookback % (2**n_down):
            raise ConfigError(f"lookback ({lookback}) must be divisible by 2^n_down = {2 ** max(n_down, 0)}")
        if bottleneck < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"bottleneck must be >= 1 and kernel_size odd, got {bottleneck} and {kernel_size}")
        d = backbone.d_model
        self.lookback, self.n_channels = lookback, n_channels
        encoder: list[nn.Module] = [nn.Conv1d(n_channels, d, kernel_size, padding=kernel_size // 2), nn.GELU()]
        decoder: list[nn.Module] = []
        for _ in range(n_down):
            encoder += [nn.Conv1d(d, d, 4, stride=2, padding=1), nn.GELU()]
            decoder += [nn.ConvTranspose1d(d, d, 4, stride=2, padding=1), nn.GELU()]
        decoder.append(nn.Conv1d(d, n_channels, kernel_size, padding=kernel_size // 2))
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)
        self.positions = PositionalEmbedding(positions, lookback // 2**n_down, d)
        self.backbone = backbone
        self.squeeze, self.expand = nn.Linear(d, bottleneck), nn.Linear(bottleneck, d)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1:] != (self.lookback, self.n_channels):
            raise ValueError(f"expected input (B, {self.lookback}, {self.n_channels}), got {tuple(x.shape)}")
        z = self.encoder(x.transpose(1, 2)).transpose(1, 2)
        z = self.expand(self.squeeze(self.backbone(self.positions(z))))
        return self.decoder(z.transpose(1, 2)).transpose(1, 2)

    def error(self, x: Tensor) -> Tensor:
        """Reconstruction error per window, mean over time and channels: (B,)."""
        return reconstruction_error(self(x), x)


def reconstruction_error(recon: Tensor, x: Tensor) -> Tensor:
    """Mean squared error per window over time and channels: (B, L, C) pair -> (B,)."""
    return (recon - x).pow(2).mean(dim=(1, 2))


class AnomalyDetector(nn.Module):
    """Export graph: x -> (reconstruction, error, flag = error > threshold)."""

    def __init__(self, autoencoder: ConvAutoencoder, threshold: Tensor) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.register_buffer("threshold", threshold.detach().clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        recon = self.autoencoder(x)
        error = reconstruction_error(recon, x)
        return recon, error, error > self.threshold


class AnomalyDetectionTask(BaseTask):
    """Reconstruction-based degradation detection; the threshold is fitted on validation windows."""

    monitor = "val/f1"
    monitor_mode = "max"
    report_metrics = ("test/acc", "test/f1", "test/precision", "test/recall")
    report_modes = ("max", "max", "max", "max")

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        lookback: int,
        n_down: int = 2,
        bottleneck: int = 2,
        kernel_size: int = 5,
        positions: Literal["sinusoidal", "learned", "none"] = "sinusoidal",
        threshold_criterion: Literal["f1", "accuracy"] = "f1",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if threshold_criterion not in ("f1", "accuracy"):
            raise ConfigError(f"threshold_criterion must be 'f1' or 'accuracy', got {threshold_criterion!r}")
        self.net = ConvAutoencoder(backbone, n_channels, lookback, n_down=n_down, bottleneck=bottleneck,
                                   kernel_size=kernel_size, positions=positions)
        self.threshold_criterion = threshold_criterion
        self.register_buffer("threshold", torch.tensor(float("inf")))
        self._val_scores: list[Tensor] = []
        self._val_labels: list[Tensor] = []
        metrics = MetricCollection({"acc": BinaryAccuracy(), "precision": BinaryPrecision(),
                                    "recall": BinaryRecall(), "f1": BinaryF1Score()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, batch: Batch) -> Tensor:
        """Reconstruction error per window."""
        return self.net.error(batch["x"])

    def flags(self, error: Tensor) -> Tensor:
        return (error > self.threshold).long()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = F.mse_loss(self.net(batch["x"]), batch["x"])
        self.log_metrics("train", {"loss": loss}, batch_size=batch["x"].shape[0], prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        error = self(batch)
        self._val_scores.append(error.detach())
        self._val_labels.append(batch["label"].detach())
        normal = batch["label"] == 0
        if normal.any():
            self.log_metrics("val", {"loss": error[normal].mean()}, batch_size=int(normal.sum()))

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        scores, labels = torch.cat(self._val_scores), torch.cat(self._val_labels)
        self._val_scores.clear()
        self._val_labels.clear()
        if self.trainer.world_size > 1:
            scores, labels = self.all_gather(scores).flatten(), self.all_gather(labels).flatten()
        self.threshold.fill_(best_threshold(scores.cpu(), labels.cpu(), self.threshold_criterion))
        self.val_metrics.update(self.flags(scores), labels)
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.log("val/threshold", self.threshold)
        self.val_metrics.reset()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(self.flags(self(batch)), batch["label"])

    def on_test_epoch_end(self) -> None:
        self.log_collection(self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        error = self(batch)
        return {"error": error, "flag": self.flags(error)}

    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Always predict the majority class of the validation windows."""
        datamodule.setup("test")
        val = torch.cat([b["label"] for b in datamodule.val_dataloader()])
        majority = int(val.float().mean() > 0.5)
        metrics = self.test_metrics.clone()
        for batch in datamodule.test_dataloader():
            metrics.update(torch.full_like(batch["label"], majority), batch["label"])
        return f"majority class ({'anomalous' if majority else 'normal'})", {
            k: float(v) for k, v in metrics.compute().items()}

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        module = AnomalyDetector(net, self.threshold.cpu()).eval()
        return fixed_window_spec(module, net.lookback, net.n_channels, ["reconstruction", "error", "flag"])


# ---------------------------------------------------------------------------------------
# stage 3: RUL regression
# ---------------------------------------------------------------------------------------


class RULNet(nn.Module):
    """Embedding -> backbone -> pooling over time -> MLP: window (B, L, C) -> RUL / cap (B,).

    Pooling ``attention`` is additive attention over steps, alpha = softmax_t(v^T tanh(W h_t))
    (the paper's attention-based RUL model); ``last`` and ``mean`` are the simple ones.
    """

    def __init__(self, backbone: Backbone, n_channels: int, lookback: int,
                 pooling: Literal["attention", "last", "mean"] = "attention", positions: str = "sinusoidal",
                 embed_dropout: float = 0.0) -> None:
        super().__init__()
        if pooling not in ("attention", "last", "mean"):
            raise ConfigError(f"pooling must be 'attention', 'last' or 'mean', got {pooling!r}")
        d = backbone.d_model
        self.n_channels, self.lookback, self.pooling = n_channels, lookback, pooling
        self.encoder = WindowEncoder(backbone, n_channels, lookback, positions, embed_dropout)
        if pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    @property
    def backbone(self) -> Backbone:
        return self.encoder.backbone

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(x)
        if self.pooling == "last":
            pooled = h[:, -1]
        elif self.pooling == "mean":
            pooled = h.mean(dim=1)
        else:
            alpha = torch.softmax(self.attention(h), dim=1)  # (B, L, 1)
            pooled = (alpha * h).sum(dim=1)
        return self.head(pooled).squeeze(-1)


class RULFraction(nn.Module):
    """Export graph: window -> RUL / rul_cap, clamped to [0, 1] (the cap is in the export's
    .json, under dims; a unit-free output keeps the onnxruntime parity check meaningful)."""

    def __init__(self, net: RULNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return rul_fraction(self.net(x))


def rul_fraction(output: Tensor) -> Tensor:
    """The RUL network's output (RUL / cap) clamped to [0, 1]."""
    return torch.clamp(output, 0.0, 1.0)


class RULTask(BaseTask):
    """Capped-RUL regression; metrics in cycles/hours at the data module's evaluation points.

    ``score_time_unit``: the C-MAPSS score counts errors in this many time units (1 cycle
    for C-MAPSS; the laser configs use the 10 h monitoring interval).
    """

    monitor = "val/rmse"
    report_metrics = ("test/rmse", "test/score", "test/mae")
    report_modes = ("min", "min", "min")

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        lookback: int,
        rul_cap: int = 125,
        score_time_unit: float = 1.0,
        pooling: Literal["attention", "last", "mean"] = "attention",
        positions: Literal["sinusoidal", "learned", "none"] = "sinusoidal",
        embed_dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.net = RULNet(backbone, n_channels, lookback, pooling=pooling, positions=positions,
                          embed_dropout=embed_dropout)
        if score_time_unit <= 0:
            raise ConfigError(f"score_time_unit must be positive, got {score_time_unit}")
        self.rul_cap = float(rul_cap)
        self.val_metrics = MetricCollection({"rmse": MeanSquaredError(squared=False)}, prefix="val/")
        self.test_metrics = MetricCollection({"rmse": MeanSquaredError(squared=False), "score": CMAPSSScore(score_time_unit),
                                              "mae": MeanAbsoluteError()}, prefix="test/")

    def forward(self, batch: Batch) -> Tensor:
        """RUL estimates in the data's time unit, clamped to [0, cap]."""
        return rul_fraction(self.net(batch["x"])) * self.rul_cap

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = F.mse_loss(self.net(batch["x"]), batch["rul"])
        self.log_metrics("train", {"loss": loss}, batch_size=batch["x"].shape[0], prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.val_metrics.update(self(batch), batch["rul"] * self.rul_cap)

    def on_validation_epoch_end(self) -> None:
        self.log_collection(self.val_metrics, prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(self(batch), batch["rul"] * self.rul_cap)

    def on_test_epoch_end(self) -> None:
        self.log_collection(self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch)

    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Predict the mean capped RUL of the training windows for every test window."""
        datamodule.setup("test")
        mean = float(np.mean(datamodule.train_labels())) * self.rul_cap
        metrics = self.test_metrics.clone()
        for batch in datamodule.test_dataloader():
            true = batch["rul"] * self.rul_cap
            metrics.update(torch.full_like(true, mean), true)
        return "mean training RUL", {k: float(v) for k, v in metrics.compute().items()}

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        return fixed_window_spec(RULFraction(net).eval(), net.lookback, net.n_channels, ["rul_fraction"])


# ---------------------------------------------------------------------------------------
# the three stages chained
# ---------------------------------------------------------------------------------------


def load_stage(ckpt: str, task_cls: type, data: str | None = None):
    """(task, data module) of a trained stage; ``data`` replaces the data folder of its config."""
    from seqzoo.datasets.rul import RULDataModule
    from seqzoo.checkpoints import build_datamodule, build_task, read_checkpoint_record

    config, dims, state = read_checkpoint_record(ckpt)
    task = build_task(config, dims)
    if not isinstance(task, task_cls):
        raise ConfigError(f"{ckpt}: holds a {type(task).__name__}, expected a {task_cls.__name__}")
    task.load_state_dict(state)
    task.eval()
    data_cfg = copy.deepcopy(config.get("data") or {})
    if data is not None:
        data_cfg.setdefault("init_args", {})["path"] = data
    datamodule = build_datamodule({"data": data_cfg})
    if not isinstance(datamodule, RULDataModule):
        raise ConfigError(f"{ckpt}: was trained on {type(datamodule).__name__}, expected RULDataModule")
    datamodule._load()
    return task, datamodule


def run_pipeline(forecast_ckpt: str, detect_ckpt: str, rul_ckpt: str, data: str | None = None,
                 split: str = "test", stride: int = 1) -> dict:
    """Run forecast -> anomaly detection -> RUL over every device history of ``split``.

    At each evaluation point e (every ``stride`` rows, and the last row) of a history:
    the forecaster reads the last L_f rows and predicts the next H target values; the
    detector reads the last L_d - H observed target values followed by the H forecast
    ones (the *predicted* sequence, as in the paper) and flags it; the RUL model reads
    the last L_r rows. Scores against the truth where it is known: forecast RMSE (scaled
    units), anomaly accuracy/precision/recall/F1 (label of row e + H), RUL RMSE/MAE
    (label of row e), also over the points flagged anomalous.
    """
    from seqzoo.datasets.rul import window_at

    forecaster, fdm = load_stage(forecast_ckpt, DegradationForecastTask, data)
    detector, ddm = load_stage(detect_ckpt, AnomalyDetectionTask, data)
    rul_model, rdm = load_stage(rul_ckpt, RULTask, data)
    _check_compatible(fdm, ddm, rdm, split)
    H, n_targets = fdm.horizon, len(fdm.targets)
    observed = ddm.lookback - H
    if observed < 0:
        raise ConfigError(f"the detector's lookback ({ddm.lookback}) is shorter than the forecast horizon ({H})")
    totals = {"forecast_se": 0.0, "forecast_n": 0, "flag": [], "label": [], "rul_pred": [], "rul_true": [],
              "rul_flagged": []}
    devices = []
    for k, unit in enumerate(fdm.units[split]):
        feats_f = torch.as_tensor(unit.features)
        rul_unit, anomaly = rdm.units[split][k], ddm.units[split][k].anomaly  # labels of each stage's own data
        feats_r = torch.as_tensor(rul_unit.features)
        T = len(unit.time)
        first = max(fdm.lookback, observed) - 1
        if T - 1 < first:
            devices.append({"device": unit.unit_id, "rows": T, "skipped": f"history shorter than {first + 1} rows"})
            continue
        points = sorted(set(range(first, T, stride)) | {T - 1})
        with torch.no_grad():
            forecast = forecaster.net(torch.stack([window_at(feats_f, e, fdm.lookback) for e in points]))
            targets = feats_f[:, -n_targets:]
            detect_in = torch.stack([
                torch.cat([window_at(targets, e, observed), fc], dim=0)[-ddm.lookback :] if observed else fc
                for e, fc in zip(points, forecast)])
            error = detector.net.error(detect_in)
            flag = detector.flags(error)
            rul = rul_model(dict(x=torch.stack([window_at(feats_r, e, rdm.lookback) for e in points])))
        for j, e in enumerate(points):
            if e + H < T:
                totals["forecast_se"] += float((forecast[j] - targets[e + 1 : e + 1 + H]).pow(2).sum())
                totals["forecast_n"] += H * n_targets
                if anomaly[e + H] >= 0:
                    totals["flag"].append(int(flag[j]))
                    totals["label"].append(int(anomaly[e + H]))
            if not np.isnan(rul_unit.rul[e]):
                totals["rul_pred"].append(float(rul[j]))
                totals["rul_true"].append(float(rul_unit.rul[e]))
                totals["rul_flagged"].append(bool(flag[j]))
        last = fdm.unscale(forecast[-1].numpy(), fdm.targets)
        devices.append({
            "device": unit.unit_id, "rows": T, "time": float(unit.time[-1]),
            "forecast": {name: [float(v) for v in last[:, i]] for i, name in enumerate(fdm.targets)},
            "anomaly_error": float(error[-1]), "anomaly_flag": bool(flag[-1]),
            "rul_estimate": float(rul[-1]),
            "rul_true": None if np.isnan(rul_unit.rul[-1]) else float(rul_unit.rul[-1]),
        })
    return {"split": split, "horizon": H, "threshold": float(detector.threshold), "rul_cap": rdm.rul_cap,
            "summary": _summarise(totals), "devices": devices}


def _check_compatible(fdm, ddm, rdm, split: str) -> None:
    """The three stages must read the same units with the same scaling of the targets."""
    problems = []
    if fdm.targets != ddm.targets:
        problems.append(f"forecast targets {fdm.targets} != detector channels {ddm.targets}")
    ids = [[u.unit_id for u in dm.units[split]] for dm in (fdm, ddm, rdm)]
    if not ids[0] == ids[1] == ids[2]:
        problems.append("the stages' data modules list different units (different data folders or formats)")
    elif not problems:
        n = len(fdm.targets)
        for uf, ud in zip(fdm.units[split], ddm.units[split]):
            if not np.allclose(uf.features[:, -n:], ud.features[:, -n:], atol=1e-6):
                problems.append(f"unit {uf.unit_id}: the forecaster and the detector scale the targets differently "
                                "(train them on the same data with the same channels and scaler)")
                break
    if problems:
        raise ConfigError("the three stages do not fit together: " + "; ".join(problems))


def _summarise(totals: dict) -> dict:
    out: dict[str, float | int | None] = {}
    n = totals["forecast_n"]
    out["forecast_rmse"] = math.sqrt(totals["forecast_se"] / n) if n else None
    flag, label = np.asarray(totals["flag"]), np.asarray(totals["label"])
    out["anomaly_points"] = len(label)
    if len(label):
        tp, fp = int(((flag == 1) & (label == 1)).sum()), int(((flag == 1) & (label == 0)).sum())
        fn = int(((flag == 0) & (label == 1)).sum())
        out["anomaly_accuracy"] = float((flag == label).mean())
        out["anomaly_precision"] = tp / (tp + fp) if tp + fp else 0.0
        out["anomaly_recall"] = tp / (tp + fn) if tp + fn else 0.0
        out["anomaly_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    pred, true = np.asarray(totals["rul_pred"]), np.asarray(totals["rul_true"])
    flagged = np.asarray(totals["rul_flagged"], dtype=bool)
    out["rul_points"] = len(true)
    if len(true):
        out["rul_rmse"] = float(np.sqrt(np.mean((pred - true) ** 2)))
        out["rul_mae"] = float(np.mean(np.abs(pred - true)))
    out["rul_points_flagged"] = int(flagged.sum())
    if flagged.any():
        out["rul_rmse_flagged"] = float(np.sqrt(np.mean((pred[flagged] - true[flagged]) ** 2)))
    return out


def format_report(report: dict) -> str:
    """The pipeline report as a table per device and a summary."""
    lines = [f"three-stage pipeline on the {report['split']} devices (horizon {report['horizon']}, "
             f"anomaly threshold {report['threshold']:.4g}, RUL cap {report['rul_cap']:g})", ""]
    head = ["device", "rows", "last time", "forecast (end of horizon)", "anomaly error", "flag", "RUL est.", "RUL true"]
    rows = []
    for d in report["devices"]:
        if "skipped" in d:
            rows.append([d["device"], str(d["rows"]), "", d["skipped"], "", "", "", ""])
            continue
        forecast = ", ".join(f"{k} {v[-1]:.4g}" for k, v in d["forecast"].items())
        rows.append([d["device"], str(d["rows"]), f"{d['time']:g}", forecast, f"{d['anomaly_error']:.4g}",
                     "ANOMALY" if d["anomaly_flag"] else "normal", f"{d['rul_estimate']:.1f}",
                     "unknown" if d["rul_true"] is None else f"{d['rul_true']:.1f}"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    lines += ["", "summary (all evaluation points):"]
    lines += [f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}" for k, v in report["summary"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqzoo.domains.rul",
                                     description="Laser predictive maintenance: chain the three trained stages.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipeline", help="forecast, anomaly flag and RUL for every device history")
    p.add_argument("--forecast", required=True, help="checkpoint of a DegradationForecastTask")
    p.add_argument("--detect", required=True, help="checkpoint of an AnomalyDetectionTask")
    p.add_argument("--rul", required=True, help="checkpoint of a RULTask")
    p.add_argument("--data", default=None, help="data folder (default: the one in the checkpoints' configs)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--stride", type=int, default=1, help="rows between evaluation points")
    p.add_argument("--json", default=None, help="also write the full report here")
    opts = parser.parse_args(argv)
    try:
        if opts.stride < 1:
            raise ConfigError(f"--stride must be >= 1, got {opts.stride}")
        report = run_pipeline(opts.forecast, opts.detect, opts.rul, data=opts.data, split=opts.split,
                              stride=opts.stride)
    except SeqzooError as err:
        print(f"seqzoo rul pipeline: error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    # Run the package module's main, so the task classes it checks are the ones checkpoints rebuild
    # (under `python -m` this file is also loaded as __main__, with classes of its own).
    from seqzoo.domains.rul import main as package_main

    sys.exit(package_main())

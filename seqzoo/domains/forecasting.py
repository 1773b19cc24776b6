"""Long-horizon multivariate forecasting: x (B, L, C) -> y (B, H, C_out).

Pipeline: instance normalisation (RevIN without affine, as iTransformer: subtract
the window mean, divide by sqrt(var + 1e-5), undo at the end) -> embedding ->
backbone -> head. Two token kinds:

* time tokens: Linear(C [+ time features], D) per step plus positions; head
  ``linear`` maps time L -> H then D -> C_out; head ``last`` maps the last token
  to the whole horizon (and can stream);
* variate tokens (iTransformer): Linear(L, D) per variate, time features as
  extra tokens dropped at the output; head Linear(D, H) per variate token.

Loss MSE; metrics MSE and MAE over every test window, step and channel, in the
scaled units of the data module (Time-Series-Library protocol). The trivial
baseline repeats the last observed value over the horizon.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from seqzoo.backbones.base import Backbone, State
from seqzoo.domains.base import Batch, BaseTask, PositionalEmbedding
from seqzoo.errors import ConfigError
from seqzoo.export import ExportSpec, step_spec

Head = Literal["linear", "last"]


class ForecastingNet(nn.Module):
    """Normalisation -> embedding -> backbone -> head, on plain tensors."""

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        n_targets: int,
        lookback: int,
        horizon: int,
        n_time_features: int = 0,
        revin: bool = True,
        head: Head = "linear",
        positions: str = "sinusoidal",
        embed_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_targets > n_channels:
            raise ConfigError(f"n_targets ({n_targets}) cannot exceed n_channels ({n_channels})")
        if head not in ("linear", "last"):
            raise ConfigError(f"head must be 'linear' or 'last', got {head!r}")
        d = backbone.d_model
        self.backbone = backbone
        self.n_channels, self.n_targets = n_channels, n_targets
        self.lookback, self.horizon = lookback, horizon
        self.n_time_features = n_time_features
        self.revin, self.head_kind = revin, head
        self.variate_tokens = type(backbone).tokens == "variate"
        self.dropout = nn.Dropout(embed_dropout)
        if self.variate_tokens:
            self.embed = nn.Linear(lookback, d)
            self.head = nn.Linear(d, horizon)
        else:
            self.embed = nn.Linear(n_channels + n_time_features, d)
            self.positions = PositionalEmbedding(positions, lookback, d)
            if head == "linear":
                self.time_proj = nn.Linear(lookback, horizon)
                self.head = nn.Linear(d, n_targets)
            else:
                self.head = nn.Linear(d, horizon * n_targets)

    def forward(self, x: Tensor, x_mark: Tensor | None = None) -> Tensor:
        if x.shape[1] != self.lookback or x.shape[2] != self.n_channels:
            raise ValueError(
                f"expected input (B, {self.lookback}, {self.n_channels}), got {tuple(x.shape)}"
            )
        if self.n_time_features and x_mark is None:
            raise ValueError(f"this model uses {self.n_time_features} time features: pass x_mark")
        mean, std = None, None
        if self.revin:
            mean = x.mean(dim=1, keepdim=True).detach()
            std = torch.sqrt(torch.var(x - mean, dim=1, keepdim=True, unbiased=False) + 1e-5)
            x = (x - mean) / std
        y = self._variate(x, x_mark) if self.variate_tokens else self._time(x, x_mark)
        if self.revin:
            y = y * std[..., -self.n_targets :] + mean[..., -self.n_targets :]
        return y

    def _time(self, x: Tensor, x_mark: Tensor | None) -> Tensor:
        inputs = torch.cat([x, x_mark], dim=-1) if self.n_time_features else x
        h = self.backbone(self.dropout(self.positions(self.embed(inputs))))
        if self.head_kind == "linear":
            return self.head(self.time_proj(h.transpose(1, 2)).transpose(1, 2))
        return self.head(h[:, -1]).view(-1, self.horizon, self.n_targets)

    def _variate(self, x: Tensor, x_mark: Tensor | None) -> Tensor:
        tokens = x.transpose(1, 2)  # (B, C, L)
        if self.n_time_features:
            tokens = torch.cat([tokens, x_mark.transpose(1, 2)], dim=1)
        h = self.backbone(self.dropout(self.embed(tokens)))
        y = self.head(h[:, : self.n_channels]).transpose(1, 2)  # (B, H, C)
        return y[..., -self.n_targets :]


class ForecastStepper(nn.Module):
    """Streaming forecaster: feed one observation (B, C), get the horizon's forecast.

    State: the step counter (for positions) and the backbone's state. Needs head
    'last', no RevIN and no time features -- those look at the whole window.
    """

    def __init__(self, net: ForecastingNet) -> None:
        super().__init__()
        self.net = net

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        t = torch.zeros(batch_size, dtype=torch.long, device=device)
        return (t, *self.net.backbone.init_state(batch_size, device=device, dtype=dtype))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        t, *inner = state
        net = self.net
        h = net.positions.at(net.embed(x_t), t)
        h, inner = net.backbone.step(h, tuple(inner))
        y = net.head(h).view(-1, net.horizon, net.n_targets)
        return y, (t + 1, *inner)


class ForecastingTask(BaseTask):
    """Long-horizon forecasting with any time- or variate-token backbone."""

    token_kinds = frozenset({"time", "variate"})
    monitor = "val/mse"
    report_metrics = ("test/mse", "test/mae")
    report_modes = ("min", "min")

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        n_targets: int,
        lookback: int,
        horizon: int,
        n_time_features: int = 0,
        use_time_features: bool = False,
        revin: bool = True,
        head: Head = "linear",
        positions: Literal["sinusoidal", "learned", "none"] = "sinusoidal",
        embed_dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.use_time_features = use_time_features
        self.net = ForecastingNet(
            backbone,
            n_channels=n_channels,
            n_targets=n_targets,
            lookback=lookback,
            horizon=horizon,
            n_time_features=n_time_features if use_time_features else 0,
            revin=revin,
            head=head,
            positions=positions,
            embed_dropout=embed_dropout,
        )
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch["x"], batch.get("x_mark") if self.use_time_features else None)

    def tokens_per_sample(self, batch: Batch) -> int:
        return int(batch["x"].shape[1] if not self.net.variate_tokens else batch["x"].shape[2])

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = F.mse_loss(self(batch), batch["y"])
        self.log_metrics("train", {"loss": loss}, batch_size=batch["x"].shape[0], prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        pred = self(batch)
        self.val_metrics.update(pred, batch["y"])
        self.log_metrics("val", {"loss": F.mse_loss(pred, batch["y"])}, batch_size=batch["x"].shape[0])

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(self(batch), batch["y"])

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch)

    # -- baseline and export ----------------------------------------------------------
    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Repeat the last observed value of each target over the horizon."""
        datamodule.setup("test")
        mse, mae = MeanSquaredError(), MeanAbsoluteError()
        for batch in datamodule.test_dataloader():
            pred = batch["x"][:, -1:, -self.net.n_targets :].expand_as(batch["y"]).contiguous()
            mse.update(pred, batch["y"])
            mae.update(pred, batch["y"])
        return "repeat last value", {"test/mse": float(mse.compute()), "test/mae": float(mae.compute())}

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        L_, C, F_ = net.lookback, net.n_channels, net.n_time_features
        gen = torch.Generator().manual_seed(0)

        def make(b: int) -> tuple[Tensor, ...]:
            x = torch.randn(b, L_, C, generator=gen)
            return (x, torch.rand(b, L_, F_, generator=gen) - 0.5) if F_ else (x,)

        names = ["x", "x_mark"] if F_ else ["x"]
        return ExportSpec(
            module=net,
            example_inputs=make(2),
            input_names=names,
            output_names=["y"],
            # The lookback is fixed by the head (Linear over time); only the batch is free.
            dynamic={n: {0: "batch"} for n in names},
            check_inputs=[make(2), make(5)],
        )

    def export_step_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        problems = []
        if not type(net.backbone).streaming:
            problems.append(f"backbone {type(net.backbone).name!r} does not stream")
        elif not net.backbone.is_causal:
            problems.append("the backbone must be built with causal: true")
        if net.head_kind != "last":
            problems.append("head must be 'last' (the 'linear' head reads the whole window)")
        if net.revin:
            problems.append("revin must be false (window statistics need the whole window)")
        if net.n_time_features:
            problems.append("use_time_features must be false")
        if problems:
            raise ConfigError("streaming export of a forecasting model: " + "; ".join(problems))
        return step_spec(ForecastStepper(net), net.n_channels, in_dtype=torch.float32,
                         generator=torch.Generator().manual_seed(0))


# =======================================================================================
# TSM2: Time Series MambaMixer (Behrouz, Santacatterina & Zabih 2024), a grid model of
# variates x patches built from the blocks of backbones/mambamixer.py
# =======================================================================================

from seqzoo.backbones.mambamixer import MambaMixer, MambaMixerGrid  # noqa: E402


class TSM2Net(nn.Module):
    """TSM2 on plain tensors: x (B, L, C) -> y (B, H, C_out).

    RevIN per variate -> each variate cut into patches of ``patch_len`` every ``stride``
    steps (the series first extended by ``stride`` copies of its last value, as PatchTST)
    -> Linear(patch_len, D) + learned patch positions -> a MambaMixer grid (B, C, P, D):
    the selective time mixer over the patches of each variate (unidirectional, as the
    paper: time is causal), the bidirectional selective variate mixer over the variates
    of each patch, weighted averaging of earlier outputs, normalisation over time and
    features (``norm="plane"``) -> each variate's (P, D) flattened -> Linear(P·D, H),
    shared by the variates.

    The grid takes its sizes (d_model, n_layers, d_state, expand, dropout, ...) from the
    ``mambamixer`` backbone it is given; it holds its own weights (the backbone's
    (B, L, D) layers do not fit a grid and are not used).
    """

    def __init__(
        self,
        backbone: MambaMixer,
        n_channels: int,
        n_targets: int,
        lookback: int,
        horizon: int,
        patch_len: int = 16,
        stride: int = 8,
        revin: bool = True,
        norm: Literal["plane", "rms"] = "plane",
        bidirectional_time: bool = False,
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_targets > n_channels:
            raise ConfigError(f"n_targets ({n_targets}) cannot exceed n_channels ({n_channels})")
        if not 1 <= patch_len <= lookback or stride < 1:
            raise ConfigError(f"TSM2 needs 1 <= patch_len <= lookback ({lookback}) and stride >= 1, "
                              f"got patch_len={patch_len}, stride={stride}")
        d = backbone.d_model
        self.n_channels, self.n_targets = n_channels, n_targets
        self.lookback, self.horizon = lookback, horizon
        self.n_time_features, self.variate_tokens = 0, False
        self.patch_len, self.stride, self.revin = patch_len, stride, revin
        self.n_patches = (lookback - patch_len) // stride + 2
        self.patch_embed = nn.Linear(patch_len, d)
        self.positions = PositionalEmbedding("learned", self.n_patches, d)
        self.backbone = MambaMixerGrid.like(backbone, token_bidirectional=bidirectional_time, norm=norm)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.n_patches * d, horizon)

    def forward(self, x: Tensor, x_mark: Tensor | None = None) -> Tensor:
        if x.shape[1] != self.lookback or x.shape[2] != self.n_channels:
            raise ValueError(f"expected input (B, {self.lookback}, {self.n_channels}), got {tuple(x.shape)}")
        if self.revin:
            mean = x.mean(dim=1, keepdim=True).detach()
            std = torch.sqrt(torch.var(x - mean, dim=1, keepdim=True, unbiased=False) + 1e-5)
            x = (x - mean) / std
        series = F.pad(x.transpose(1, 2), (0, self.stride), mode="replicate")  # (B, C, L + stride)
        patches = series.unfold(-1, self.patch_len, self.stride)  # (B, C, P, patch_len)
        tokens = self.positions(self.patch_embed(patches).flatten(0, 1)).unflatten(0, patches.shape[:2])
        h = self.backbone(tokens)  # (B, C, P, D)
        y = self.head(self.dropout(h.flatten(-2)))[:, -self.n_targets :].transpose(1, 2).contiguous()  # (B, H, C_out)
        if self.revin:
            y = y * std[..., -self.n_targets :] + mean[..., -self.n_targets :]
        return y


class TSM2Task(ForecastingTask):
    """Forecasting with TSM2 (a ``mambamixer`` backbone arranged on variates x patches).

    Training, metrics, baseline and export are the forecasting task's; only the network
    differs. Time features are not used (the paper's auxiliary-information branch is not
    built); the lookback is fixed by the patching and the flattened head.
    """

    token_kinds = frozenset({"time"})

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        n_targets: int,
        lookback: int,
        horizon: int,
        n_time_features: int = 0,
        patch_len: int = 16,
        stride: int = 8,
        revin: bool = True,
        norm: Literal["plane", "rms"] = "plane",
        bidirectional_time: bool = False,
        head_dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        BaseTask.__init__(self, backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.use_time_features = False
        self.net = TSM2Net(backbone, n_channels, n_targets, lookback, horizon, patch_len=patch_len, stride=stride,
                           revin=revin, norm=norm, bidirectional_time=bidirectional_time, head_dropout=head_dropout)
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @classmethod
    def incompatibility(cls, backbone_cls: type[Backbone]) -> str | None:
        if not issubclass(backbone_cls, MambaMixer):
            return "TSM2 is built from MambaMixer blocks (use backbone mambamixer)"
        return super().incompatibility(backbone_cls)

    def tokens_per_sample(self, batch: Batch) -> int:
        return int(batch["x"].shape[2]) * self.net.n_patches

    def export_step_spec(self) -> ExportSpec:
        raise ConfigError("TSM2 mixes whole patches of the lookback window: it has no one-step (streaming) export")

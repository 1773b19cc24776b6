"""TSM2, Time Series MambaMixer (Behrouz, Santacatterina & Zabih 2024), as a forecasting
task: x (B, L, C) -> y (B, H, C_out).

The network is a task-level model around a registered grid backbone (token kind
``"grid"``, the ``tsm2`` family of :mod:`seqzoo.backbones.mambamixer`):

    RevIN per variate (:func:`seqzoo.layers.instance_normalise`)
    -> each variate cut into P patches of ``patch_len`` every ``stride`` steps (the series
       first extended by ``stride`` copies of its last value, as PatchTST):
       P = (L - patch_len) // stride + 2
    -> Linear(patch_len, D) + learned patch positions: a grid (B, C, P, D)
    -> the backbone: selective time mixer over the patches of each variate, bidirectional
       selective variate mixer over the variates of each patch, weighted averaging of
       earlier outputs, normalisation over time and features
    -> each variate's (P, D) flattened -> Dropout -> Linear(P·D, H), shared by the variates
    -> de-normalisation.

Training, metrics, the repeat-last baseline and export are :class:`ForecastingTask`'s; the
paper's auxiliary-information branch (time features) is not built. The lookback is fixed by
the patching and the flattened head.
"""

from __future__ import annotations

import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask
from seqzoo.domains.forecasting import ForecastingTask
from seqzoo.errors import ConfigError
from seqzoo.export import ExportSpec
from seqzoo.layers import PositionalEmbedding, instance_denormalise, instance_normalise

__all__ = ["TSM2Net", "TSM2Task"]


class TSM2Net(nn.Module):
    """TSM2 on plain tensors: x (B, L, C) -> y (B, H, C_out), around a grid backbone.

    Args:
        backbone: a backbone of token kind ``"grid"`` (B, C, P, D) -> (B, C, P, D).
        n_channels: input variates C.
        n_targets: forecast variates (the last ``n_targets`` of C).
        lookback: window length L.
        horizon: forecast length H.
        patch_len: steps per patch.
        stride: steps between patch starts.
        revin: instance-normalise each window (and undo it on the forecast).
        head_dropout: dropout before the flattened linear head.
    """

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        n_targets: int,
        lookback: int,
        horizon: int,
        patch_len: int = 16,
        stride: int = 8,
        revin: bool = True,
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if type(backbone).tokens != "grid":
            raise ConfigError(f"TSM2 mixes a variates x patches grid: it needs a 'grid' backbone (tsm2), "
                              f"got {type(backbone).name!r} ({type(backbone).tokens} tokens)")
        if n_targets > n_channels:
            raise ConfigError(f"n_targets ({n_targets}) cannot exceed n_channels ({n_channels})")
        if not 1 <= patch_len <= lookback or stride < 1:
            raise ConfigError(f"TSM2 needs 1 <= patch_len <= lookback ({lookback}) and stride >= 1, "
                              f"got patch_len={patch_len}, stride={stride}")
        d = backbone.d_model
        self.backbone = backbone
        self.n_channels, self.n_targets = n_channels, n_targets
        self.lookback, self.horizon = lookback, horizon
        self.n_time_features, self.variate_tokens = 0, False
        self.patch_len, self.stride, self.revin = patch_len, stride, revin
        self.n_patches = (lookback - patch_len) // stride + 2
        self.patch_embed = nn.Linear(patch_len, d)
        self.positions = PositionalEmbedding("learned", self.n_patches, d)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.n_patches * d, horizon)

    def forward(self, x: Tensor, x_mark: Tensor | None = None) -> Tensor:
        if x.shape[1] != self.lookback or x.shape[2] != self.n_channels:
            raise ValueError(f"expected input (B, {self.lookback}, {self.n_channels}), got {tuple(x.shape)}")
        stats = None
        if self.revin:
            x, stats = instance_normalise(x)
        series = F.pad(x.transpose(1, 2), (0, self.stride), mode="replicate")  # (B, C, L + stride)
        patches = series.unfold(-1, self.patch_len, self.stride)  # (B, C, P, patch_len)
        tokens = self.positions(self.patch_embed(patches).flatten(0, 1)).unflatten(0, patches.shape[:2])
        h = self.backbone(tokens)  # (B, C, P, D)
        y = self.head(self.dropout(h.flatten(-2)))[:, -self.n_targets :].transpose(1, 2).contiguous()  # (B, H, C_out)
        return instance_denormalise(y, stats, self.n_targets) if self.revin else y


class TSM2Task(ForecastingTask):
    """Forecasting with TSM2: a ``grid`` backbone (``tsm2``) on variates x patches.

    Args:
        backbone: a ``grid`` backbone (``tsm2``).
        n_channels, n_targets, lookback, horizon: the data's sizes (linked by the CLI).
        n_time_features: accepted for the data link; TSM2 uses no time features.
        patch_len: steps per patch.
        stride: steps between patch starts.
        revin: instance-normalise each window.
        head_dropout: dropout before the flattened linear head.
        optimizer, lr_scheduler: as every task.
    """

    token_kinds = frozenset({"grid"})
    moved_options = {}  # its own options (revin, head_dropout...): no ``net`` group

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
        head_dropout: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        BaseTask.__init__(self, backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.use_time_features = False
        self.net = TSM2Net(backbone, n_channels, n_targets, lookback, horizon, patch_len=patch_len, stride=stride,
                           revin=revin, head_dropout=head_dropout)
        self.set_metrics()

    def tokens_per_sample(self, batch: Batch) -> int:
        return int(batch["x"].shape[2]) * self.net.n_patches

    def streaming_requirements(self) -> str | None:
        return "TSM2 mixes whole patches of the lookback window: it has no one-step (streaming) export"

    def export_step_spec(self) -> ExportSpec:
        raise ConfigError(self.streaming_requirements())

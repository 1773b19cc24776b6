"""Long-horizon multivariate forecasting: x (B, L, C) -> y (B, H, C_out).

Pipeline: instance normalisation (RevIN without affine, as iTransformer: subtract
the window mean, divide by sqrt(var + 1e-5), undo at the end) -> embedding ->
backbone -> head. Two token kinds:

* time tokens: per step, a value embedding (``linear``: Linear(C, D); ``conv``: Informer's
  Conv1d(C, D, kernel 3, circular)) plus a projection of the time features and positions.
  Heads: ``linear`` maps time L -> H then D -> C_out; ``last`` maps the last token to the
  whole horizon (and can stream); ``decoder`` is Informer's generative decoder
  (:mod:`seqzoo.layers.generative_decoder`), which cross-attends to the backbone's
  ``encoder_memory`` (Informer's: its distilled encoding) and predicts the horizon in one
  pass;
* variate tokens (iTransformer): Linear(L, D) per variate, time features as extra tokens
  dropped at the output; head Linear(D, H) per variate token.

Embeddings, instance normalisation and the decoder are in :mod:`seqzoo.layers`; TSM2
(variates x patches) is :mod:`seqzoo.domains.tsm2`.

Loss MSE; metrics MSE and MAE over every test window, step and channel, in the
scaled units of the data module (Time-Series-Library protocol). Baselines on the same
test windows: repeat the last observed value, seasonal naive (repeat the last season,
its period from the data's step) and DLinear fitted on the training windows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask
from seqzoo.errors import ConfigError, DataError
from seqzoo.export_spec import ExportSpec, ScaledIO, step_spec
from seqzoo.layers import (
    AttentionKind,
    EmbeddingKind,
    GenerativeDecoder,
    Positions,
    State,
    TimeEmbedding,
    instance_denormalise,
    instance_normalise,
)

Head = Literal["linear", "last", "decoder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForecastingNetConfig:
    """How the forecaster is built around its backbone: the ``net`` group of a forecasting
    task's config (``model.init_args.net`` in YAML, ``--model.net.head`` on the command line).

    Args:
        revin: instance-normalise each window (subtract its mean, divide by its std) and undo
            it on the forecast, as iTransformer; off for streaming (it reads the whole window).
        head: ``linear`` (time L -> H, then D -> targets), ``last`` (the last token -> the
            whole horizon; streams) or ``decoder`` (Informer's generative decoder).
        positions: positional encoding of the time tokens (sinusoidal | learned | none).
        embed_dropout: dropout on the embedded tokens.
        embedding: value embedding of a time step: ``linear`` (Linear(C, D)) or ``conv``
            (Informer's circular Conv1d, kernel 3).
        label_len: start tokens of the decoder head, taken from the end of the window
            (default: half the lookback).
        decoder_layers: layers of the decoder head.
        decoder_heads: attention heads of the decoder head.
        decoder_mlp_ratio: MLP width of the decoder layers, a multiple of d_model.
        decoder_attention: masked self-attention of the decoder: ``prob`` (ProbSparse) or
            ``full``.
        decoder_factor: ProbSparse sampling factor of the decoder's self-attention.
    """

    revin: bool = True
    head: Head = "linear"
    positions: Positions = "sinusoidal"
    embed_dropout: float = 0.0
    embedding: EmbeddingKind = "linear"
    label_len: int | None = None
    decoder_layers: int = 1
    decoder_heads: int = 8
    decoder_mlp_ratio: float = 4.0
    decoder_attention: AttentionKind = "prob"
    decoder_factor: int = 5

    def __post_init__(self) -> None:
        if self.head not in ("linear", "last", "decoder"):
            raise ConfigError(f"net.head must be 'linear', 'last' or 'decoder', got {self.head!r}")
        if self.embedding not in ("linear", "conv"):
            raise ConfigError(f"net.embedding must be 'linear' or 'conv', got {self.embedding!r}")


class ForecastingNet(nn.Module):
    """Normalisation -> embedding -> backbone -> head, on plain tensors.

    ``forward(x, x_mark, y_mark)``: the window (B, L, C), its time features (B, L, F) and,
    for the decoder head, the horizon's time features (B, H, F) -- calendar values known
    in advance, as Informer's decoder uses them. The options are a
    :class:`ForecastingNetConfig` (``config``), or its fields as keywords.
    """

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        n_targets: int,
        lookback: int,
        horizon: int,
        n_time_features: int = 0,
        config: ForecastingNetConfig | None = None,
        **options,
    ) -> None:
        super().__init__()
        if n_targets > n_channels:
            raise ConfigError(f"n_targets ({n_targets}) cannot exceed n_channels ({n_channels})")
        unknown = sorted(set(options) - {f.name for f in fields(ForecastingNetConfig)})
        if unknown:
            raise ConfigError(f"ForecastingNet: unknown option(s) {', '.join(unknown)}; "
                              f"the options are the fields of ForecastingNetConfig")
        self.config = cfg = replace(config or ForecastingNetConfig(), **options)
        head, embedding, positions, embed_dropout = cfg.head, cfg.embedding, cfg.positions, cfg.embed_dropout
        d = backbone.d_model
        self.backbone = backbone
        self.n_channels, self.n_targets = n_channels, n_targets
        self.lookback, self.horizon = lookback, horizon
        self.n_time_features = n_time_features
        self.revin, self.head_kind, self.embedding_kind = cfg.revin, head, embedding
        self.variate_tokens = type(backbone).tokens == "variate"
        if self.variate_tokens:
            if head != "linear" or embedding != "linear":
                raise ConfigError(
                    f"backbone {type(backbone).name!r} mixes variate tokens: it uses the per-variate embedding "
                    f"Linear(L, D) and head Linear(D, horizon); set head: linear and embedding: linear "
                    f"(got head {head!r}, embedding {embedding!r})"
                )
            self.dropout = nn.Dropout(embed_dropout)
            self.embed = nn.Linear(lookback, d)
            self.head = nn.Linear(d, horizon)
            return
        self.embedding = TimeEmbedding(n_channels, n_time_features, d, lookback, kind=embedding,
                                       positions=positions, dropout=embed_dropout)
        if head == "linear":
            self.time_proj = nn.Linear(lookback, horizon)
            self.head = nn.Linear(d, n_targets)
        elif head == "last":
            self.head = nn.Linear(d, horizon * n_targets)
        else:
            self.head = GenerativeDecoder(
                n_channels, n_time_features, n_targets, d, lookback=lookback, horizon=horizon,
                label_len=lookback // 2 if cfg.label_len is None else cfg.label_len, n_layers=cfg.decoder_layers,
                n_heads=cfg.decoder_heads, mlp_ratio=cfg.decoder_mlp_ratio, attention=cfg.decoder_attention,
                factor=cfg.decoder_factor, dropout=backbone.dropout_p, embedding=embedding, positions=positions,
                embed_dropout=embed_dropout,
            )

    def forward(self, x: Tensor, x_mark: Tensor | None = None, y_mark: Tensor | None = None) -> Tensor:
        if x.shape[1] != self.lookback or x.shape[2] != self.n_channels:
            raise ValueError(
                f"expected input (B, {self.lookback}, {self.n_channels}), got {tuple(x.shape)}"
            )
        if self.n_time_features and x_mark is None:
            raise ValueError(f"this model uses {self.n_time_features} time features: pass x_mark")
        if self.n_time_features and self.head_kind == "decoder" and y_mark is None:
            raise ValueError("the decoder head reads the horizon's time features: pass y_mark (B, horizon, F)")
        stats = None
        if self.revin:
            x, stats = instance_normalise(x)
        y = self._variate(x, x_mark) if self.variate_tokens else self._time(x, x_mark, y_mark)
        return instance_denormalise(y, stats, self.n_targets) if self.revin else y

    def _time(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        if not self.n_time_features:
            x_mark = y_mark = None
        tokens = self.embedding(x, x_mark)
        if self.head_kind == "decoder":
            memory, memory_mask = self.backbone.encoder_memory(tokens)
            return self.head(x, memory, x_mark, y_mark, memory_mask)
        h = self.backbone(tokens)
        if self.head_kind == "linear":
            return self.head(self.time_proj(h.transpose(1, 2)).transpose(1, 2))
        return self.head(h[:, -1]).view(-1, self.horizon, self.n_targets)

    def _variate(self, x: Tensor, x_mark: Tensor | None) -> Tensor:
        tokens = x.transpose(1, 2)  # (B, C, L)
        if self.n_time_features:
            tokens = torch.cat([tokens, x_mark.transpose(1, 2)], dim=1)
        h = self.backbone(self.dropout(self.embed(tokens)))
        y = self.head(h[:, : self.n_channels]).transpose(1, 2)  # (B, H, C)
        return y[..., -self.n_targets :].contiguous()


class ForecastStepper(nn.Module):
    """Streaming forecaster: feed one observation (B, C), get the horizon's forecast.

    State: the step counter (for positions) and the backbone's state. Needs head
    'last', the linear embedding, no RevIN and no time features -- those look at the
    whole window.
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
        h, inner = net.backbone.step(net.embedding.step(x_t, t), tuple(inner))
        y = net.head(h).view(-1, net.horizon, net.n_targets)
        return y, (t + 1, *inner)


class ForecastingTask(BaseTask):
    """Long-horizon forecasting with any time- or variate-token backbone.

    Args:
        backbone: the sequence backbone (any registered family with time or variate tokens).
        n_channels: input channels (from the data).
        n_targets: forecast channels, the last ``n_targets`` inputs (from the data).
        lookback: window length L (from the data).
        horizon: forecast length H (from the data).
        n_time_features: calendar features per step the data provides (from the data).
        use_time_features: feed those features to the model (time-token embedding, the
            decoder's tokens; iTransformer: extra variate tokens).
        net: how the forecaster is built around the backbone (normalisation, embedding,
            head, decoder): see :class:`ForecastingNetConfig`.
        optimizer: optimiser factory (default: AdamW with torch's defaults).
        lr_scheduler: learning-rate scheduler factory.
    """

    token_kinds = frozenset({"time", "variate"})
    monitor = "val/mse"
    report_metrics = ("test/mse", "test/mae")
    report_modes = ("min", "min")
    # Informer (Zhou et al. 2021, Sec. 3 and Fig. 1): conv token embedding with calendar
    # stamps, no RevIN, a generative decoder (ProbSparse self-attention, start tokens).
    paper_forms = {"informer": {"use_time_features": True,
                                "net": {"embedding": "conv", "revin": False, "head": "decoder",
                                        "decoder_attention": "prob"}}}

    moved_options = {f.name: f"net.{f.name}" for f in fields(ForecastingNetConfig)}

    token_count_dim = "lookback"  # one time token per lookback step

    def __init__(
        self,
        backbone: Backbone,
        n_channels: int,
        n_targets: int,
        lookback: int,
        horizon: int,
        n_time_features: int = 0,
        use_time_features: bool = False,
        net: ForecastingNetConfig = ForecastingNetConfig(),  # noqa: B008 (frozen: never mutated)
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.use_time_features = use_time_features
        self.net = ForecastingNet(backbone, n_channels=n_channels, n_targets=n_targets, lookback=lookback,
                                  horizon=horizon, n_time_features=n_time_features if use_time_features else 0,
                                  config=net)
        self.set_metrics()

    def make_metrics(self) -> MetricCollection:
        """The validation and test metrics, unprefixed (subclasses report others)."""
        return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})

    def forward(self, batch: Batch) -> Tensor:
        if not self.use_time_features:
            return self.net(batch["x"])
        return self.net(batch["x"], batch.get("x_mark"), batch.get("y_mark"))

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
        self.log_collection(self.val_metrics, prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.test_metrics.update(self(batch), batch["y"])

    def on_test_epoch_end(self) -> None:
        self.log_collection(self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch)

    # -- baselines and export ---------------------------------------------------------
    def baseline(self, datamodule: L.LightningDataModule) -> list[tuple[str, dict[str, float]]]:
        """Test metrics of the baselines a forecaster must beat: repeat the last value, seasonal
        naive (repeat the last season) and DLinear (fitted on the training windows)."""
        results = [("repeat last value", self.repeat_last_scores(datamodule, self.test_metrics.clone()))]
        seasonal = self.seasonal_naive_scores(datamodule, self.test_metrics.clone())
        if seasonal is not None:
            results.append(seasonal)
        results.append(("DLinear (least squares)", self.dlinear_scores(datamodule, self.test_metrics.clone())))
        return results

    def repeat_last_scores(self, datamodule: L.LightningDataModule, metrics: MetricCollection) -> dict[str, float]:
        """``metrics`` (test-prefixed) of the repeat-last-value forecast over the test windows."""
        return self._test_scores(datamodule, metrics, lambda x, y: x[:, -1:].expand_as(y))

    def seasonal_naive_scores(
        self, datamodule: L.LightningDataModule, metrics: MetricCollection
    ) -> tuple[str, dict[str, float]] | None:
        """(name, ``metrics``) of seasonal naive: step ``t`` of the horizon repeats the window's step
        ``t`` one period earlier, ``x[L - m + (t mod m)]``. The period ``m`` is the data module's
        ``seasonal_period()`` (None, or a data module without one: no row). A lookback shorter than
        the period falls back to repeating the last value, and the row's name says so."""
        period = getattr(datamodule, "seasonal_period", lambda: None)()
        if period is None:
            return None
        lookback, horizon = self.net.lookback, self.net.horizon
        if period > lookback:
            log.warning("seasonal naive needs a lookback of at least one period (%d steps), the lookback is %d: "
                        "it falls back to repeating the last value", period, lookback)
            return (f"seasonal naive (period {period} > lookback {lookback}: repeat last value)",
                    self.repeat_last_scores(datamodule, metrics))
        steps = torch.tensor([lookback - period + t % period for t in range(horizon)])
        return f"seasonal naive (period {period})", self._test_scores(datamodule, metrics, lambda x, y: x[:, steps])

    def dlinear_scores(
        self, datamodule: L.LightningDataModule, metrics: MetricCollection, kernel: int = 25, ridge: float = 1e-6
    ) -> dict[str, float]:
        """``metrics`` of DLinear (Zeng et al. 2023): the window splits into a moving-average trend
        (``kernel`` steps, ends padded by repetition) and the remainder, and one Linear(L, H) maps
        each; shared across channels. Fitted by least squares on the training windows (closed form,
        float64, a ``ridge`` relative to the mean feature energy; deterministic). Both parts are
        linear in the window, so this is the best linear forecast of a channel from its lookback."""
        datamodule.setup("fit")
        gram = cross = None
        for batch in _eval_loader(datamodule, "train"):
            features, targets = _dlinear_rows(batch["x"][..., -self.net.n_targets :], kernel), _channel_rows(batch["y"])
            gram = features.T @ features + (0 if gram is None else gram)
            cross = features.T @ targets + (0 if cross is None else cross)
        if gram is None:
            raise DataError("the DLinear baseline needs training windows; the training split has none")
        eye = torch.eye(len(gram), dtype=gram.dtype)
        weights = torch.linalg.solve(gram + (ridge * gram.diagonal().mean() + 1e-12) * eye, cross)

        def predict(x: Tensor, y: Tensor) -> Tensor:
            rows = _dlinear_rows(x, kernel) @ weights  # (B * C, H)
            return rows.view(x.shape[0], x.shape[2], -1).transpose(1, 2).to(y.dtype)

        return self._test_scores(datamodule, metrics, predict)

    def _test_scores(self, datamodule: L.LightningDataModule, metrics: MetricCollection, forecast) -> dict[str, float]:
        """``metrics`` over the test windows of ``forecast(x_targets, y)``, where ``x_targets`` are the
        window's target channels (B, L, C_out)."""
        datamodule.setup("test")
        for batch in datamodule.test_dataloader():
            pred = forecast(batch["x"][..., -self.net.n_targets :], batch["y"])
            metrics.update(pred.contiguous(), batch["y"])
        return {k: float(v) for k, v in metrics.compute().items()}

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        L_, H, C, F_ = net.lookback, net.horizon, net.n_channels, net.n_time_features
        names = ["x", "x_mark", "y_mark"] if F_ and net.head_kind == "decoder" else ["x", "x_mark"] if F_ else ["x"]
        gen = torch.Generator().manual_seed(0)

        def make(b: int) -> tuple[Tensor, ...]:
            x = torch.randn(b, L_, C, generator=gen)
            marks = [torch.rand(b, n, F_, generator=gen) - 0.5 for n in (L_, H)]
            return (x, *marks)[: len(names)]

        module, units = self._raw_units(net)
        scale = module.out_scale if isinstance(module, ScaledIO) else None
        doc = {"x": f"(batch, {L_}, {C}) the last {L_} observations of {self._input_columns()}, {units}",
               "y": f"(batch, {H}, {net.n_targets}) the next {H} steps of {self._target_columns()}, {units}"}
        if F_:
            doc["x_mark"] = (f"(batch, {L_}, {F_}) time features of the input steps "
                             "(seqzoo.datasets.forecasting.reader.time_features)")
            doc["y_mark"] = f"(batch, {H}, {F_}) time features of the forecast steps"
        return ExportSpec(
            module=module,
            example_inputs=make(2),
            input_names=names,
            output_names=["y"],
            # The lookback is fixed by the head (Linear over time); only the batch is free.
            dynamic={n: {0: "batch"} for n in names},
            check_inputs=[make(2), make(5)],
            doc={k: v for k, v in doc.items() if k in names or k == "y"},
            output_scale=scale,
        )

    # -- raw units in the exported graphs ---------------------------------------------------
    def _raw_units(self, module: nn.Module) -> tuple[nn.Module, str]:
        """``module`` wrapped to take and give the data's units when the trained scaler is known
        (``data_transform``, attached by ``seqzoo.load``), with how the doc names the units."""
        t = getattr(self, "data_transform", None) or {}
        if not t.get("scaled"):
            return module, "in the data's units" if t else "in the units the model was trained on"
        cols, mean, scale = t["columns"], t["mean"], t["scale"]
        ins = [cols.index(c) for c in self._input_columns()]
        outs = [cols.index(c) for c in self._target_columns()]
        wrapped = ScaledIO(module, [mean[i] for i in ins], [scale[i] for i in ins],
                           [mean[i] for i in outs], [scale[i] for i in outs])
        return wrapped, "in the data's units (the training scaler is inside the graph)"

    def _input_columns(self) -> list[str] | str:
        t = getattr(self, "data_transform", None) or {}
        if not t:
            return "the input channels"
        return [t["target"]] if t.get("features") == "S" else list(t["columns"])

    def _target_columns(self) -> list[str] | str:
        t = getattr(self, "data_transform", None) or {}
        return list(t["targets"]) if t else "the target channels"

    def streaming_requirements(self) -> str | None:
        net = self.net
        problems = []
        if not type(net.backbone).streaming:
            problems.append(f"backbone {type(net.backbone).name!r} does not stream")
        elif not net.backbone.is_causal:
            problems.append("the backbone must be built with causal: true")
        if net.head_kind != "last":
            problems.append(f"head must be 'last' (the {net.head_kind!r} head reads the whole window)")
        if net.embedding_kind != "linear":
            problems.append("embedding must be 'linear' (the conv embedding wraps around the window)")
        if net.revin:
            problems.append("revin must be false (window statistics need the whole window)")
        if net.n_time_features:
            problems.append("use_time_features must be false")
        return "streaming export of a forecasting model: " + "; ".join(problems) if problems else None

    def export_step_spec(self) -> ExportSpec:
        problems = self.streaming_requirements()
        if problems:
            raise ConfigError(problems)
        net = self.net.eval().cpu()
        spec = step_spec(ForecastStepper(net), net.n_channels, in_dtype=torch.float32,
                         generator=torch.Generator().manual_seed(0))
        spec.module, units = self._raw_units(spec.module)
        spec.output_scale = spec.module.out_scale if isinstance(spec.module, ScaledIO) else None
        spec.doc = {"x_t": f"(batch, {net.n_channels}) one new observation of {self._input_columns()}, {units}",
                    "y_t": f"(batch, {net.horizon}, {net.n_targets}) the forecast of the next {net.horizon} steps of "
                           f"{self._target_columns()} after it, {units}"}
        return spec


def _eval_loader(datamodule: L.LightningDataModule, split: str):
    """A split's windows in order, every one (the data module's evaluation loader)."""
    if hasattr(datamodule, "eval_dataloader"):
        return datamodule.eval_dataloader(split)
    return {"train": datamodule.train_dataloader, "test": datamodule.test_dataloader}[split]()


def _channel_rows(y: Tensor) -> Tensor:
    """(B, T, C) -> (B * C, T) in float64: one row per window and channel."""
    return y.double().transpose(1, 2).reshape(-1, y.shape[1])


def _dlinear_rows(x: Tensor, kernel: int) -> Tensor:
    """DLinear's features per window and channel: [remainder (L), trend (L), 1]."""
    rows = _channel_rows(x)  # (N, L)
    front, back = (kernel - 1) // 2, kernel // 2
    padded = torch.cat([rows[:, :1].expand(-1, front), rows, rows[:, -1:].expand(-1, back)], dim=1)
    trend = padded.unfold(1, kernel, 1).mean(dim=-1)
    return torch.cat([rows - trend, trend, torch.ones_like(rows[:, :1])], dim=1)

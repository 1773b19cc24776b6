"""Long-horizon multivariate forecasting: x (B, L, C) -> y (B, H, C_out).

Pipeline: instance normalisation (RevIN without affine, as iTransformer: subtract
the window mean, divide by sqrt(var + 1e-5), undo at the end) -> embedding ->
backbone -> head. Two token kinds:

* time tokens: per step, a value embedding (``linear``: Linear(C, D); ``conv``: Informer's
  Conv1d(C, D, kernel 3, circular)) plus a projection of the time features and positions.
  Heads: ``linear`` maps time L -> H then D -> C_out; ``last`` maps the last token to the
  whole horizon (and can stream); ``decoder`` is Informer's generative decoder, which
  cross-attends to the backbone's output (to its distilled form where the backbone has
  one, as Informer's encoder) and predicts the horizon in one pass;
* variate tokens (iTransformer): Linear(L, D) per variate, time features as extra tokens
  dropped at the output; head Linear(D, H) per variate token.

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
from seqzoo.backbones.blocks import CircularConv1d, PostNormBlock, make_mlp, make_norm
from seqzoo.backbones.informer import Attention, ProbSparseSelfAttention
from seqzoo.backbones.transformer import CrossAttention
from seqzoo.domains.base import Batch, BaseTask, PositionalEmbedding
from seqzoo.errors import ConfigError
from seqzoo.export_spec import ExportSpec, step_spec

Head = Literal["linear", "last", "decoder"]
Embedding = Literal["linear", "conv"]
Positions = Literal["sinusoidal", "learned", "none"]



def instance_normalise(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Instance normalisation of a window (B, L, C) over time, as in RevIN without the affine
    part and iTransformer's ``use_norm``: returns the normalised window and (mean, std),
    the statistics taken as constants (no gradient through the mean)."""
    mean = x.mean(dim=1, keepdim=True).detach()
    std = torch.sqrt(torch.var(x - mean, dim=1, keepdim=True, unbiased=False) + eps)
    return (x - mean) / std, (mean, std)


def instance_denormalise(y: Tensor, stats: tuple[Tensor, Tensor], n_targets: int) -> Tensor:
    """Undo :func:`instance_normalise` on a forecast (B, H, n_targets) of the last channels."""
    mean, std = stats
    return y * std[..., -n_targets:] + mean[..., -n_targets:]

class ForecastingNet(nn.Module):
    """Normalisation -> embedding -> backbone -> head, on plain tensors.

    ``forward(x, x_mark, y_mark)``: the window (B, L, C), its time features (B, L, F) and,
    for the decoder head, the horizon's time features (B, H, F) -- calendar values known
    in advance, as Informer's decoder uses them.
    """

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
        positions: Positions = "sinusoidal",
        embed_dropout: float = 0.0,
        embedding: Embedding = "linear",
        label_len: int | None = None,
        decoder_layers: int = 1,
        decoder_heads: int = 8,
        decoder_mlp_ratio: float = 4.0,
        decoder_attention: Attention = "prob",
        decoder_factor: int = 5,
    ) -> None:
        super().__init__()
        if n_targets > n_channels:
            raise ConfigError(f"n_targets ({n_targets}) cannot exceed n_channels ({n_channels})")
        if head not in ("linear", "last", "decoder"):
            raise ConfigError(f"head must be 'linear', 'last' or 'decoder', got {head!r}")
        if embedding not in ("linear", "conv"):
            raise ConfigError(f"embedding must be 'linear' or 'conv', got {embedding!r}")
        d = backbone.d_model
        self.backbone = backbone
        self.n_channels, self.n_targets = n_channels, n_targets
        self.lookback, self.horizon = lookback, horizon
        self.n_time_features = n_time_features
        self.revin, self.head_kind, self.embedding_kind = revin, head, embedding
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
                label_len=lookback // 2 if label_len is None else label_len, n_layers=decoder_layers,
                n_heads=decoder_heads, mlp_ratio=decoder_mlp_ratio, attention=decoder_attention,
                factor=decoder_factor, dropout=backbone.dropout_p, embedding=embedding, positions=positions,
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
            shrunk = getattr(self.backbone, "forward_shrunk", None)
            memory = shrunk(tokens)[0] if shrunk is not None else self.backbone(tokens)
            return self.head(x, memory, x_mark, y_mark)
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


class TimeEmbedding(nn.Module):
    """Time tokens from observations (B, L, C) and their time features (B, L, F):

        token_t = ValueEmbedding(x)_t + W_f f_t + position_t,   then dropout

    ValueEmbedding is Linear(C, D) per step (``linear``) or Informer's token embedding,
    Conv1d(C, D, kernel 3, circular padding) with Kaiming-normal weights (``conv``).
    """

    def __init__(
        self,
        n_values: int,
        n_time_features: int,
        d_model: int,
        max_len: int,
        *,
        kind: Embedding = "linear",
        positions: Positions = "sinusoidal",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.values = CircularConv1d(n_values, d_model)
            nn.init.kaiming_normal_(self.values.weight, mode="fan_in", nonlinearity="leaky_relu")
        else:
            self.values = nn.Linear(n_values, d_model)
        self.marks = nn.Linear(n_time_features, d_model) if n_time_features else None
        self.positions = PositionalEmbedding(positions, max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, marks: Tensor | None = None) -> Tensor:
        h = self.values(x)
        if self.marks is not None:
            h = h + self.marks(marks)
        return self.dropout(self.positions(h))

    def step(self, x_t: Tensor, t: Tensor) -> Tensor:
        """One step's token (``linear`` embedding without time features): x_t (B, C), t (B,)."""
        return self.positions.at(self.values(x_t), t)


class GenerativeDecoder(nn.Module):
    """Informer's generative-style decoder: the whole horizon in one forward pass.

    Decoder input: the last ``label_len`` observed steps (start tokens) followed by
    ``horizon`` zeros, embedded like the encoder input (with the time features of those
    steps, which are known in advance). Each layer (post-LN, as Informer's ``DecoderLayer``):

        h <- LN(h + Dropout(MaskedSelfAttention(h)))       ProbSparse (or full), causal
        h <- LN(h + Dropout(CrossAttention(h, memory)))    full attention to the encoder
        h <- LN(h + FFN(h))

    then a final LayerNorm and Linear(D, n_targets); the last ``horizon`` outputs are the
    forecast. Informer's ``mix`` option (a head/position reshuffle of the self-attention
    output) is not reproduced.
    """

    def __init__(
        self,
        n_values: int,
        n_time_features: int,
        n_targets: int,
        d_model: int,
        *,
        lookback: int,
        horizon: int,
        label_len: int,
        n_layers: int = 1,
        n_heads: int = 8,
        mlp_ratio: float = 4.0,
        attention: Attention = "prob",
        factor: int = 5,
        dropout: float = 0.0,
        embedding: Embedding = "linear",
        positions: Positions = "sinusoidal",
        embed_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= label_len <= lookback:
            raise ConfigError(f"label_len (start tokens of the decoder) must be in [0, lookback={lookback}], "
                              f"got {label_len}")
        if n_layers < 1:
            raise ConfigError(f"decoder_layers must be >= 1, got {n_layers}")
        self.lookback, self.horizon, self.label_len = lookback, horizon, label_len
        self.embedding = TimeEmbedding(n_values, n_time_features, d_model, label_len + horizon, kind=embedding,
                                       positions=positions, dropout=embed_dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, mlp_ratio=mlp_ratio, attention=attention, factor=factor,
                         dropout=dropout, stream=i)
            for i in range(n_layers)
        )
        self.norm = make_norm("layer", d_model)
        self.projection = nn.Linear(d_model, n_targets)

    def forward(self, x: Tensor, memory: Tensor, x_mark: Tensor | None = None, y_mark: Tensor | None = None) -> Tensor:
        """x: the (normalised) window (B, L, C); memory: the encoder output (B, S, D)."""
        start = x[:, self.lookback - self.label_len :]
        tokens = torch.cat([start, start.new_zeros(x.shape[0], self.horizon, x.shape[2])], dim=1)
        marks = None
        if x_mark is not None:
            marks = torch.cat([x_mark[:, self.lookback - self.label_len :], y_mark], dim=1)
        h = self.embedding(tokens, marks)
        for layer in self.layers:
            h = layer(h, memory)
        return self.projection(self.norm(h[:, self.label_len :]))


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder, FFN; each post-LN."""

    def __init__(self, d_model: int, n_heads: int, *, mlp_ratio: float, attention: Attention, factor: int,
                 dropout: float, stream: int = 0) -> None:
        super().__init__()
        self_attention = ProbSparseSelfAttention(d_model, n_heads, attention=attention, factor=factor, causal=True,
                                                 dropout=dropout, stream=stream)
        self.self_attention = PostNormBlock(d_model, self_attention, mlp="none", dropout=dropout)
        self.cross_attention = CrossAttention(d_model, n_heads, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.norm_cross = make_norm("layer", d_model)
        self.mlp = make_mlp("gelu", d_model, mlp_ratio, dropout)
        self.norm_mlp = make_norm("layer", d_model)

    def forward(self, h: Tensor, memory: Tensor) -> Tensor:
        h = self.self_attention(h)
        h = self.norm_cross(h + self.drop(self.cross_attention(h, memory)))
        return self.norm_mlp(h + self.mlp(h))


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

    Embedding and head options (see the module docstring): ``embedding`` linear | conv,
    ``head`` linear | last | decoder; the decoder head takes ``label_len`` start tokens
    (default: half the lookback), ``decoder_layers``, ``decoder_heads``,
    ``decoder_mlp_ratio``, ``decoder_attention`` (prob | full, causal) with ProbSparse
    factor ``decoder_factor``, and the backbone's dropout. With ``use_time_features`` the
    decoder tokens carry the time features of their steps (the horizon's included).
    """

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
        positions: Positions = "sinusoidal",
        embed_dropout: float = 0.0,
        embedding: Embedding = "linear",
        label_len: int | None = None,
        decoder_layers: int = 1,
        decoder_heads: int = 8,
        decoder_mlp_ratio: float = 4.0,
        decoder_attention: Attention = "prob",
        decoder_factor: int = 5,
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
            embedding=embedding,
            label_len=label_len,
            decoder_layers=decoder_layers,
            decoder_heads=decoder_heads,
            decoder_mlp_ratio=decoder_mlp_ratio,
            decoder_attention=decoder_attention,
            decoder_factor=decoder_factor,
        )
        self.set_metrics()

    def make_metrics(self) -> MetricCollection:
        """The validation and test metrics, unprefixed (subclasses report others)."""
        return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})

    def set_metrics(self) -> None:
        """``val_metrics`` and ``test_metrics``: :meth:`make_metrics` prefixed ``val/`` and ``test/``."""
        metrics = self.make_metrics()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

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

    # -- baseline and export ----------------------------------------------------------
    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Repeat the last observed value of each target over the horizon."""
        return "repeat last value", self.repeat_last_scores(datamodule, self.test_metrics.clone())

    def repeat_last_scores(self, datamodule: L.LightningDataModule, metrics: MetricCollection) -> dict[str, float]:
        """``metrics`` (test-prefixed) of the repeat-last-value forecast over the test windows."""
        datamodule.setup("test")
        for batch in datamodule.test_dataloader():
            pred = batch["x"][:, -1:, -self.net.n_targets :].expand_as(batch["y"]).contiguous()
            metrics.update(pred, batch["y"])
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
            problems.append(f"head must be 'last' (the {net.head_kind!r} head reads the whole window)")
        if net.embedding_kind != "linear":
            problems.append("embedding must be 'linear' (the conv embedding wraps around the window)")
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
        self.set_metrics()

    @classmethod
    def incompatibility(cls, backbone_cls: type[Backbone]) -> str | None:
        if not issubclass(backbone_cls, MambaMixer):
            return "TSM2 is built from MambaMixer blocks (use backbone mambamixer)"
        return super().incompatibility(backbone_cls)

    def tokens_per_sample(self, batch: Batch) -> int:
        return int(batch["x"].shape[2]) * self.net.n_patches

    def export_step_spec(self) -> ExportSpec:
        raise ConfigError("TSM2 mixes whole patches of the lookback window: it has no one-step (streaming) export")

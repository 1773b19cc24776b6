"""Synthetic graph tasks in the seqzoo graph format (``seqzoo data synth graph --task ...``).

* ``pattern`` (node level, 2 classes) -- PATTERN-like (Dwivedi et al., "Benchmarking GNNs"):
  stochastic-block-model graphs (3 communities of 10-20 nodes, p = 0.5 inside, q = 0.1
  across) with a planted dense pattern of 6 nodes (p = 0.9 inside, q = 0.1 to the rest);
  a node's label is whether it belongs to the pattern. Node features are random one-hot
  colours in {0, 1, 2} and carry no label information: only structure does.
* ``connectivity`` (graph level) -- two random connected halves of a 20-60-node graph, joined
  by one bridge edge with probability 1/2; is the graph connected? Constant node features.
* ``cycle`` (graph level) -- does the graph contain a cycle? Negatives are forests of k = 1-3
  random trees (E = N - k); positives are k + 1 components one of which has exactly one
  cycle (E = N - (k + 1) + 1 = N - k): both classes have the same node and edge counts, so
  the answer needs the component count (the cycle rank E - N + C), a global quantity.
* ``sp_parity`` (graph level) -- a connected random graph with a marked source and target
  (features [1, is_source, is_target]); is their shortest-path distance even? Pairs at
  distance >= 2, classes balanced.

Node ids are shuffled in every graph, so no task can be solved from node order. Splits are
80/10/10 of the graphs with a fixed seed.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import torch

from seqzoo.datasets.base import register_synth
from seqzoo.datasets.graph.reader import save_graphs
from seqzoo.errors import ConfigError

TASKS = ("pattern", "connectivity", "cycle", "sp_parity")


@register_synth("graph")
def synth_graph(out: str, task: str = "pattern", n_graphs: int = 600, min_nodes: int = 20, max_nodes: int = 60,
                seed: int = 0) -> Path:
    """Write a synthetic graph task (pattern, connectivity, cycle or sp_parity) in the seqzoo graph format.

    Args:
        out: output folder.
        task: one of pattern, connectivity, cycle, sp_parity.
        n_graphs: number of graphs.
        min_nodes: smallest graph (algorithmic tasks).
        max_nodes: largest graph (algorithmic tasks).
        seed: random seed.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown synthetic graph task {task!r}; choose one of {', '.join(TASKS)}")
    if n_graphs < 10:
        raise ConfigError(f"n_graphs must be >= 10, got {n_graphs}")
    if not 4 <= min_nodes <= max_nodes:
        raise ConfigError(f"need 4 <= min_nodes <= max_nodes, got {min_nodes}, {max_nodes}")
    rng = np.random.default_rng(seed)
    make = {"pattern": _pattern, "connectivity": _connectivity, "cycle": _cycle, "sp_parity": _sp_parity}[task]
    graphs = []
    for i in range(n_graphs):
        label = i % 2  # balanced graph-level classes
        graphs.append(make(rng, label, min_nodes, max_nodes))
    order = rng.permutation(n_graphs)
    n_train, n_val = int(0.8 * n_graphs), int(0.1 * n_graphs)
    split = {"train": order[:n_train].tolist(), "val": order[n_train:n_train + n_val].tolist(),
             "test": order[n_train + n_val:].tolist()}
    level = "node" if task == "pattern" else "graph"
    names = ["background", "pattern"] if task == "pattern" else [f"not {task}", task]
    if task == "sp_parity":
        names = ["odd distance", "even distance"]
    return save_graphs(out, graphs, level=level, task="classification", split=split, class_names=names,
                       source=f"seqzoo synthetic graph task {task!r} (seed {seed})")


def _record(n: int, edges: list[tuple[int, int]], x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict:
    perm = rng.permutation(n)  # new id of old node i is perm[i]
    inv = np.argsort(perm)
    both = [(perm[u], perm[v]) for u, v in edges] + [(perm[v], perm[u]) for u, v in edges]
    edge_index = torch.tensor(sorted(both), dtype=torch.long).t().reshape(2, -1)
    x_new = torch.tensor(x[inv], dtype=torch.float32)
    y_new = torch.tensor(y[inv] if len(y) == n else y, dtype=torch.long)
    return {"x": x_new, "edge_index": edge_index, "y": y_new}


def _random_tree(nodes: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """A uniform random labelled tree on ``nodes`` (random attachment order)."""
    order = list(rng.permutation(nodes))
    return [(int(order[i]), int(order[rng.integers(i)])) for i in range(1, len(order))]


def _pattern(rng: np.random.Generator, label: int, min_nodes: int, max_nodes: int) -> dict:
    sizes = rng.integers(10, 21, size=3).tolist() + [6]
    block = np.repeat(np.arange(4), sizes)
    n = len(block)
    p = np.full((4, 4), 0.1)
    p[np.arange(3), np.arange(3)] = 0.5
    p[3, 3] = 0.9
    upper = rng.random((n, n)) < p[block][:, block]
    edges = [(int(u), int(v)) for u, v in zip(*np.nonzero(np.triu(upper, 1)))]
    colours = np.eye(3, dtype=np.float32)[rng.integers(3, size=n)]
    return _record(n, edges, colours, (block == 3).astype(np.int64), rng)


def _connected_graph(nodes: list[int], rng: np.random.Generator, extra: float = 0.05) -> list[tuple[int, int]]:
    edges = set(tuple(sorted(e)) for e in _random_tree(nodes, rng))
    for i, u in enumerate(nodes):
        for v in nodes[i + 1:]:
            if rng.random() < extra:
                edges.add((u, v))
    return sorted(edges)


def _connectivity(rng: np.random.Generator, label: int, min_nodes: int, max_nodes: int) -> dict:
    n = int(rng.integers(min_nodes, max_nodes + 1))
    half = n // 2
    a, b = list(range(half)), list(range(half, n))
    edges = _connected_graph(a, rng) + _connected_graph(b, rng)
    if label:
        edges.append((int(rng.choice(a)), int(rng.choice(b))))
    return _record(n, edges, np.ones((n, 1), np.float32), np.array([label]), rng)


def _cycle(rng: np.random.Generator, label: int, min_nodes: int, max_nodes: int) -> dict:
    n = int(rng.integers(min_nodes, max_nodes + 1))
    k = int(rng.integers(1, 4)) + label  # components
    cuts = np.sort(rng.choice(np.arange(3, n - 2), size=k - 1, replace=False)) if k > 1 else np.array([], int)
    parts = [list(range(s, e)) for s, e in zip([0, *cuts.tolist()], [*cuts.tolist(), n])]
    edges = [e for part in parts for e in _random_tree(part, rng)]
    if label:  # close one cycle inside the largest component
        part = max(parts, key=len)
        present = {tuple(sorted(e)) for e in edges}
        candidates = [(u, v) for i, u in enumerate(part) for v in part[i + 1:] if (u, v) not in present]
        edges.append(candidates[int(rng.integers(len(candidates)))])
    return _record(n, edges, np.ones((n, 1), np.float32), np.array([label]), rng)


def _sp_parity(rng: np.random.Generator, label: int, min_nodes: int, max_nodes: int) -> dict:
    while True:
        n = int(rng.integers(min_nodes, max_nodes + 1))
        edges = _connected_graph(list(range(n)), rng, extra=0.03)
        dist = _distances(n, edges, 0)
        even = label == 1
        candidates = [v for v in range(n) if dist[v] >= 2 and (dist[v] % 2 == 0) == even]
        if candidates:
            break
    t = int(rng.choice(candidates))
    x = np.zeros((n, 3), np.float32)
    x[:, 0], x[0, 1], x[t, 2] = 1.0, 1.0, 1.0
    return _record(n, edges, x, np.array([label]), rng)


def _distances(n: int, edges: list[tuple[int, int]], source: int) -> list[int]:
    adj = [[] for _ in range(n)]
    for u, v in edges:
        adj[u].append(v)
        adj[v].append(u)
    dist = [-1] * n
    dist[source] = 0
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for w in adj[u]:
            if dist[w] < 0:
                dist[w] = dist[u] + 1
                queue.append(w)
    return dist

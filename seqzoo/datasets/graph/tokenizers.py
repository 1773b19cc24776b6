"""Graph tokenizers: a graph becomes ordered node sequences for a sequence backbone.

GSM (Behrouz et al., "Best of Both Worlds: Advantages of Hybrid Graph Sequence Models",
ICML 2025) splits a graph sequence model into tokenization, local encoding (a GNN) and
global encoding (a sequence model). Two kinds of tokenizer are provided:

*Node tokenizers* (one sequence per graph, every node once; the node's output is read at
its own position):

* ``degree`` -- nodes by decreasing degree, ties by node id;
* ``bfs``    -- breadth-first from the highest-degree node (ties: smallest id), neighbours
  in increasing id order; each further component starts at its highest-degree node;
* ``hac``    -- GSM++'s hierarchical affinity clustering (below).

*Subgraph tokenizers* (one sequence per node, ending at that node, so that a causal model
has seen the whole subgraph when it reaches the centre; sequences are padded on the right
and the node's output is read at the last valid position):

* ``random_walk`` -- a walk of ``walk_length`` nodes ending at the node (the walk is drawn
  from the node and reversed), drawn from a generator seeded with ``seed`` per graph, so the
  tokens are the same every epoch;
* ``khop`` -- the nodes within ``hops`` hops, farthest first (ties by node id), the centre
  last, at most ``max_tokens``.

Hierarchical affinity clustering (HAC, as in affinity clustering, Bateni et al. 2017, the
algorithm GSM++ uses): every node starts as its own cluster; in each round every cluster
picks the neighbouring cluster of highest affinity (average edge affinity between the two;
ties to the smallest cluster id) and all picked pairs merge at once (connected components
of the picks). Rounds repeat until no two clusters are adjacent; the remaining clusters
(one per connected component) hang under one root. A cluster with no neighbouring cluster
is carried up a level unchanged, so every leaf sits at the same depth. The tree's depth is at most
ceil(log2 N) + 1, since each round at least halves the clusters of every component. The
sequence is the tree's leaves in depth-first order, children ordered by their smallest node
id, so every cluster is a contiguous run of tokens. Edge affinity: ``structure`` (default) =
Jaccard similarity of the closed neighbourhoods N[u], N[v]; ``features`` = cosine
similarity of the node features. Self-loops never count as adjacency.

Hierarchical positional encoding (HPE): for node v, the ranks of v's ancestors among their
siblings, from the root down (``hpe[v, l]`` = rank of the level-l ancestor; -1 below v's
depth), so nodes in the same cluster share a prefix. The task embeds each level's rank.

Everything here is deterministic; tie-breaking is stated above and tested.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seqzoo.errors import ConfigError

NODE_TOKENIZERS = ("degree", "bfs", "hac")
SUBGRAPH_TOKENIZERS = ("random_walk", "khop")
TOKENIZERS = NODE_TOKENIZERS + SUBGRAPH_TOKENIZERS
HPE_LEVELS = 8
"""Levels of the hierarchical positional encoding kept (deeper ancestors are dropped)."""


@dataclass
class Tokens:
    """A tokenized graph: ``tokens`` (S, L) node ids padded with 0, ``mask`` (S, L) valid
    positions, ``hpe`` (N, HPE_LEVELS) sibling ranks (-1 = none)."""

    tokens: Tensor
    mask: Tensor
    hpe: Tensor


def check_tokenizer(name: str) -> str:
    if name not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    return name


def readout_of(name: str) -> str:
    """How a node's output is read: ``"position"`` (node tokenizers) or ``"last"`` (subgraph)."""
    return "position" if check_tokenizer(name) in NODE_TOKENIZERS else "last"


def tokenize(
    edge_index: Tensor,
    num_nodes: int,
    tokenizer: str,
    *,
    x: Tensor | None = None,
    affinity: str = "structure",
    walk_length: int = 8,
    hops: int = 2,
    max_tokens: int = 32,
    seed: int = 0,
) -> Tokens:
    """Tokenize one graph (``edge_index`` (2, E), node ids in [0, num_nodes))."""
    check_tokenizer(tokenizer)
    neighbours = adjacency_lists(edge_index, num_nodes)
    hpe = torch.full((num_nodes, HPE_LEVELS), -1, dtype=torch.long)
    if tokenizer == "degree":
        return _single(degree_order(neighbours), hpe)
    if tokenizer == "bfs":
        return _single(bfs_order(neighbours), hpe)
    if tokenizer == "hac":
        order, hpe = hac_order(neighbours, x=x, affinity=affinity)
        return _single(order, hpe)
    if tokenizer == "random_walk":
        if walk_length < 1:
            raise ConfigError(f"walk_length must be >= 1, got {walk_length}")
        rng = np.random.default_rng(seed)
        seqs = [random_walk_to(v, neighbours, walk_length, rng) for v in range(num_nodes)]
    else:
        if hops < 1 or max_tokens < 1:
            raise ConfigError(f"hops and max_tokens must be >= 1, got {hops} and {max_tokens}")
        seqs = [khop_sequence(v, neighbours, hops, max_tokens) for v in range(num_nodes)]
    return _pad(seqs, hpe)


def adjacency_lists(edge_index: Tensor, num_nodes: int) -> list[list[int]]:
    """Sorted, de-duplicated undirected neighbour lists without self-loops."""
    sets: list[set[int]] = [set() for _ in range(num_nodes)]
    for u, v in edge_index.t().tolist():
        if u != v:
            sets[u].add(v)
            sets[v].add(u)
    return [sorted(s) for s in sets]


def degree_order(neighbours: list[list[int]]) -> list[int]:
    return sorted(range(len(neighbours)), key=lambda v: (-len(neighbours[v]), v))


def bfs_order(neighbours: list[list[int]]) -> list[int]:
    seen = [False] * len(neighbours)
    order: list[int] = []
    for start in degree_order(neighbours):
        if seen[start]:
            continue
        seen[start] = True
        queue = deque([start])
        while queue:
            u = queue.popleft()
            order.append(u)
            for w in neighbours[u]:
                if not seen[w]:
                    seen[w] = True
                    queue.append(w)
    return order


def edge_affinities(neighbours: list[list[int]], x: Tensor | None, affinity: str) -> dict[tuple[int, int], float]:
    """Affinity of every undirected edge (u < v)."""
    if affinity not in ("structure", "features"):
        raise ConfigError(f"affinity must be 'structure' or 'features', got {affinity!r}")
    if affinity == "features":
        if x is None:
            raise ConfigError("affinity='features' needs node features")
        feats = torch.nn.functional.normalize(x.double().reshape(len(neighbours), -1), dim=1)
    closed = [set(nb) | {v} for v, nb in enumerate(neighbours)]
    out = {}
    for u, nb in enumerate(neighbours):
        for v in nb:
            if u < v:
                if affinity == "structure":
                    out[(u, v)] = len(closed[u] & closed[v]) / len(closed[u] | closed[v])
                else:
                    out[(u, v)] = float(feats[u] @ feats[v])
    return out


def hac_order(
    neighbours: list[list[int]], *, x: Tensor | None = None, affinity: str = "structure"
) -> tuple[list[int], Tensor]:
    """(leaf order, HPE) of the hierarchical affinity clustering tree (module docstring)."""
    n = len(neighbours)
    weights = edge_affinities(neighbours, x, affinity)
    # A tree node is (level, cluster id); a cluster's id is its smallest node id.
    tree: dict[tuple[int, int], list[tuple[int, int]]] = {}
    leaves: dict[int, list[int]] = {v: [v] for v in range(n)}
    current: dict[int, tuple[int, int]] = {v: (0, v) for v in range(n)}
    cluster_of = list(range(n))
    level = 0
    while True:
        links: dict[tuple[int, int], list[float]] = {}
        for (u, v), w in weights.items():
            a, b = cluster_of[u], cluster_of[v]
            if a != b:
                links.setdefault((min(a, b), max(a, b)), []).append(w)
        if not links:
            break
        best: dict[int, tuple[float, int]] = {}  # cluster -> (affinity, chosen neighbour)
        for (a, b), ws in sorted(links.items()):
            score = sum(ws) / len(ws)
            for c, other in ((a, b), (b, a)):
                if c not in best or score > best[c][0] or (score == best[c][0] and other < best[c][1]):
                    best[c] = (score, other)
        parent = {c: c for c in current}

        def find(c: int) -> int:
            while parent[c] != c:
                parent[c] = parent[parent[c]]
                c = parent[c]
            return c

        for c, (_, other) in sorted(best.items()):
            ra, rb = find(c), find(other)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        groups: dict[int, list[int]] = {}
        for c in sorted(current):
            groups.setdefault(find(c), []).append(c)
        level += 1
        new_current, new_leaves = {}, {}
        for root, cs in groups.items():  # root is the smallest cluster id, i.e. the smallest node id
            new_current[root] = (level, root)
            tree[(level, root)] = [current[c] for c in cs]
            new_leaves[root] = [v for c in cs for v in leaves[c]]
            for v in new_leaves[root]:
                cluster_of[v] = root
        current, leaves = new_current, new_leaves
    root_node = (level + 1, -1)
    tree[root_node] = [current[c] for c in sorted(current)]
    order: list[int] = []
    hpe = torch.full((n, HPE_LEVELS), -1, dtype=torch.long)
    stack: list[tuple[tuple[int, int], list[int]]] = [(root_node, [])]
    while stack:  # depth-first, children by smallest node id (= their cluster id)
        node, ranks = stack.pop()
        if node[0] == 0:
            order.append(node[1])
            kept = ranks[:HPE_LEVELS]
            hpe[node[1], : len(kept)] = torch.tensor(kept, dtype=torch.long)
            continue
        kids = sorted(tree[node], key=lambda k: k[1])
        for rank in range(len(kids) - 1, -1, -1):
            stack.append((kids[rank], ranks + [rank]))
    return order, hpe


def random_walk_to(v: int, neighbours: list[list[int]], length: int, rng: np.random.Generator) -> list[int]:
    walk = [v]
    while len(walk) < length and neighbours[walk[-1]]:
        nb = neighbours[walk[-1]]
        walk.append(nb[int(rng.integers(len(nb)))])
    return walk[::-1]


def khop_sequence(v: int, neighbours: list[list[int]], hops: int, max_tokens: int) -> list[int]:
    dist = {v: 0}
    frontier = [v]
    for d in range(1, hops + 1):
        nxt = []
        for u in frontier:
            for w in neighbours[u]:
                if w not in dist:
                    dist[w] = d
                    nxt.append(w)
        frontier = nxt
    ordered = sorted(dist, key=lambda u: (dist[u], u))[:max_tokens]  # nearest first, centre at 0
    return ordered[::-1]  # farthest first, centre last


def _single(order: list[int], hpe: Tensor) -> Tokens:
    tokens = torch.tensor(order, dtype=torch.long).reshape(1, -1)
    return Tokens(tokens=tokens, mask=torch.ones_like(tokens, dtype=torch.bool), hpe=hpe)


def _pad(seqs: list[list[int]], hpe: Tensor) -> Tokens:
    length = max((len(s) for s in seqs), default=1)
    tokens = torch.zeros(len(seqs), length, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for i, s in enumerate(seqs):  # left-aligned, padded on the right; the centre is the last valid token
        tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return Tokens(tokens=tokens, mask=mask, hpe=hpe)


@dataclass
class BatchTokens:
    """A batch of tokenized graphs, node ids global to the batch.

    ``tokens``/``mask`` (S, L); ``node_position`` (N,) the flat index (row * L + column) of the
    token whose output a node reads; ``hpe`` (N, HPE_LEVELS); ``assign`` (graphs, N) one-hot
    graph membership (the pooling matrix).
    """

    tokens: Tensor
    mask: Tensor
    node_position: Tensor
    hpe: Tensor
    assign: Tensor


class TokenCache:
    """Tokenizes each graph once (keyed on its ``graph_id``) and collates PyG batches.

    Args:
        name: the tokenizer (one of :data:`TOKENIZERS`).
        **options: its options (affinity, walk_length, hops, max_tokens); random walks are
            seeded with the graph id.
    """

    def __init__(self, name: str, **options) -> None:
        self.name = check_tokenizer(name)
        self.options = options
        self._cache: dict[int, tuple[Tokens, Tensor]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def graph_tokens(self, graph_id: int, edge_index: Tensor, num_nodes: int, x: Tensor | None = None) -> tuple[Tokens, Tensor]:
        """(tokens, local read position per node as (row, column)) of one graph, cached."""
        if graph_id not in self._cache:
            tok = tokenize(edge_index.cpu(), num_nodes, self.name, x=None if x is None else x.cpu(),
                           seed=graph_id % 2**32, **self.options)
            if readout_of(self.name) == "position":
                where = torch.empty(num_nodes, 2, dtype=torch.long)
                where[tok.tokens[0], 0] = 0
                where[tok.tokens[0], 1] = torch.arange(tok.tokens.shape[1])
            else:
                where = torch.stack([torch.arange(num_nodes), tok.mask.sum(dim=1) - 1], dim=1)
            self._cache[graph_id] = (tok, where)
        return self._cache[graph_id]

    def collate(self, batch) -> BatchTokens:
        """Tokens of every graph of a PyG ``Batch`` (needs ``graph_id``, ``ptr``, ``edge_index``)."""
        ptr = batch.ptr.cpu().tolist()
        edge_index = batch.edge_index.cpu()
        edge_graph = batch.batch.cpu()[edge_index[0]] if edge_index.numel() else edge_index.new_zeros(0)
        ids = batch.graph_id.cpu().tolist()
        parts = []
        for i, gid in enumerate(ids):
            lo, hi = ptr[i], ptr[i + 1]
            local = edge_index[:, edge_graph == i] - lo
            parts.append(self.graph_tokens(int(gid), local, hi - lo, batch.x[lo:hi]))
        length = max(tok.tokens.shape[1] for tok, _ in parts)
        rows, masks, positions, hpes = [], [], [], []
        row0 = 0
        for i, (tok, where) in enumerate(parts):
            pad = length - tok.tokens.shape[1]
            rows.append(_pad_right(tok.tokens + ptr[i], pad))
            masks.append(_pad_right(tok.mask, pad))
            positions.append((where[:, 0] + row0) * length + where[:, 1])
            hpes.append(tok.hpe)
            row0 += tok.tokens.shape[0]
        n = ptr[-1]
        assign = torch.zeros(len(ids), n)
        for i in range(len(ids)):
            assign[i, ptr[i]:ptr[i + 1]] = 1.0
        return BatchTokens(tokens=torch.cat(rows), mask=torch.cat(masks), node_position=torch.cat(positions),
                           hpe=torch.cat(hpes), assign=assign)


def _pad_right(t: Tensor, pad: int) -> Tensor:
    """Pad the last axis of ``t`` on the right with zeros (False)."""
    return torch.nn.functional.pad(t, (0, pad)) if pad else t

"""Graph data: the format's checks, the generators, the package sources and the tokenizers."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_geometric")

from seqzoo.datasets.graph import GraphDataModule, read_graphs, save_graphs, synth_graph, tokenize  # noqa: E402
from seqzoo.datasets.graph.prepare import read_smiles_csv  # noqa: E402
from seqzoo.datasets.graph.tokenizers import TOKENIZERS, TokenCache, adjacency_lists, hac_order  # noqa: E402
from seqzoo.errors import DataError  # noqa: E402


def undirected(pairs):
    src = [u for u, v in pairs] + [v for u, v in pairs]
    dst = [v for u, v in pairs] + [u for u, v in pairs]
    return torch.tensor([src, dst], dtype=torch.long).reshape(2, -1)


TWO_TRIANGLES = [(0, 1), (1, 2), (0, 2), (2, 3), (3, 4), (4, 5), (3, 5)]


def test_hac_merges_each_triangle_first_then_the_pair():
    order, hpe = hac_order(adjacency_lists(undirected(TWO_TRIANGLES), 6))
    assert order == [0, 1, 2, 3, 4, 5]
    # root -> {0..5} -> {0,1,2} | {3,4,5} -> nodes: ranks from the root down
    assert hpe[:, :3].tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0], [0, 1, 1], [0, 1, 2]]
    assert (hpe[:, 3:] == -1).all()


def test_hac_keeps_clusters_contiguous_whatever_the_node_ids():
    perm = [4, 0, 5, 2, 1, 3]  # relabel node i as perm[i]
    pairs = [(perm[u], perm[v]) for u, v in TWO_TRIANGLES]
    order, _ = hac_order(adjacency_lists(undirected(pairs), 6))
    first, second = {perm[0], perm[1], perm[2]}, {perm[3], perm[4], perm[5]}
    assert {frozenset(order[:3]), frozenset(order[3:])} == {frozenset(first), frozenset(second)}
    assert order[0] == min(order)  # children in order of their smallest node id


def test_hac_tie_break_is_the_smallest_neighbour():
    # a 4-cycle: every edge has the same affinity; cluster c merges with its smallest neighbour
    order, hpe = hac_order(adjacency_lists(undirected([(0, 1), (1, 2), (2, 3), (3, 0)]), 4))
    assert order == [0, 1, 2, 3] and (hpe[:, 0] == 0).all()


def test_bfs_and_degree_orders():
    e = undirected([(0, 1), (1, 2), (1, 3), (3, 4)])
    assert tokenize(e, 6, "degree").tokens.tolist() == [[1, 3, 0, 2, 4, 5]]
    assert tokenize(e, 6, "bfs").tokens.tolist() == [[1, 0, 2, 3, 4, 5]]  # node 5 is isolated, last


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("edges", [[], [(0, 0), (1, 1)], TWO_TRIANGLES + [(6, 7)]], ids=["no-edges", "self-loops", "disconnected"])
def test_every_tokenizer_covers_every_node_deterministically(name, edges):
    n = 8
    e = undirected(edges) if edges else torch.zeros(2, 0, dtype=torch.long)
    a, b = tokenize(e, n, name, seed=3), tokenize(e, n, name, seed=3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask) and torch.equal(a.hpe, b.hpe)
    seen = set(a.tokens[a.mask].tolist())
    assert seen == set(range(n))
    if name in ("random_walk", "khop"):  # one sequence per node, ending at that node
        last = a.tokens[torch.arange(n), a.mask.sum(1) - 1]
        assert last.tolist() == list(range(n))


def test_token_cache_tokenizes_each_graph_once(tmp_path):
    synth_graph(out=str(tmp_path / "d"), task="cycle", n_graphs=20)
    dm = GraphDataModule(str(tmp_path / "d"), n_node_features=1, batch_size=8)
    dm.setup()
    cache = TokenCache("hac")
    for _ in range(2):  # two epochs
        for batch in dm.train_dataloader():
            t = cache.collate(batch)
            # each node reads a token that holds the node itself
            assert torch.equal(t.tokens.reshape(-1)[t.node_position], torch.arange(batch.num_nodes))
    assert len(cache) == len(dm.datasets["train"])


@pytest.mark.parametrize("task", ["pattern", "connectivity", "cycle", "sp_parity"])
def test_synthetic_tasks_are_balanced_and_well_formed(tmp_path, task):
    payload = read_graphs(synth_graph(out=str(tmp_path / task), task=task, n_graphs=40, seed=1))
    ys = torch.cat([g["y"] for g in payload["graphs"]])
    assert set(ys.tolist()) == {0, 1}
    if task != "pattern":
        assert ys.float().mean() == 0.5
    again = read_graphs(synth_graph(out=str(tmp_path / f"{task}2"), task=task, n_graphs=40, seed=1))
    assert all(torch.equal(a["edge_index"], b["edge_index"]) for a, b in zip(payload["graphs"], again["graphs"]))


def test_cycle_task_classes_share_node_and_edge_counts(tmp_path):
    import networkx as nx

    payload = read_graphs(synth_graph(out=str(tmp_path / "c"), task="cycle", n_graphs=60))
    for g in payload["graphs"]:
        n, e = g["x"].shape[0], g["edge_index"].shape[1] // 2
        graph = nx.Graph(g["edge_index"].t().tolist())
        graph.add_nodes_from(range(n))
        has_cycle = e - n + nx.number_connected_components(graph) > 0
        assert has_cycle == bool(g["y"].item())


def test_sp_parity_label_is_the_distance_parity(tmp_path):
    import networkx as nx

    for g in read_graphs(synth_graph(out=str(tmp_path / "s"), task="sp_parity", n_graphs=20))["graphs"]:
        s, t = int(g["x"][:, 1].argmax()), int(g["x"][:, 2].argmax())
        d = nx.shortest_path_length(nx.Graph(g["edge_index"].t().tolist()), s, t)
        assert d >= 2 and (d % 2 == 0) == bool(g["y"].item())


def good_graph(n=4, f=3):
    return {"x": torch.randn(n, f), "edge_index": undirected([(0, 1), (1, 2)]), "y": torch.tensor([1])}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"x": torch.randn(4, 5)}, "has 5 features, graph 0 has 3"),
        ({"edge_index": torch.tensor([[0], [9]])}, "refers to node 9"),
        ({"x": torch.full((4, 3), float("nan"))}, "NaN"),
        ({"y": torch.tensor([1, 0])}, "'y' must have shape (1,)"),
        ({"edge_attr": torch.randn(3, 2)}, "'edge_attr' must be (edges=4"),
    ],
)
def test_bad_graphs_are_named(tmp_path, bad, message):
    second = {**good_graph(), **bad}
    with pytest.raises(DataError, match="graph 1") as err:
        save_graphs(tmp_path / "d", [good_graph(), second], level="graph", task="classification")
    assert message in str(err.value)
    assert not (tmp_path / "d").exists()  # nothing half-written


def test_missing_key_and_foreign_files(tmp_path):
    g = good_graph()
    del g["y"]
    with pytest.raises(DataError, match="missing 'y'"):
        save_graphs(tmp_path / "d", [g], level="graph", task="classification")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="format"):
        read_graphs(tmp_path / "other.pt")
    with pytest.raises(DataError, match="not found"):
        read_graphs(tmp_path / "nowhere")


def test_invalid_smiles_are_skipped_with_count_and_first_line(tmp_path, capsys):
    pytest.importorskip("rdkit")
    csv = tmp_path / "mols.csv"
    csv.write_text("smiles,expt\nCCO,-5.0\nnot-a-smiles,1.0\nc1ccccc1,-0.9\nCC,\n")
    graphs, smiles = read_smiles_csv(csv, "smiles", "expt")
    assert smiles == ["CCO", "c1ccccc1"] and graphs[0]["x"].shape[0] == 3
    assert graphs[1]["edge_index"].shape[1] == 12  # six aromatic bonds, both directions
    out = capsys.readouterr().out
    assert "skipped 2 row(s)" in out and "line 3: 'not-a-smiles'" in out


def test_npz_node_graph_and_config_mismatch(tmp_path):
    import numpy as np

    n = 6
    masks = {m: np.zeros(n, bool) for m in ("train", "val", "test")}
    masks["train"][:4], masks["val"][4], masks["test"][5] = True, True, True
    np.savez(tmp_path / "g.npz", x=np.random.rand(n, 2).astype("float32"),
             edge_index=np.array([[0, 1, 2], [1, 2, 3]]), y=np.array([0, 1, 0, 1, 0, 1]),
             **{f"{m}_mask": v for m, v in masks.items()})
    dm = GraphDataModule(str(tmp_path / "g.npz"), level="node", n_node_features=2)
    assert dm.dims == {"n_node_features": 2, "n_edge_features": 0, "n_classes": 2, "level": "node"}
    dm.setup()
    assert dm.train_targets().tolist() == [0, 1, 0, 1]
    wrong = GraphDataModule(str(tmp_path / "g.npz"), level="node", n_node_features=5)
    with pytest.raises(DataError, match="data.n_node_features is 5 but the data has 2"):
        wrong.setup()


def test_dims_never_touch_the_filesystem(tmp_path):
    dm = GraphDataModule(str(tmp_path / "missing"), prepare="synth:graph", prepare_args={"task": "cycle", "n_graphs": 10},
                         n_node_features=1)
    assert dm.dims["n_node_features"] == 1 and not (tmp_path / "missing").exists()
    with pytest.raises(DataError, match="written by prepare_data"):
        dm.setup()  # setup never writes
    dm.prepare_data()
    dm.setup()
    assert len(dm.datasets["train"]) == 8

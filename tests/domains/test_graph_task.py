"""The graph task (GSM / GSM++): learning, baselines, hybrid, export, refusals."""

from __future__ import annotations

import lightning as L
import pytest
import torch

pytest.importorskip("torch_geometric")

from seqzoo.backbones import build_backbone  # noqa: E402
from seqzoo.datasets.graph import GraphDataModule  # noqa: E402
from seqzoo.domains.graph import (  # noqa: E402
    GraphClassificationTask,
    GraphNetConfig,
    GraphRegressionTask,
    example_graph_inputs,
)
from seqzoo.errors import ConfigError  # noqa: E402
from seqzoo.export import export_onnx  # noqa: E402
from tests.conftest import make_tiny_trainer  # noqa: E402


def trainer(epochs: int) -> L.Trainer:
    return make_tiny_trainer(max_epochs=epochs, num_sanity_val_steps=0)


@pytest.fixture(scope="module")
def karate(tmp_path_factory):
    pytest.importorskip("networkx")
    from seqzoo.datasets.graph import prepare_karate

    return prepare_karate(out=str(tmp_path_factory.mktemp("graph") / "karate"))


def test_karate_task_learns_beyond_majority_and_untrained(karate, tokenizer="hac"):
    """Real graph (Zachary's karate club): which club each member joined."""
    L.seed_everything(0)
    dm = GraphDataModule(str(karate), level="node", n_node_features=34, batch_size=1)
    task = GraphClassificationTask(build_backbone("gru", d_model=16, n_layers=1, causal=True), n_node_features=34,
                                   level="node", net=GraphNetConfig(tokenizer=tokenizer),
                                   optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    untrained = trainer(1).test(task, dm, verbose=False)[0]
    trainer(40).fit(task, dm)
    trained = trainer(1).test(task, dm, verbose=False)[0]
    name, base = task.baseline(dm)
    assert name == "majority class"
    assert trained["test/acc"] > base["test/acc"] + 0.2
    assert trained["test/macro_f1"] > base["test/macro_f1"] + 0.3
    assert trained["test/acc"] > untrained["test/acc"] + 0.2


def test_regression_baseline_is_the_training_mean(tmp_path):
    graphs = []
    for i in range(20):
        g = {"x": torch.ones(3, 1), "edge_index": torch.tensor([[0, 1], [1, 2]]), "y": torch.tensor([float(i)])}
        graphs.append(g)
    from seqzoo.datasets.graph import save_graphs

    save_graphs(tmp_path / "r", graphs, level="graph", task="regression",
                split={"train": list(range(10)), "val": [10, 11], "test": list(range(12, 20))})
    dm = GraphDataModule(str(tmp_path / "r"), target="regression", n_node_features=1, n_classes=0)
    dm.setup()
    task = GraphRegressionTask(build_backbone("identity", d_model=8, n_layers=1), n_node_features=1)
    _, base = task.baseline(dm)
    errors = torch.arange(12, 20).double() - 4.5
    assert base["test/rmse"] == pytest.approx(float(errors.pow(2).mean().sqrt()))
    assert base["test/mae"] == pytest.approx(float(errors.abs().mean()))


@pytest.mark.parametrize("level, tokenizer, hybrid", [("graph", "hac", True), ("node", "random_walk", False)])
def test_export_parity_with_dynamic_sizes(tmp_path, level, tokenizer, hybrid):
    task = GraphClassificationTask(build_backbone("s4d", d_model=8, n_layers=1), n_node_features=3,
                                   n_edge_features=2, level=level,
                                   net=GraphNetConfig(tokenizer=tokenizer, hybrid=hybrid, pool="attention"))
    report = export_onnx(task.export_spec(), tmp_path / "g.onnx")
    assert report.max_abs_diff < 1e-4
    assert len({s[0][0] for s in report.checked_shapes}) == 2  # two different node counts


def test_hybrid_adds_one_transformer_layer_after_the_backbone():
    plain = GraphClassificationTask(build_backbone("mamba", d_model=8, n_layers=1), n_node_features=1)
    hybrid = GraphClassificationTask(build_backbone("mamba", d_model=8, n_layers=1), n_node_features=1,
                                     net=GraphNetConfig(hybrid=True))
    assert plain.net.attention is None and hybrid.net.attention.n_layers == 1
    inputs = example_graph_inputs(hybrid)
    assert hybrid.net(*inputs).shape == (2, 2)


def test_node_outputs_depend_on_other_graphs_never():
    task = GraphClassificationTask(build_backbone("transformer", d_model=8, n_layers=1), n_node_features=3,
                                   level="graph").eval()
    x, ei, ea, tokens, mask, pos, hpe, assign = example_graph_inputs(task, n_graphs=2)
    out = task.net(x, ei, ea, tokens, mask, pos, hpe, assign)
    n0 = int(assign[0].sum())
    x2 = x.clone()
    x2[n0:] += 5.0  # change only the second graph
    out2 = task.net(x2, ei, ea, tokens, mask, pos, hpe, assign)
    assert torch.allclose(out[0], out2[0], atol=1e-6) and not torch.allclose(out[1], out2[1])


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown tokenizer 'dfs'"):
        GraphClassificationTask(build_backbone("gru", d_model=8, n_layers=1), n_node_features=1,
                                net=GraphNetConfig(tokenizer="dfs"))
    with pytest.raises(ConfigError, match="pool"):
        GraphClassificationTask(build_backbone("gru", d_model=8, n_layers=1), n_node_features=1,
                                net=GraphNetConfig(pool="max"))
    with pytest.raises(ConfigError, match="n_classes"):
        GraphDataModule("x", n_node_features=1, n_classes=1)

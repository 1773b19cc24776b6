"""Task options as the CLI resolves them: the forecaster's and the graph tasks' ``net`` groups,
where an option of an older config moved, and optimiser arguments that must not leak between
optimiser classes."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from seqzoo.cli import main
from seqzoo.domains.forecasting import ForecastingNet, ForecastingNetConfig, ForecastingTask
from seqzoo.errors import ConfigError
from seqzoo.run_config import resolve_config_path


def _run(args: list[str]) -> int | None:
    try:
        return main(args)
    except SystemExit as done:  # jsonargparse exits after printing
        return done.code


def _printed_model(config: str, capsys, *extra: str) -> dict:
    assert _run(["fit", "--config", config, *extra, "--print_config"]) in (0, None)
    return yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]


def test_the_forecaster_options_are_one_net_group_with_their_help(capsys):
    model = _printed_model(str(resolve_config_path("forecasting/etth1_informer.yaml")), capsys,
                           "--model.net.label_len", "24")
    assert model["net"]["head"] == "decoder" and model["net"]["label_len"] == 24
    assert set(model["net"]) == {f.name for f in fields(ForecastingNetConfig)}
    assert _run(["fit", "--model.help", "ForecastingTask"]) in (0, None)
    help_text = capsys.readouterr().out
    for f in fields(ForecastingNetConfig):  # every option listed once, with its description
        assert f"--model.net.{f.name}" in help_text, f.name
    assert "start tokens of the decoder head" in help_text


def test_an_option_of_an_older_config_says_where_it_moved(capsys):
    code = main(["fit", "--config", str(resolve_config_path("forecasting/weather.yaml")), "--model.head", "last"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Option 'head' is not accepted (it moved: write it under net:, on the command line --model.net.head)" in err


def test_net_options_are_checked_where_they_are_given():
    with pytest.raises(ConfigError, match="net.head must be"):
        ForecastingNetConfig(head="first")
    from seqzoo.backbones import build_backbone

    with pytest.raises(ConfigError, match="unknown option.*heads"):
        ForecastingNet(build_backbone("gru", d_model=8, n_layers=1), 3, 3, 8, 2, heads=2)
    net = ForecastingNet(build_backbone("gru", d_model=8, n_layers=1), 3, 3, 8, 2, head="last", revin=False)
    assert net.config == ForecastingNetConfig(head="last", revin=False)


@pytest.mark.parametrize("config", ["forecasting/etth1.yaml", "forecasting/etth1_informer.yaml",
                                    "forecasting/etth1_itransformer.yaml"])
def test_a_config_naming_adam_gets_adams_arguments_not_adamws(config, capsys):
    """The papers train with Adam and no weight decay. With AdamW as a task's signature default,
    jsonargparse carried AdamW's weight_decay 0.01 over into these configs' Adam."""
    optimizer = _printed_model(str(resolve_config_path(config)), capsys)["optimizer"]
    assert optimizer["class_path"] == "torch.optim.Adam"
    assert optimizer["init_args"]["weight_decay"] == 0


def test_the_default_optimiser_is_adamw_with_torchs_defaults(ett_csv):
    import torch

    from seqzoo.backbones import build_backbone
    from seqzoo.datasets.forecasting import ForecastingDataModule

    dm = ForecastingDataModule(str(ett_csv), lookback=24, horizon=6)
    task = ForecastingTask(build_backbone("gru", d_model=8, n_layers=1), **dm.dims)
    optimizer = task.configure_optimizers()
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 1e-2


def test_a_checkpoint_saved_with_the_flat_options_still_loads(ett_csv):
    """Checkpoints keep their config: one written before the options moved under ``net`` is
    rebuilt with them moved (``seqzoo.load``, ``seqzoo export``)."""
    from seqzoo.checkpoints import build_task
    from seqzoo.datasets.forecasting import ForecastingDataModule

    dims = ForecastingDataModule(str(ett_csv), lookback=24, horizon=6).dims
    flat = {"model": {"class_path": "seqzoo.domains.forecasting.ForecastingTask",
                      "init_args": {"backbone": {"class_path": "gru", "init_args": {"d_model": 8, "n_layers": 1}},
                                    "head": "last", "revin": False, "use_time_features": False}}}
    task = build_task(flat, dims)
    assert task.net.config == ForecastingNetConfig(head="last", revin=False)
    assert task.net.head_kind == "last" and not task.net.revin


def test_the_graph_options_are_one_net_group_and_old_flat_keys_move(capsys):
    """GSM's tokenizer, GINE, hybrid and pooling options: listed once (``GraphNetConfig``), not
    in each of the classification and regression tasks."""
    pytest.importorskip("torch_geometric")
    from seqzoo.domains.graph import GraphNetConfig, GraphRegressionTask

    model = _printed_model(str(resolve_config_path("graph/freesolv.yaml")), capsys, "--model.net.tokenizer", "bfs")
    assert model["net"]["tokenizer"] == "bfs" and model["net"]["hybrid"] is True and model["net"]["n_gnn_layers"] == 3
    assert _run(["fit", "--model.help", "GraphClassificationTask"]) in (0, None)
    help_text = capsys.readouterr().out
    for f in fields(GraphNetConfig):
        assert f"--model.net.{f.name}" in help_text, f.name
    code = main(["fit", "--config", str(resolve_config_path("graph/karate.yaml")), "--model.hybrid", "true"])
    assert code == 2
    assert "(it moved: write it under net:, on the command line --model.net.hybrid)" in capsys.readouterr().err

    from seqzoo.checkpoints import build_task

    flat = {"model": {"class_path": "seqzoo.domains.graph.GraphRegressionTask",
                      "init_args": {"backbone": {"class_path": "gru", "init_args": {"d_model": 8, "n_layers": 1}},
                                    "tokenizer": "bfs", "n_gnn_layers": 1, "hybrid": True}}}
    task = build_task(flat, {"n_node_features": 3, "n_edge_features": 0, "level": "graph"})
    assert isinstance(task, GraphRegressionTask) and task.tokenizer_name == "bfs"
    assert len(task.net.convs) == 1 and task.net.attention is not None

"""Every shipped config whose backbone streams either exports ``--streaming`` or says at
``fit`` time what the one-step export needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seqzoo.cli import main
from seqzoo.lightning_cli import make_cli
from seqzoo.run_config import rewrite_args
from seqzoo.runs import streaming_note
from tests.conftest import forecasting_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "seqzoo" / "configs").glob("*/*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_streaming_backbone_configs_export_or_say_what_they_need(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # building reads no data (dims are metadata), writes nothing here
    args, name = rewrite_args(["--config", str(config), "--run_dir", str(tmp_path / "run")])
    task = make_cli(args=args, run=False, config_name=name).model
    if not type(task.backbone).streaming:
        assert streaming_note(task) is None
        return
    needs = task.streaming_requirements()
    if needs is None:  # it claims a one-step export: the graph is written and matches torch
        pytest.importorskip("onnxruntime")
        from seqzoo.export import export_onnx

        report = export_onnx(task.export_step_spec(), tmp_path / "step.onnx")
        assert report.max_abs_diff < 1e-4
    else:
        note = streaming_note(task)
        assert note and needs in note and "export --streaming" in note


def test_fit_says_what_a_streaming_export_needs(ett_csv, write_config, tmp_path, capsys):
    config = forecasting_config(ett_csv, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    config["model"]["init_args"]["backbone"]["class_path"] = "gru"
    path = write_config(config)
    assert main(["fit", "--config", str(path), "--run_dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "'gru' streams, but `seqzoo export --streaming` will not work" in err
    assert "revin must be false" in err and "head must be 'last'" in err

    config["model"]["init_args"]["net"] = {"head": "last", "revin": False}
    config["model"]["init_args"]["backbone"]["init_args"]["causal"] = True
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path), "--run_dir", str(tmp_path / "run2")]) == 0
    assert "export --streaming` will not work" not in capsys.readouterr().err

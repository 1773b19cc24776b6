"""Every shipped config exports: its task, built as the config says (untrained, sizes from
its data module's ``dims``, which are metadata: no data is read or written), goes to ONNX and
onnxruntime agrees. Stacks are cut to one layer (backbone and GNN): the config's task, head,
embedding and every backbone option are exported as written, and deeper stacks repeat that
layer's code, which the contract suite exports at two layers per family (window and step)
and the demo, the guide and the TSM2 check below export at full depth; tracing time grows
with depth (the 4-layer ViM2 config took 32 s on 2 cores). TSM2 is also exported from a
trained checkpoint through ``seqzoo export`` (an AttributeError once); its one-step export
is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seqzoo.cli import main
from seqzoo.export import export_onnx
from seqzoo.runs import build_datamodule, build_task, load_yaml, rewrite_backbone_names

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml"))
PACKAGES = {"separation/speech_mix.yaml": "soundfile", "handwriting/pendigits.yaml": "sklearn"}


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_exports_with_onnxruntime_parity(name, tmp_path):
    if name in PACKAGES:
        pytest.importorskip(PACKAGES[name])
    config = load_yaml(ROOT / "configs" / name)
    rewrite_backbone_names(config)
    one_layer(config)
    data = config["data"]["init_args"]
    if "path" in data:  # nothing is read or written: the sizes are the data module's metadata
        data["path"] = str(tmp_path / "absent" / Path(data["path"]).name)
    dm = build_datamodule(config)
    task = build_task(config, dm.dims).eval()
    report = export_onnx(task.export_spec(), tmp_path / "model.onnx")
    assert report.max_abs_diff <= 1e-4, (name, report.max_abs_diff)
    assert not (tmp_path / "absent").exists(), "building a task from a config must not write data"


def one_layer(config: dict) -> None:
    """Cut every stack in a config to one layer: the backbone's ``n_layers`` and the task's
    ``n_gnn_layers`` (top-level or in its ``net``); Informer's decoder already has one."""
    model = config["model"]["init_args"]
    backbone = model.get("backbone", {}).get("init_args", {})
    for owner, key in ((backbone, "n_layers"), (model, "n_gnn_layers"), (model.get("net") or {}, "n_gnn_layers")):
        if owner.get(key, 0) > 1:
            owner[key] = 1


def test_one_layer_cuts_the_shipped_stacks():
    cut = {}
    for name in CONFIGS:
        config = load_yaml(ROOT / "configs" / name)
        one_layer(config)
        model = config["model"]["init_args"]
        cut[name] = (model.get("backbone", {}).get("init_args", {}).get("n_layers", 1),
                     model.get("n_gnn_layers", 1), (model.get("net") or {}).get("n_gnn_layers", 1))
    assert all(depth <= 1 for depths in cut.values() for depth in depths), cut
    assert cut["vision/digits_vim2.yaml"] == (1, 1, 1) and cut["graph/freesolv.yaml"][2] == 1


@pytest.mark.slow
def test_tsm2_checkpoint_exports_through_the_cli(ett_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((ROOT / "configs/forecasting/weather_tsm2.yaml").read_text())
    config["data"]["init_args"].update(path=str(ett_csv), prepare=None, lookback=48, horizon=12, n_variates=7)
    config["trainer"].update(max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False)
    path = tmp_path / "weather_tsm2.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 0
    ckpt = tmp_path / "runs/weather_tsm2/tsm2/seed0/checkpoints/last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "tsm2.onnx")]) == 0
    meta = yaml.safe_load((tmp_path / "tsm2.json").read_text())
    assert meta["backbone"] == "tsm2" and meta["graphs"][0]["max_abs_diff"] <= 1e-4
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "s.onnx"), "--streaming"]) == 2
    assert not (tmp_path / "s.onnx").exists(), "a refused streaming export writes nothing"

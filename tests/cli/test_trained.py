"""After training: a run loads in one call (``seqzoo.load``, ``Task.load_from_checkpoint``) with the
data transform it was trained with, and predicts on a new file in the file's units without
refitting anything (``seqzoo.predict``, ``seqzoo predict``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import seqzoo
from seqzoo.cli import main
from seqzoo.domains.forecasting import ForecastingTask
from seqzoo.domains.vision import VisionTask
from tests.conftest import forecasting_config


@pytest.fixture(scope="module")
def trained(ett_csv, tmp_path_factory):
    """A two-epoch gru forecasting run: (config path, run folder)."""
    root = tmp_path_factory.mktemp("trained")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(forecasting_config(ett_csv, max_epochs=2, limit_train_batches=4, limit_val_batches=2)))
    assert main(["fit", "--config", str(cfg), "--run_dir", str(root / "run")]) == 0
    return cfg, root / "run"


def test_a_run_loads_in_one_call_with_its_scaler(trained, ett_csv):
    _, run = trained
    task = seqzoo.load(run)
    assert isinstance(task, ForecastingTask) and not task.training
    assert task.checkpoint_path.name == "best.ckpt"
    frame = pd.read_csv(ett_csv)
    columns = [c for c in frame.columns if c not in ("date", "OT")] + ["OT"]
    t = task.data_transform
    assert t["columns"] == columns and t["targets"] == columns and t["freq"] == "h" and t["step"] == {"duration": "0 days 01:00:00"}
    train = frame[columns].to_numpy(np.float64)[: int(len(frame) * 0.7)]  # the training rows only
    np.testing.assert_allclose(t["mean"], train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(t["scale"], train.std(0), rtol=1e-12)

    same = ForecastingTask.load_from_checkpoint(run / "checkpoints" / "best.ckpt")
    for key, value in task.state_dict().items():
        assert torch.equal(value, same.state_dict()[key])
    with pytest.raises(seqzoo.ConfigError, match="holds a ForecastingTask, not a VisionTask"):
        VisionTask.load_from_checkpoint(run / "checkpoints" / "best.ckpt")
    with pytest.raises(seqzoo.ConfigError, match="no checkpoints/best.ckpt"):
        seqzoo.load(run.parent)


def test_predict_on_a_new_file_uses_the_trained_scaler_and_answers_in_its_units(trained, ett_csv, tmp_path):
    _, run = trained
    frame = pd.read_csv(ett_csv)
    new = frame.iloc[-100:].copy()
    new[new.columns[1:]] = new[new.columns[1:]] * 1.5 + 3.0  # its own statistics differ from training
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)

    task = seqzoo.load(run)
    table = seqzoo.predict(task, path, windows="last")
    t = task.data_transform
    assert list(table.columns[:3]) == ["origin", "step", "date"] and len(table) == 12
    last = pd.Timestamp(new["date"].iloc[-1])
    assert table["origin"].eq(last).all()
    assert list(table["date"]) == [last + pd.Timedelta(hours=k) for k in range(1, 13)]
    assert table[[f"{c}_actual" for c in t["columns"]]].isna().all().all()  # the future is unknown

    # the same forecast by hand: the training scaler (not one refitted on new.csv), the net, unscaled
    mean, scale = np.array(t["mean"]), np.array(t["scale"])
    x = (new[t["columns"]].to_numpy(np.float64)[-48:] - mean) / scale
    from seqzoo.datasets.forecasting.reader import time_features

    dates = pd.DatetimeIndex(pd.to_datetime(new["date"]))
    marks = time_features(dates[-48:].append(pd.DatetimeIndex(table["date"])), "h")
    with torch.no_grad():
        y = task({"x": torch.tensor(x, dtype=torch.float32)[None],
                  "x_mark": torch.tensor(marks[:48], dtype=torch.float32)[None],
                  "y_mark": torch.tensor(marks[48:], dtype=torch.float32)[None]})[0].double().numpy()
    np.testing.assert_allclose(table[t["columns"]].to_numpy(), y * scale + mean, rtol=1e-5, atol=1e-6)

    every = seqzoo.predict(task, path, windows="all")
    assert len(every) == (100 - 48 + 1) * 12
    known = every.dropna()
    assert len(known) == sum(max(0, min(12, 100 - (e + 1))) for e in range(47, 100))
    row = known.iloc[0]
    assert row["OT_actual"] == pytest.approx(new.set_index(pd.to_datetime(new["date"])).loc[row["date"], "OT"])

    missing = new.drop(columns=["OT"])
    missing.to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(seqzoo.SeqzooError, match="OT"):
        seqzoo.predict(task, tmp_path / "missing.csv", windows="last")


def test_seqzoo_predict_uses_the_trained_model_and_leaves_the_run_alone(trained, tmp_path, capsys):
    cfg, run = trained
    before = (run / "config.yaml").read_text()
    assert main(["predict", "--config", str(cfg), "--run_dir", str(run)]) == 0  # no --ckpt_path: best.ckpt
    assert (run / "config.yaml").read_text() == before
    table = pd.read_csv(run / "predictions.csv", parse_dates=["origin", "date"])
    raw = torch.load(run / "predictions.pt")["predictions"]
    assert len(table) == raw.shape[0] * raw.shape[1]
    assert table["OT_actual"].notna().all()  # test windows: every target is known
    err_model = ((table["OT"] - table["OT_actual"]) ** 2).mean()
    assert np.isfinite(err_model) and table["OT"].std() > 0
    assert table.equals(table.sort_values(["origin", "step"], kind="stable").reset_index(drop=True))
    expected = seqzoo.predict(run)  # the Python API gives the same table
    np.testing.assert_allclose(table["OT"].to_numpy(), expected["OT"].to_numpy(), rtol=1e-5)

    capsys.readouterr()
    assert main(["predict", "--config", str(cfg), "--run_dir", str(tmp_path / "untrained")]) == 2
    err = capsys.readouterr().err
    assert "needs a trained model" in err and "--ckpt_path" in err


@pytest.fixture(scope="module")
def streaming_run(ett_csv, tmp_path_factory):
    """A gru forecaster that streams (head last, no RevIN), exported with its step graph."""
    root = tmp_path_factory.mktemp("streaming")
    config = forecasting_config(ett_csv, max_epochs=1, limit_train_batches=4, limit_val_batches=2)
    config["model"]["init_args"]["net"] = {"head": "last", "revin": False}
    config["model"]["init_args"]["backbone"]["init_args"]["causal"] = True
    cfg = root / "stream.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(cfg), "--run_dir", str(root / "run")]) == 0
    ckpt = root / "run" / "checkpoints" / "best.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(root / "model.onnx"), "--streaming"]) == 0
    return root, ckpt


def test_onnx_export_is_self_describing_and_takes_raw_units(streaming_run, ett_csv, tmp_path):
    import json

    import onnx
    import onnxruntime as ort

    root, ckpt = streaming_run
    model = onnx.load(str(root / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["seqzoo_version"] == seqzoo.__version__ and meta["backbone"] == "gru"
    assert meta["task"].endswith("ForecastingTask") and meta["graph"] == "window"
    transform = json.loads(meta["transform"])
    assert transform["columns"][-1] == "OT" and len(transform["mean"]) == 7
    inputs = json.loads(meta["inputs"])
    assert "data's units" in inputs["x"] and "OT" in inputs["x"] and "data's units" in json.loads(meta["outputs"])["y"]
    x_dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert x_dims == ["batch", 48, 7]
    assert [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == ["batch", 12, 7]

    step = onnx.load(str(root / "model.step.onnx"))
    states = json.loads({p.key: p.value for p in step.metadata_props}["states"])
    assert [s["name"] for s in states] == [i.name for i in step.graph.input[1:]]
    assert states[0]["dtype"] == "int64" and states[0]["shape"] == ["batch"] and states[0]["initial"] == "zeros"
    assert all(s["initial"] == "zeros" and "batch" in s["shape"] for s in states)

    # raw units: onnxruntime on the file's numbers gives seqzoo.predict's forecast in the file's units
    frame = pd.read_csv(ett_csv)
    new = frame.iloc[-60:]
    new.to_csv(tmp_path / "new.csv", index=False)
    x = new[transform["columns"]].to_numpy(np.float32)[None, -48:]
    (y,) = ort.InferenceSession(str(root / "model.onnx")).run(None, {"x": x})
    expected = seqzoo.predict(ckpt, tmp_path / "new.csv", windows="last")
    np.testing.assert_allclose(y[0], expected[transform["targets"]].to_numpy(), rtol=1e-4, atol=1e-4)


def test_the_readme_onnx_example_runs_as_written(streaming_run, ett_csv, tmp_path, monkeypatch):
    import contextlib
    import io
    import re
    import shutil
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"<!-- onnx-example -->\s*```python\n(.*?)```", readme, re.S).group(1)
    root, _ = streaming_run
    for name in ("model.onnx", "model.step.onnx"):
        shutil.copy(root / name, tmp_path / name)
    pd.read_csv(ett_csv).iloc[-60:].to_csv(tmp_path / "new.csv", index=False)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().strip().splitlines()
    assert "OT" in printed[0] and len(printed) == 1 + 12 + 1
    assert float(printed[-1]) < 1e-3, "the step graph agrees with the window graph"


@pytest.mark.parametrize("config, classes", [("configs/vision/digits.yaml", [str(k) for k in range(10)]),
                                             ("configs/pain/emopain_synth.yaml", ["protective=0", "protective=1"])])
def test_classifiers_predict_class_names_and_probabilities(config, classes, tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "run"
    small = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
             "--model.backbone.init_args.d_model", "16", "--model.backbone.init_args.n_layers", "1"]
    assert main(["fit", "--config", str(root / config), "--run_dir", str(run),
                 "--data.path", str(tmp_path / "data"), *small]) == 0
    task = seqzoo.load(run)
    assert task.data_transform["class_names"] == classes and task.data_transform["mean"]
    table = seqzoo.predict(task)
    probs = table[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert set(table["predicted"]) <= set(classes) and set(table["true"]) <= set(classes)
    assert (table["predicted"].to_numpy() == np.asarray(classes)[probs.argmax(1)]).all()
    assert main(["predict", "--config", str(run / "config.yaml")]) == 0  # the run's own config: its folder
    written = pd.read_csv(run / "predictions.csv", dtype={"predicted": str, "true": str})
    assert list(written.columns) == list(table.columns) and len(written) == len(table)

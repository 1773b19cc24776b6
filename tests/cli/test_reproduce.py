"""`seqzoo reproduce etth1`: the papers' tables with one command (tiny settings on synthetic ETT data)."""

from __future__ import annotations

import csv

import pytest
import yaml

from seqzoo.cli import main
from seqzoo.reproduce import ETTH1, select_tables

TINY = ["--data.borders", "null", "--data.ratios", "[0.5, 0.25, 0.25]", "--model.backbone.init_args.d_model", "16",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "2",
        "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def ett_long(tmp_path_factory):
    """ETT-format CSV long enough for horizon 192 in every split."""
    from seqzoo.datasets.forecasting import synth_forecasting

    return synth_forecasting(out=str(tmp_path_factory.mktemp("ett_long")), n_rows=2400, seed=0)


@pytest.mark.slow
def test_one_command_runs_each_table_with_its_papers_settings(ett_long, tmp_path, capsys):
    ett_csv, out = ett_long, tmp_path / "etth1"
    code = main(["reproduce", "etth1", "--tables", "itransformer,informer_paper", "--horizons", "24,192",
                 "--seeds", "0", "--max-epochs", "1", "--out", str(out), "--data.path", str(ett_csv), *TINY])
    assert code == 0
    table = (out / "etth1.md").read_text()
    assert "| 192 |" in table and "0.441 | 0.436" in table, "iTransformer's published row at horizon 192"
    assert "| 24 |" in table and "0.577 | 0.549" in table, "Informer's published row at horizon 24"
    rows = list(csv.DictReader(open(out / "etth1.csv")))
    assert [(r["table"], r["horizon"], r["n"]) for r in rows] == [("itransformer", "192", "1"), ("informer_paper", "24", "1")]
    assert all(0 < float(r["mse"]) < 10 for r in rows)

    def run_config(table, horizon, backbone):
        return yaml.safe_load((out / table / f"h{horizon}" / "runs" / backbone / "seed0" / "config.yaml").read_text())

    itr = run_config("itransformer", 192, "itransformer")
    assert itr["data"]["init_args"]["horizon"] == 192
    assert itr["model"]["init_args"]["backbone"]["init_args"]["n_heads"] == 8, "the paper config's keywords are kept"
    assert itr["model"]["init_args"]["backbone"]["init_args"]["d_model"] == 16, "the user's override wins"
    inf = run_config("informer_paper", 24, "informer")
    assert (inf["data"]["init_args"]["lookback"], inf["model"]["init_args"]["net"]["label_len"]) == (48, 48)
    assert inf["model"]["init_args"]["backbone"]["init_args"]["factor"] == 3 == inf["model"]["init_args"]["net"]["decoder_factor"]
    assert inf["trainer"]["max_epochs"] == 1, "--max-epochs beats the table's own epochs"


def test_bad_choices_are_named(tmp_path, capsys):
    assert main(["reproduce", "etth1", "--tables", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown table(s) ['nope']" in capsys.readouterr().err
    assert main(["reproduce", "etth2", "--out", str(tmp_path / "x")]) == 2
    assert "no paper tables named 'etth2'" in capsys.readouterr().err
    assert main(["reproduce", "etth1", "--horizons", "5", "--out", str(tmp_path / "x")]) == 2
    assert "none of the horizons [5]" in capsys.readouterr().err
    assert main(["reproduce", "etth1", "--data.path", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not (tmp_path / "x").exists(), "nothing is written before the data is found"


def test_every_published_row_is_listed_once():
    tables = select_tables(ETTH1, "all", "all")
    assert [r.horizon for r in tables["itransformer"].rows] == [96, 192, 336, 720]
    assert [r.horizon for r in tables["informer_paper"].rows] == [24, 48, 168, 336, 720]
    assert select_tables(ETTH1, "informer", "96,720")["informer"].rows[-1].paper == (1.181, 0.865)


def test_an_interrupted_reproduction_writes_the_horizons_that_finished(tmp_path, monkeypatch, capsys):
    """Ctrl-C during the second horizon's compare: the table has the first horizon, the second's
    finished run out of its two, says where it stopped, and seqzoo exits 130."""
    import seqzoo.compare
    from seqzoo.results import write_results_csv

    folders = []

    def run(metrics, status="ok", seed=0):
        return {"backbone": "itransformer", "family": "itransformer", "seed": seed, "status": status,
                "metrics": metrics if status == "ok" else {}, "reason": "" if status == "ok" else "Ctrl-C"}

    def compare(config, names, seeds, folder, **kwargs):
        folders.append(folder.name)
        folder.mkdir(parents=True)
        if len(folders) == 1:
            return [run({"test/mse": 0.4, "test/mae": 0.3})]
        write_results_csv(folder / "results.csv",
                          [run({"test/mse": 0.5, "test/mae": 0.45}), run({}, "not run", seed=1)])
        raise KeyboardInterrupt

    monkeypatch.setattr(seqzoo.compare, "compare", compare)
    out = tmp_path / "etth1"
    assert main(["reproduce", "etth1", "--tables", "itransformer", "--horizons", "96,192,336", "--seeds", "0,1",
                 "--out", str(out)]) == 130
    assert folders == ["h96", "h192"] and "Traceback" not in capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "etth1.csv")))
    assert [(r["horizon"], r["n"], r["runs"], r["mse"]) for r in rows] == [("96", "1", "1", "0.4"),
                                                                          ("192", "1", "2", "0.5")]
    table = (out / "etth1.md").read_text()
    assert "| 192 | 0.500 | 0.450 | 0.441 | 0.436 | +0.059 | 1/2 |" in table
    assert "Interrupted (Ctrl-C) at itransformer, horizon 192" in table and "| 336 |" not in table

"""Equal parameter budgets: ``seqzoo compare --param_budget N`` builds every family at the width
whose backbone has about N parameters, and its rows say which width."""

from __future__ import annotations

import pytest
import yaml

from seqzoo import ConfigError
from seqzoo.budget import backbone_params, d_model_for_budget
from seqzoo.cli import main
from tests.conftest import forecasting_config

ARGS = {"n_layers": 2, "causal": True}


@pytest.mark.parametrize("name", ["transformer", "gru", "mamba", "s4d"])
def test_width_is_the_closest_multiple_of_8_by_brute_force(name):
    budget = 60_000
    width, count = d_model_for_budget(name, budget, ARGS)
    assert width % 8 == 0 and count == backbone_params(name, width, ARGS)
    brute = min(range(8, 257, 8), key=lambda w: (abs(backbone_params(name, w, ARGS) - budget), w))
    assert width == brute
    assert abs(count - budget) / budget < 0.25


def test_budget_errors():
    with pytest.raises(ConfigError, match="positive"):
        d_model_for_budget("gru", 0)
    with pytest.raises(ConfigError, match="nope"):
        d_model_for_budget("nope", 1000)


def test_compare_builds_each_family_at_its_budget_width(ett_csv, write_config, tmp_path, monkeypatch, capsys):
    import seqzoo.compare as compare

    ran = []

    def fake_job(name, cls, seed, config_file, out, max_epochs, passthrough, tag=None, **kw):
        ran.append(name)
        return {"backbone": name, "family": cls.family, "seed": seed, "status": "failed", "reason": "not run"}

    monkeypatch.setattr(compare, "_run_job", fake_job)
    cfg = write_config(forecasting_config(ett_csv))
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(cfg), "--backbones", "gru,transformer,s4d", "--param_budget", "40000",
                 "--out", str(out)]) == 0
    assert ran == ["gru", "transformer", "s4d"]
    printed = capsys.readouterr().out
    for name in ran:
        init = yaml.safe_load((out / "configs" / f"{name}.yaml").read_text())["model"]["init_args"]["backbone"]["init_args"]
        width = init["d_model"]
        assert (width, backbone_params(name, width, init)) == d_model_for_budget(name, 40_000, init)
        assert f"{name}: d_model {width} ->" in printed
        assert f"{name} (d_model={width})" in (out / "results.md").read_text()
    widths = {yaml.safe_load((out / "configs" / f"{n}.yaml").read_text())["model"]["init_args"]["backbone"]
              ["init_args"]["d_model"] for n in ran}
    assert len(widths) > 1, "equal budgets give the families different widths"


def test_merge_joins_compares_run_in_parts_and_refuses_duplicates(ett_csv, write_config, tmp_path, monkeypatch,
                                                                  capsys):
    """``--merge`` writes one table, plot and CSV from compares of the same config run in parts."""
    import seqzoo.compare as compare
    from seqzoo.results import read_results_csv

    def fake_job(name, cls, seed, config_file, out, max_epochs, passthrough, tag=None, **kw):
        mse = {"gru": 0.5, "transformer": 0.4}[name] + seed / 100
        return {"backbone": name, "family": cls.family, "seed": seed, "status": "ok", "params": 1234,
                "metrics": {"test/mse": mse, "test/mae": mse}, "train_samples_per_s": 10.0,
                "infer_samples_per_s": 20.0, "peak_mem_mb": 100.0, "device": "CPU", "checkpoint": str(tmp_path / f"{name}.ckpt")}

    monkeypatch.setattr(compare, "_run_job", fake_job)
    cfg = write_config(forecasting_config(ett_csv))
    for name in ("gru", "transformer"):
        assert main(["compare", "--config", str(cfg), "--backbones", name, "--seeds", "0,1",
                     "--out", str(tmp_path / name)]) == 0
    merged = tmp_path / "merged"
    assert main(["compare", "--config", str(cfg), "--merge", str(tmp_path / "gru"), str(tmp_path / "transformer"),
                 "--out", str(merged)]) == 0
    rows = read_results_csv(merged / "results.csv")
    assert sorted((r["backbone"], r["seed"]) for r in rows) == [("gru", "0"), ("gru", "1"), ("transformer", "0"),
                                                               ("transformer", "1")]
    table = (merged / "results.md").read_text()
    assert table.index("| **transformer** | 0.405") < table.index("| gru | 0.505")
    assert "repeat last value" in table and (merged / "plot.png").stat().st_size > 10_000
    assert (merged / "best_checkpoint.txt").read_text().strip().endswith("transformer.ckpt")
    capsys.readouterr()
    assert main(["compare", "--config", str(cfg), "--merge", str(tmp_path / "gru"), str(tmp_path / "gru"),
                 "--out", str(tmp_path / "m2")]) == 2
    assert "gru seed 0 is in both" in capsys.readouterr().err
    assert main(["compare", "--config", str(cfg), "--merge", str(tmp_path / "nope"), "--out", str(tmp_path / "m3")]) == 2


@pytest.mark.slow
def test_max_steps_budget_is_honoured_and_the_time_left_estimated(ett_csv, write_config, tmp_path, monkeypatch,
                                                                    capsys):
    from seqzoo.results import read_results_csv

    monkeypatch.chdir(tmp_path)
    cfg = write_config(forecasting_config(ett_csv, max_epochs=5, limit_val_batches=2))
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(cfg), "--backbones", "gru", "--seeds", "0,1", "--max-steps", "3",
                 "--out", str(out), "--trainer.limit_test_batches", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2 runs (the config's epochs, at most 3 steps each" in printed
    assert "so far; about" in printed and "left for 1 more run(s)" in printed
    rows = read_results_csv(out / "results.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(r["steps"] == 3 for r in rows), [r["steps"] for r in rows]
    assert main(["compare", "--config", str(cfg), "--backbones", "gru", "--max_steps", "0", "--out", str(out)]) == 2

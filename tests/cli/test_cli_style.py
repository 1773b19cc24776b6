"""One CLI style: ``seqzoo --help`` lists every verb, every verb answers ``--help`` with 0,
``--snake_case`` options with their dashed aliases, whole sentences in ``seqzoo data list``,
short class names for ``--model.help``, and ``--config`` names resolved from the shipped configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import seqzoo
from seqzoo import cli, compare, reproduce, sweep
from seqzoo.cli import COMMANDS, LIGHTNING_VERBS, first_sentence, main
from seqzoo.datasets import prepare_sources, synth_generators
from seqzoo.errors import ConfigError
from seqzoo.run_config import PACKAGED_CONFIGS, packaged_configs, resolve_config_path, rewrite_args

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- seqzoo --help


def test_top_level_help_lists_every_verb_on_one_line(capsys):
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    verbs = [*LIGHTNING_VERBS, "compare", "sweep", "reproduce", "export", "status", "backbones", "data", "pipeline"]
    assert sorted(COMMANDS) == sorted(verbs)
    for verb in verbs:
        mine = [ln for ln in lines if re.match(rf"  {verb}\s+\S", ln)]
        assert len(mine) == 1, (verb, lines)
        assert COMMANDS[verb] in mine[0]


def test_help_version_and_status_answer_without_importing_torch(tmp_path):
    """``seqzoo --help``, ``--version`` and ``status`` read text files only: a fresh process
    answers them without importing torch or Lightning (~4 s of imports), and the package's
    backbone API is still there on first use."""
    import json
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "completed", "verb": "fit", "pid": 1, "host": "h"}))
    probe = ("import sys; from seqzoo.cli import main\n"
             f"assert main(['--help']) == main(['--version']) == main(['status', {str(run)!r}]) == 0\n"
             "print(sorted(m for m in ('torch', 'lightning', 'jsonargparse') if m in sys.modules))\n"
             "import seqzoo; print(seqzoo.build_backbone('transformer', d_model=8, n_layers=1).d_model, "
             "'list_backbones' in dir(seqzoo))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert f"{run}: completed (fit, pid 1 on h" in done.stdout
    assert lines[-2] == "[]", f"imported by --help/--version/status: {lines[-2]}"
    assert lines[-1] == "8 True"


def test_unknown_verb_is_exit_2_with_the_verb_list(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err and "  reproduce " in err


@pytest.mark.parametrize("verb", ["compare", "sweep", "reproduce", "export", "status", "backbones", "data", "pipeline"])
def test_every_verb_answers_help_with_exit_0(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: seqzoo")


def test_a_usage_error_of_an_argparse_verb_returns_2(capsys):
    assert main(["export", "--out", "x.onnx"]) == 2  # --ckpt missing
    assert "--ckpt" in capsys.readouterr().err


# ----------------------------------------------------------------------------- data


@pytest.mark.parametrize("action,registry", [("synth", synth_generators), ("prepare", prepare_sources)])
def test_data_action_help_is_exit_0_and_lists_the_names(action, registry, capsys):
    assert main(["data", action, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: seqzoo data {action} <")
    for name in registry():
        assert f"  {name} " in out


def test_data_action_without_a_name_is_still_an_error(capsys):
    assert main(["data", "synth"]) == 2
    assert "name the domain" in capsys.readouterr().err


def test_data_list_shows_whole_first_sentences(capsys):
    assert main(["data", "list"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    for name, fn in {**synth_generators(), **prepare_sources()}.items():
        sentence = first_sentence(fn.__doc__)
        assert sentence.endswith((".", "!", "?")), (name, sentence)
        assert f"{name} {sentence}" in flat, name
    # a description wrapped over several docstring lines is shown whole, not cut at the first line
    pain = synth_generators()["pain"]
    assert pain.__doc__.strip().splitlines()[0] != first_sentence(pain.__doc__)


@pytest.mark.parametrize("doc,sentence", [
    ("One line.", "One line."),
    ("Spans\n    two lines. Second sentence.", "Spans two lines."),
    ("Names ``OT``, e.g. a load. Next.", "Names OT, e.g. a load."),
    ("A ratio of 1.5 here (2,000 rows). Then more.", "A ratio of 1.5 here (2,000 rows)."),
    ("No end\n\nOther paragraph.", "No end"),
    (None, ""),
])
def test_first_sentence(doc, sentence):
    assert first_sentence(doc) == sentence


# ----------------------------------------------------------------------------- --snake_case and --dashed


@pytest.mark.parametrize("spelling", ["--max_epochs", "--max-epochs"])
def test_compare_takes_both_spellings(spelling, monkeypatch):
    seen = {}
    monkeypatch.setattr(compare, "compare", lambda *a, **kw: seen.update(kw))
    assert main(["compare", "--config", "forecasting/weather.yaml", "--backbones", "gru", spelling, "3",
                 "--shared-heads" if spelling == "--max-epochs" else "--shared_heads", "--out", "unused"]) == 0
    assert seen["max_epochs"] == 3 and seen["shared_heads"] is True


@pytest.mark.parametrize("spelling", ["--max_epochs", "--max-epochs"])
def test_sweep_takes_both_spellings(spelling, monkeypatch):
    seen = {}
    monkeypatch.setattr(sweep, "sweep", lambda *a, **kw: seen.update(kw))
    assert main(["sweep", "--config", "diagnostics/mqar.yaml", "--knob", "data.n_pairs", "--values", "2",
                 "--backbones", "gru", spelling, "2", "--out", "unused"]) == 0
    assert seen["max_epochs"] == 2


@pytest.mark.parametrize("spelling", ["--max_epochs", "--max-epochs"])
def test_reproduce_takes_both_spellings(spelling, monkeypatch):
    seen = {}
    monkeypatch.setattr(reproduce, "reproduce", lambda *a, **kw: seen.update(kw))
    assert main(["reproduce", "etth1", spelling, "1", "--out", "unused"]) == 0
    assert seen["max_epochs"] == 1


@pytest.mark.parametrize("flags", [["--d_model", "32", "--n_layers", "1"], ["--d-model", "32", "--n-layers", "1"]])
def test_backbones_takes_both_spellings(flags, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(cli, "backbones_table", lambda d, n: seen.update(d=d, n=n) or "table")
    assert main(["backbones", *flags]) == 0
    assert seen == {"d": 32, "n": 1}


def test_help_documents_the_underscored_form_first(capsys):
    assert main(["compare", "--help"]) == 0
    assert "--max_epochs MAX_EPOCHS, --max-epochs MAX_EPOCHS" in capsys.readouterr().out


def test_docs_use_the_underscored_options():
    texts = [REPO / "README.md", REPO / "Makefile", *sorted((REPO / "docs").rglob("*.md")),
             *sorted(PACKAGED_CONFIGS.rglob("*.yaml"))]
    for path in texts:
        text = path.read_text()
        assert not re.search(r"--(max-epochs|shared-heads)\b", text), path
        assert not re.search(r"seqzoo backbones[^\n]*--(d-model|n-layers)\b", text), path


# ----------------------------------------------------------------------------- --model.help NAME


def test_model_help_takes_a_short_task_name(capsys):
    assert main(["fit", "--model.help", "ForecastingTask"]) == 0
    out = capsys.readouterr().out
    assert "Help for --model.help=seqzoo.domains.forecasting.ForecastingTask" in out
    assert "--model.lookback" in out


def test_help_names_become_class_paths():
    from seqzoo.lightning_cli import expand_help_names

    assert expand_help_names(["--model.help", "ForecastingTask", "--data.help=ForecastingDataModule"]) == [
        "--model.help", "seqzoo.domains.forecasting.ForecastingTask",
        "--data.help=seqzoo.datasets.forecasting.datamodule.ForecastingDataModule"]
    assert expand_help_names(["--model.backbone.help", "mamba"]) == [
        "--model.backbone.help", "seqzoo.backbones.mamba.Mamba"]
    # dotted paths and names outside seqzoo's sections pass through
    assert expand_help_names(["--model.help", "a.b.C", "--trainer.callbacks.help", "ModelCheckpoint"]) == [
        "--model.help", "a.b.C", "--trainer.callbacks.help", "ModelCheckpoint"]


def test_unknown_help_name_lists_the_closest(capsys):
    assert main(["fit", "--model.help", "ForecastTask"]) == 2
    err = capsys.readouterr().err
    assert "--model.help ForecastTask: no seqzoo task" in err and "ForecastingTask" in err


# ----------------------------------------------------------------------------- --config from the package


def test_configs_live_in_the_package_and_the_clone_links_them():
    assert PACKAGED_CONFIGS == Path(seqzoo.__file__).resolve().parent / "configs"
    assert "forecasting/weather.yaml" in packaged_configs()
    link = REPO / "configs"
    assert link.is_symlink() and link.resolve() == PACKAGED_CONFIGS


@pytest.mark.parametrize("given", ["forecasting/weather.yaml", "configs/forecasting/weather.yaml"])
def test_config_names_resolve_to_the_shipped_file_outside_a_clone(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(given) == PACKAGED_CONFIGS / "forecasting" / "weather.yaml"
    args, name = rewrite_args(["--config", given, "--trainer.max_epochs", "1"])
    assert name == "weather" and args[0] == "--config" and args[2:] == ["--trainer.max_epochs", "1"]
    # weather.yaml names its backbone by registry name, so it is passed on rewritten, as YAML text
    shipped = yaml.safe_load((PACKAGED_CONFIGS / "forecasting" / "weather.yaml").read_text())
    assert yaml.safe_load(args[1])["data"] == shipped["data"]


def test_a_file_in_the_working_directory_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "forecasting").mkdir()
    (tmp_path / "forecasting" / "weather.yaml").write_text("model: {}\n")
    assert resolve_config_path("forecasting/weather.yaml") == Path("forecasting/weather.yaml")


def test_a_missing_config_names_the_closest_shipped_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config file not found: forecasting/wether.yaml .*"
                                          r"closest shipped configs: forecasting/weather.yaml"):
        resolve_config_path("forecasting/wether.yaml")
    assert main(["fit", "--config", "forecasting/wether.yaml"]) == 2
    assert "closest shipped configs: forecasting/weather.yaml" in capsys.readouterr().err
    for run in (lambda: compare.compare("wether.yaml", ["gru"], [0], tmp_path / "c"),
                lambda: sweep.sweep("mqar2.yaml", "data.n_pairs", ["2"], ["gru"], [0], tmp_path / "s")):
        with pytest.raises(ConfigError, match="closest shipped configs: .*(weather|mqar)"):
            run()


def test_reproduce_reads_the_shipped_configs():
    assert reproduce.CONFIGS == PACKAGED_CONFIGS / "forecasting"
    for table in reproduce.ETTH1.values():
        assert (reproduce.CONFIGS / table.config).is_file(), table.config

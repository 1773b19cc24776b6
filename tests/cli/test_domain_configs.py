"""The separation and handwriting configs parse and build their task against small data."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqzoo.cli import make_cli
from seqzoo.runs import rewrite_args

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    pytest.importorskip("soundfile")
    from seqzoo.datasets.handwriting import synth_handwriting
    from seqzoo.datasets.separation import synth_separation

    root = tmp_path_factory.mktemp("configs")
    return {
        "separation": synth_separation(str(root / "sep"), n_train=2, n_val=1, n_test=1, seconds=0.3),
        "handwriting": synth_handwriting(str(root / "hw"), n_writers=5, words=["ab", "ba"], chars="ab",
                                         char_repeats=3, n_folds=1, speed=3.0),
    }


@pytest.mark.parametrize("config, data, fold", [
    ("separation/speech_mix.yaml", "separation", None),
    ("separation/synthetic.yaml", "separation", None),
    ("handwriting/words.yaml", "handwriting", "words_dep/0"),
    ("handwriting/chars.yaml", "handwriting", "chars_indep_0"),
    ("handwriting/pendigits.yaml", "handwriting", "chars_dep_0"),
])
@pytest.mark.parametrize("backbone", ["fsmn"])
def test_config_builds_its_task(config, data, fold, backbone, small_data, tmp_path):
    args = ["--config", str(CONFIGS / config), "--data.init_args.path", str(small_data[data]),
            "--data.init_args.prepare", "null", "--model.backbone", backbone, "--run_dir", str(tmp_path / "run")]
    if fold:
        args += ["--data.init_args.fold", fold]
    args, name = rewrite_args(args)
    cli = make_cli(args=args, run=False, config_name=name)
    dims = cli.datamodule.dims
    for name, value in dims.items():
        assert getattr(cli.model, name, value) == value or name == "alphabet"
    assert type(cli.model.backbone).name == backbone
    assert cli.model.backbone.d_model == 64, "the config's shared keywords are kept"

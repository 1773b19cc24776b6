"""The separation and handwriting configs parse and build their task against small data."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import pytest

from seqzoo.lightning_cli import make_cli
from seqzoo.run_config import load_yaml, rewrite_args, task_class_of

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
def test_config_builds_its_task(config, data, fold, backbone, small_data, tmp_path, monkeypatch):
    args = ["--config", str(CONFIGS / config), "--data.init_args.path", str(small_data[data]),
            "--data.init_args.prepare", "null", "--model.backbone", backbone, "--run_dir", str(tmp_path / "run")]
    if fold:
        args += ["--data.init_args.fold", fold]
    args, name = rewrite_args(args)
    task_cls = task_class_of(load_yaml(CONFIGS / config))
    received = {}
    init = task_cls.__init__

    @functools.wraps(init)
    def recording_init(self, *a, **kw):
        received.update(kw)
        init(self, *a, **kw)

    monkeypatch.setattr(task_cls, "__init__", recording_init)
    cli = make_cli(args=args, run=False, config_name=name)
    assert type(cli.model) is task_cls
    dims = cli.datamodule.dims
    accepted = set(inspect.signature(init).parameters)
    assert dims and set(dims) <= accepted, f"every size the data module has is a {task_cls.__name__} argument"
    for key, value in dims.items():
        assert key in received and received[key] == value, f"{key}: data {value!r}, task got {received.get(key)!r}"
    assert type(cli.model.backbone).name == backbone
    assert cli.model.backbone.d_model == 64, "the config's shared keywords are kept"

"""The data-module contract (seqzoo/datasets/base.py): ``dims`` is metadata that never
touches the filesystem, data is written once by ``prepare_data`` and only read by
``setup``, one loader rule for every domain, one spelling of "write when missing"."""

from __future__ import annotations

import builtins
import importlib
import os
import pkgutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import seqzoo.datasets
from seqzoo import ConfigError, DataError
from seqzoo.datasets.base import DIM_NAMES, BaseDataModule
from seqzoo.datasets.diagnostics import (
    DiagnosticsDataModule,
    MQARDataModule,
    PasskeyDataModule,
    SelectivBenchDataModule,
    SelectiveCopyDataModule,
)
from seqzoo.datasets.forecasting import ForecastingDataModule
from seqzoo.datasets.graph import GraphDataModule
from seqzoo.datasets.handwriting import HandwritingDataModule
from seqzoo.datasets.icd import IcdDataModule
from seqzoo.datasets.pain import PainDataModule
from seqzoo.datasets.rul import RULDataModule
from seqzoo.datasets.separation import SeparationDataModule
from seqzoo.datasets.vision import VisionDataModule
from seqzoo.datasets.worldmodel import WorldModelDataModule

# The least each data module needs besides its path; a new domain adds its module here.
CASES = {
    ForecastingDataModule: {},
    RULDataModule: {"format": "laser", "stage": "detect"},
    PainDataModule: {"n_channels": 16},
    SeparationDataModule: {},
    HandwritingDataModule: {"alphabet": "abc", "fold": "chars_indep_0"},
    VisionDataModule: {"n_classes": 10, "image_size": 8, "in_chans": 1},
    WorldModelDataModule: {"image_size": 16, "action_dim": 5, "seq_len": 64},
    GraphDataModule: {"n_node_features": 3},
    IcdDataModule: {},
}


# Data generated in memory from a seed (no files: nothing to write or find); the shared base
# of a family of such modules is listed with its concrete ones.
IN_MEMORY = {
    MQARDataModule: {"n_train": 8, "n_val": 4, "n_test": 4},
    SelectiveCopyDataModule: {"n_train": 8, "n_val": 4, "n_test": 4},
    SelectivBenchDataModule: {"n_train": 8, "n_val": 4, "n_test": 4},
    PasskeyDataModule: {"n_train": 8, "n_val": 4, "n_test": 4},
}
ABSTRACT = {DiagnosticsDataModule}


def _data_modules() -> set[type]:
    for info in pkgutil.walk_packages(seqzoo.datasets.__path__, "seqzoo.datasets."):
        importlib.import_module(info.name)
    found, todo = set(), [BaseDataModule]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("seqzoo.datasets."):
                found.add(sub)
    return found


def test_every_data_module_is_covered():
    missing = sorted(cls.__qualname__ for cls in _data_modules() - set(CASES) - set(IN_MEMORY) - ABSTRACT)
    assert not missing, f"add these data modules to CASES: {missing}"


class _NoFilesystem:
    """Any stat, open or directory listing inside the block fails the test."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def __enter__(self):
        def refuse(name):
            def call(*args, **kwargs):
                raise AssertionError(f"dims touched the filesystem: {name}{args[:1]}")
            return call

        for module, name in ((os, "stat"), (os, "lstat"), (os, "listdir"), (os, "scandir"), (os, "mkdir"),
                             (builtins, "open"), (os, "open")):
            self.monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
        return self

    def __exit__(self, *exc):
        self.monkeypatch.undo()


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_dims_are_metadata_and_never_touch_the_filesystem(cls, tmp_path, monkeypatch):
    missing = tmp_path / "not-there" / ("data.csv" if cls is ForecastingDataModule else "")
    dm = cls(str(missing), **CASES[cls])
    with _NoFilesystem(monkeypatch):
        dims = dm.dims
    assert dims and set(dims) <= set(DIM_NAMES), dims
    assert all(v is not None for v in dims.values())
    assert not (tmp_path / "not-there").exists()
    with pytest.raises(DataError, match=f"{dm.data_name} not found"):
        dm.setup()  # setup reads; it never writes what is missing
    assert not (tmp_path / "not-there").exists()


@pytest.mark.parametrize("cls", list(IN_MEMORY), ids=lambda c: c.__name__)
def test_in_memory_data_needs_no_files_and_dims_are_metadata(cls, monkeypatch):
    dm = cls(**IN_MEMORY[cls])
    with _NoFilesystem(monkeypatch):
        dims = dm.dims
        dm.prepare_data()  # nothing to write
    assert dims and set(dims) <= set(DIM_NAMES), dims
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [8, 4, 4]


@pytest.mark.parametrize("cls, prepare, kwargs", [
    (ForecastingDataModule, "synth:forecasting", {"lookback": 24, "horizon": 12}),
    (RULDataModule, "synth:rul-laser", {"format": "laser", "lookback": 8}),
    (VisionDataModule, "synth:vision", {"n_classes": 4, "image_size": 16, "in_chans": 3}),
    (WorldModelDataModule, "synth:worldmodel", {"image_size": 16, "action_dim": 5, "seq_len": 64}),
], ids=["forecasting", "rul", "vision", "worldmodel"])
def test_prepare_data_writes_once_and_setup_only_reads(cls, prepare, kwargs, tmp_path):
    path = tmp_path / "d" / ("ett_synthetic.csv" if cls is ForecastingDataModule else "")
    dm = cls(str(path), prepare=prepare, **kwargs)
    with pytest.raises(DataError, match=r"written by prepare_data\(\) from"):
        dm.setup()
    dm.prepare_data()
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "d").rglob("*") if p.is_file()}
    assert written
    marker = tmp_path / "d" / "kept.txt"
    marker.write_text("the user's file")
    again = cls(str(path), prepare=prepare, **kwargs)
    again.prepare_data()  # data already there: nothing is rewritten
    again.setup()
    assert {p: p.stat().st_mtime_ns for p in written} == written and marker.read_text() == "the user's file"
    assert len(again.train_dataloader()) > 0
    assert not list(tmp_path.glob(".d.partial-*")), "no temporary folder left behind"


def test_prepare_names_a_known_writer_and_synth_flags_are_gone(tmp_path):
    with pytest.raises(ConfigError, match="no synthetic generator for domain 'nope'"):
        ForecastingDataModule(str(tmp_path / "x.csv"), prepare="synth:nope")
    with pytest.raises(ConfigError, match="unknown data source 'nope'; known: .*pvlib-tmy3"):
        VisionDataModule(str(tmp_path), n_classes=2, image_size=4, prepare="nope")
    for cls, kwargs in ((RULDataModule, {}), (PainDataModule, {"n_channels": 2})):
        with pytest.raises(ConfigError, match="data.synth was removed"):
            cls(str(tmp_path), synth=True, **kwargs)


class _Tiny(BaseDataModule):
    target_key = "y"

    def __init__(self, n_train: int, **kwargs):
        super().__init__(**kwargs)
        self.path, self.n_train = "<memory>", n_train

    @property
    def dims(self):
        return {"n_channels": 1}

    def data_ready(self) -> bool:
        return True

    def setup(self, stage=None):
        make = lambda n: {"x": torch.arange(n, dtype=torch.float32), "y": torch.arange(n) % 3}  # noqa: E731
        self.datasets = {s: _Items(make(n)) for s, n in (("train", self.n_train), ("val", 5), ("test", 7))}


class _Items(TensorDataset):
    def __init__(self, columns: dict):
        self.columns = columns

    def __len__(self):
        return len(self.columns["x"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


def test_one_loader_rule_for_every_domain():
    dm = _Tiny(10, batch_size=4, eval_batch_size=3)
    train = list(dm.train_dataloader())
    assert [len(b["x"]) for b in train] == [4, 4], "more than one batch: the last partial batch is dropped"
    assert [len(b["x"]) for b in dm.val_dataloader()] == [3, 2], "evaluation keeps every item, in order"
    assert torch.cat([b["x"] for b in dm.test_dataloader()]).tolist() == list(range(7))
    small = _Tiny(3, batch_size=4)
    assert [len(b["x"]) for b in small.train_dataloader()] == [3], "a single partial batch is kept"
    assert dm.train_targets().tolist() == [i % 3 for i in range(10)]


def test_subclasses_written_for_the_old_mixin_still_work():
    from seqzoo.datasets.base import SplitLoaders

    class Old(SplitLoaders, _Tiny):
        pass

    assert len(list(Old(10, batch_size=4).train_dataloader())) == 2


def test_module_docstring_states_the_contract():
    doc = seqzoo.datasets.base.__doc__
    for part in ("``dims``", "``prepare_data()``", "``setup(stage)``", "``train_targets()``"):
        assert part in doc, part
    assert Path(seqzoo.datasets.base.__file__).name == "base.py"

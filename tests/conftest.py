"""Shared fixtures: small synthetic datasets and configs written into tmp folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import yaml

if TYPE_CHECKING:  # imported where used: the kernel and compile-gate sessions need neither
    import lightning as L


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run with -m gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_tiny_trainer(**overrides) -> "L.Trainer":
    """A quiet CPU trainer for tests: no logger, no checkpoints, no progress bar or summary.

    Any Trainer argument can be overridden (``max_epochs``, ``limit_train_batches``...)."""
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    settings.update(overrides)
    import lightning as L

    return L.Trainer(**settings)


@pytest.fixture
def tiny_trainer():
    """Factory of quiet CPU trainers: ``tiny_trainer(max_epochs=3)`` (see :func:`make_tiny_trainer`)."""
    return make_tiny_trainer


@pytest.fixture(scope="session")
def ett_csv(tmp_path_factory) -> Path:
    """A 1,200-row ETT-format CSV with daily/weekly seasonality."""
    from seqzoo.datasets.forecasting import synth_forecasting

    return synth_forecasting(out=str(tmp_path_factory.mktemp("ett")), n_rows=1200, seed=0)


def forecasting_config(csv: Path, backbone: str = "gru", **trainer) -> dict:
    """A tiny forecasting experiment: lookback 48, horizon 12, d_model 16."""
    return {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 8,
            "limit_val_batches": 4,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            **trainer,
        },
        "model": {
            "class_path": "seqzoo.domains.forecasting.ForecastingTask",
            "init_args": {
                "backbone": {"class_path": backbone, "init_args": {"d_model": 16, "n_layers": 1}},
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003}},
            },
        },
        "data": {
            "class_path": "seqzoo.datasets.forecasting.ForecastingDataModule",
            "init_args": {"path": str(csv), "lookback": 48, "horizon": 12, "batch_size": 16},
        },
    }


@pytest.fixture
def write_config(tmp_path):
    def write(config: dict, name: str = "tiny") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def basicmotions_dir(tmp_path_factory) -> Path:
    """UEA BasicMotions (real motion data from aeon) in the pain task's subject layout."""
    pytest.importorskip("aeon")
    from seqzoo.datasets.pain import prepare_basicmotions

    return prepare_basicmotions(out=str(tmp_path_factory.mktemp("basicmotions")))

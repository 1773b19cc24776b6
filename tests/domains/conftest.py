"""The domains' shared fixture: one small data module per built domain (``domain_data``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqzoo.checkpoints import build_datamodule
from seqzoo.run_config import load_yaml, rewrite_backbone_names

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = {  # config, data overrides that keep the data small
    "forecasting": ("configs/forecasting/weather.yaml", {"batch_size": 4}),
    "rul": ("configs/rul/laser_rul.yaml", {"batch_size": 4}),
    "pain": ("configs/pain/emopain_synth.yaml", {"batch_size": 4}),
    "separation": ("configs/separation/synthetic.yaml", {"batch_size": 2, "eval_batch_size": 2}),
    "handwriting": ("configs/handwriting/words.yaml", {"batch_size": 2}),
    "vision": ("configs/vision/digits.yaml", {"batch_size": 4}),
    "worldmodel": ("configs/worldmodel/memory_cue.yaml", {"batch_size": 2}),
    "diagnostics": ("configs/diagnostics/mqar.yaml", {"batch_size": 4, "n_train": 16, "n_val": 8, "n_test": 8}),
    "icd": ("configs/icd/synthetic.yaml", {"batch_size": 2, "max_len": 64, "synth_options": {
        "n_train": 8, "n_val": 4, "n_test": 4, "n_codes": 12, "min_len": 50, "max_len": 60, "seed": 0}}),
    "graph": ("configs/graph/cycle.yaml", {"batch_size": 4, "prepare_args": {"task": "cycle", "n_graphs": 20}}),
}


@pytest.fixture(scope="module")
def domain_data(tmp_path_factory):
    """One data module per domain, its data written once into a temporary folder."""
    cache = {}

    def get(domain):
        if domain not in cache:
            path, overrides = DOMAINS[domain]
            config = load_yaml(ROOT / path)
            rewrite_backbone_names(config)
            data = config["data"]["init_args"]
            if "path" in data:  # generated-in-memory data (diagnostics) has no folder
                data["path"] = str(tmp_path_factory.mktemp(domain) / Path(data["path"]).name)
            data.update(overrides)
            cache[domain] = (config, build_datamodule(config))
        return cache[domain]

    return get

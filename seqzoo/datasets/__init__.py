"""Data: one module per domain with readers of the public on-disk format, synthetic
generators that write that format, adapters for real data shipped in packages, and
LightningDataModules. Importing this package registers every module's generators."""

import importlib
import pkgutil

from seqzoo.datasets.base import (
    DIM_NAMES,
    BaseDataModule,
    get_prepare,
    get_synth,
    prepare_sources,
    register_prepare,
    register_synth,
    synth_generators,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DIM_NAMES",
    "BaseDataModule",
    "get_prepare",
    "get_synth",
    "prepare_sources",
    "register_prepare",
    "register_synth",
    "synth_generators",
]

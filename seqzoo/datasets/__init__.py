"""Data: one package per domain, each with the same parts --

* ``reader.py``: the public on-disk format (read, and write where generators need it);
* ``datamodule.py``: the LightningDataModule (contract in :mod:`seqzoo.datasets.base`);
* ``synthetic.py``: a generator of that format, ``@register_synth("<domain>")``;
* ``prepare.py``: real data from installed packages, ``@register_prepare("<source>")``
  (only where such data exists);
* ``__init__.py``: re-exports the public names (``seqzoo.datasets.<domain>.<Class>`` is
  the class path configs use).

Importing this package imports every domain package, so the registries fill."""

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
    if _module.ispkg and not _module.name.startswith("_"):
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

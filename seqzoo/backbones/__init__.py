"""Backbone families. Importing this package registers every family module in it:
a new family is one new module here with ``@register_backbone("name")`` on its class."""

import importlib
import pkgutil

from seqzoo.backbones.base import (
    SHARED_KEYWORDS,
    Backbone,
    State,
    backbone_init_args,
    build_backbone,
    count_parameters,
    get_backbone_class,
    list_backbones,
    register_backbone,
)

_NOT_FAMILIES = {"base", "blocks"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_FAMILIES and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "SHARED_KEYWORDS",
    "Backbone",
    "State",
    "backbone_init_args",
    "build_backbone",
    "count_parameters",
    "get_backbone_class",
    "list_backbones",
    "register_backbone",
]

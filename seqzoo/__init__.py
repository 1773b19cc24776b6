"""seqzoo: shared sequence backbones with Triton kernels, plugged into Lightning tasks.

    >>> from seqzoo import build_backbone, list_backbones
    >>> backbone = build_backbone("transformer", d_model=64, n_layers=2)
"""

from seqzoo.backbones import Backbone, build_backbone, get_backbone_class, list_backbones, register_backbone
from seqzoo.errors import ConfigError, DataError, ExportError, SeqzooError, UnknownBackboneError

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "ConfigError",
    "DataError",
    "ExportError",
    "SeqzooError",
    "UnknownBackboneError",
    "build_backbone",
    "get_backbone_class",
    "list_backbones",
    "register_backbone",
]

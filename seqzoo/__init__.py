"""seqzoo: shared sequence backbones with Triton kernels, plugged into Lightning tasks.

    >>> from seqzoo import build_backbone, list_backbones
    >>> backbone = build_backbone("transformer", d_model=64, n_layers=2)
"""

from seqzoo.errors import ConfigError, DataError, ExportError, SeqzooError, UnknownBackboneError

_BACKBONE_API = ("Backbone", "build_backbone", "get_backbone_class", "list_backbones", "register_backbone")


def __getattr__(name: str):
    """The backbone API on first use: ``import seqzoo`` alone (``seqzoo --help``, ``seqzoo
    status``) does not import torch."""
    if name in _BACKBONE_API:
        from seqzoo import backbones

        value = getattr(backbones, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'seqzoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BACKBONE_API))

__version__ = "0.1.0"


def load(path):
    """The trained task of a run folder or checkpoint (see :func:`seqzoo.trained.load`)."""
    from seqzoo.trained import load as _load

    return _load(path)


def predict(run, path=None, windows=None, batch_size=None):
    """A trained run's predictions on a file, in the user's units (see :func:`seqzoo.trained.predict`)."""
    from seqzoo.trained import predict as _predict

    return _predict(run, path, windows=windows, batch_size=batch_size)


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
    "load",
    "predict",
    "register_backbone",
]

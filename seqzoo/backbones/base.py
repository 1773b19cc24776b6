"""The backbone contract and its registry.

A backbone is a stack of sequence-mixing blocks, ``(B, L, d_model) -> (B, L, d_model)``.
Everything outside the mixer stack (normalisation of the input series, embeddings,
positions, class tokens, heads) belongs to the task that uses it.

Every family takes the same shared keywords (``d_model``, ``n_layers``, ``causal``,
``dropout``, ``impl``) plus its own, and declares its capabilities as class
attributes, which ``seqzoo backbones`` lists:

* ``causal``    -- the family *can* be built causal (output t sees inputs <= t);
* ``streaming`` -- it implements ``init_state``/``step`` (built with ``causal=True``);
* ``tokens``    -- ``"time"``, ``"variate"`` for inverted models (one token per channel),
  ``"grid"`` for models of a (B, C, L, d_model) grid of C channels by L tokens (TSM2), or
  ``"image"`` for models of an image's H x W patch tokens, (B, H*W, d_model) in row-major
  order on a fixed grid (ViM2);
* ``export_fixed_length`` -- its ONNX graph is exported at a fixed length;
* ``fixed_tokens`` -- it is built for one token count, its ``n_tokens`` keyword (weights are
  sized by it, e.g. MambaMixer's channel mixer, whose features are the tokens).

Whether an *instance* was built causal is ``backbone.is_causal``.
"""

from __future__ import annotations

import abc
import inspect
from typing import ClassVar

import torch
from torch import Tensor, nn

from seqzoo.errors import ConfigError, UnknownBackboneError
from seqzoo.kernels.dispatch import check_impl
from seqzoo.layers.state import State

SHARED_KEYWORDS = ("d_model", "n_layers", "causal", "dropout", "impl")
"""Keywords every family accepts with the same meaning."""

TOKEN_KINDS = ("time", "variate", "grid", "image")
"""What a backbone's tokens are: steps, channels (inverted models), a channels x steps grid, or image patches."""


class Backbone(nn.Module, abc.ABC):
    """A stack of sequence-mixing blocks: (B, L, d_model) -> (B, L, d_model)."""

    causal: ClassVar[bool] = False
    streaming: ClassVar[bool] = False
    tokens: ClassVar[str] = "time"
    export_fixed_length: ClassVar[bool] = False
    fixed_tokens: ClassVar[bool] = False
    name: ClassVar[str] = ""
    family: ClassVar[str] = ""

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        label = type(self).name or type(self).__name__
        if not isinstance(d_model, int) or d_model < 1:
            raise ConfigError(f"backbone {label!r}: d_model must be a positive integer, got {d_model!r}")
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ConfigError(f"backbone {label!r}: n_layers must be a positive integer, got {n_layers!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"backbone {label!r}: dropout must be in [0, 1), got {dropout!r}")
        if causal and not type(self).causal:
            raise ConfigError(
                f"backbone {label!r} cannot be built causal (its mixing looks at the whole sequence); "
                f"causal families: {', '.join(n for n in list_backbones() if get_backbone_class(n).causal)}"
            )
        check_impl(impl)
        self.d_model = d_model
        self.n_layers = n_layers
        self.is_causal = bool(causal)
        self.dropout_p = float(dropout)
        self.impl = impl

    @abc.abstractmethod
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mix ``x`` (B, L, d_model); ``mask`` (B, L) bool marks valid positions."""

    def encoder_memory(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """What a decoder cross-attends to when this backbone is its encoder: a sequence
        (B, S, d_model) and its padding mask (B, S) (None: all valid).

        By default the output of :meth:`forward` and ``mask`` (S = L). A family whose paper
        feeds its decoder a shorter sequence overrides this: Informer returns the distilled
        encoding (S = ceil(L / 2^k)) rather than ``forward``'s output stretched back to L.
        """
        return self(x, mask), mask

    # -- streaming -------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        """The state before the first step (streaming families override this)."""
        self._check_can_step()
        raise TypeError(f"{type(self).__qualname__} declares streaming=True but does not define init_state()")

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """Advance one step: ``x_t`` (B, d_model) -> (y_t (B, d_model), new state)."""
        self._check_can_step()
        raise TypeError(f"{type(self).__qualname__} declares streaming=True but does not define step()")

    def forward_with_state(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Process a chunk ``x`` (B, L, d_model) of a long stream, continuing from ``state``
        (as returned by ``init_state`` or an earlier call): chunk by chunk equals one causal
        ``forward``. By default one :meth:`step` per position; families with a chunked
        recurrence (S4/S4D) override it."""
        self._check_can_step()
        outputs = []
        for t in range(x.shape[1]):
            y_t, state = self.step(x[:, t], state)
            outputs.append(y_t)
        return torch.stack(outputs, dim=1), tuple(state)

    def _check_can_step(self) -> None:
        label = type(self).name or type(self).__name__
        if not type(self).streaming:
            raise TypeError(f"backbone {label!r} does not stream (streaming=False): it has no step()")
        if not self.is_causal:
            raise TypeError(f"backbone {label!r}: step() needs a backbone built with causal=True")

    # -- optimiser -------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Parameter groups with their own optimiser settings (e.g. SSM log_dt without weight
        decay). Parameters not listed here go into the task's default group."""
        return []

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_layers={self.n_layers}, causal={self.is_causal}"


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Backbone]] = {}


def register_backbone(name: str):
    """Class decorator: make a Backbone subclass reachable as ``build_backbone(name)``."""

    def decorator(cls: type[Backbone]) -> type[Backbone]:
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise TypeError(f"register_backbone({name!r}) decorates a Backbone subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"backbone name {name!r} is already registered to {_REGISTRY[name].__qualname__}")
        if cls.tokens not in TOKEN_KINDS:
            raise ValueError(f"{cls.__qualname__}.tokens must be one of {TOKEN_KINDS}, got {cls.tokens!r}")
        cls.name = name
        cls.family = cls.__module__.rsplit(".", 1)[-1]
        _REGISTRY[name] = cls
        return cls

    return decorator


def _load_families() -> None:
    # Importing the package registers every family module (see backbones/__init__.py).
    import seqzoo.backbones  # noqa: F401


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def get_backbone_class(name: str) -> type[Backbone]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(_REGISTRY))}"
        ) from None


def backbone_init_args(cls: type[Backbone]) -> dict[str, inspect.Parameter]:
    """The keyword arguments a family's constructor accepts."""
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def build_backbone(name: str, **kwargs) -> Backbone:
    """Build a registered backbone. Arguments the family does not accept are an error."""
    cls = get_backbone_class(name)
    accepted = backbone_init_args(cls)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"backbone {name!r} does not accept {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted)}"
        )
    return cls(**kwargs)


def check_bidirectional(name: str, bidirectional: bool, causal: bool) -> bool:
    """A family's non-causal variant is asked for by name (``bidirectional=True``), never
    implied by ``causal=False``; it cannot also be causal."""
    if bidirectional and causal:
        raise ConfigError(f"backbone {name!r}: bidirectional=True reads later tokens, so it cannot be causal")
    return bool(bidirectional)


VARIANT_KEYWORDS = {"bidirectional": False, "stem_shortcut": False, "bn_gain": 1.0, "gate": False, "group_norm": False}
"""Keywords that turn a family into a named variant of its paper's model, with the paper's value."""


def variant_label(name: str, init_args: dict) -> str:
    """How results name a backbone built with ``init_args``: ``"mamba"`` for the paper's
    form, ``"mamba (bidirectional)"`` for a variant."""
    variants = [key if isinstance(paper, bool) else f"{key}={init_args[key]:g}"
                for key, paper in VARIANT_KEYWORDS.items() if key in init_args and init_args[key] != paper]
    return f"{name} ({', '.join(variants)})" if variants else name


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

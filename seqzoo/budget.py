"""Equal parameter budgets: the width at which a family's backbone has a given parameter count.

``seqzoo compare --param_budget N`` builds every family at the ``d_model`` whose backbone
(the registered model, without the task's embedding and head, which every family shares)
has the parameter count closest to ``N``. Widths are multiples of ``granularity`` (8 by
default, so that every family's default head count divides them); widths a family refuses
(a ``ConfigError`` from its constructor) are skipped.
"""

from __future__ import annotations

from typing import Any

from seqzoo.backbones.base import build_backbone, count_parameters, get_backbone_class
from seqzoo.errors import ConfigError

MAX_WIDTH = 4096


def backbone_params(name: str, d_model: int, init_args: dict[str, Any]) -> int | None:
    """Trainable parameters of ``name`` built at ``d_model`` with ``init_args``; None when the
    family refuses that width."""
    kwargs = {**init_args, "d_model": d_model}
    kwargs.setdefault("n_layers", 2)
    try:
        return count_parameters(build_backbone(name, **kwargs))
    except ConfigError:
        return None


def d_model_for_budget(name: str, budget: int, init_args: dict[str, Any] | None = None,
                       granularity: int = 8) -> tuple[int, int]:
    """The width (a multiple of ``granularity``) at which backbone ``name`` has the parameter
    count closest to ``budget``, and that count. Parameters grow with the width, so a binary
    search over the multiples finds the crossing; its two neighbours decide."""
    get_backbone_class(name)  # unknown names fail here
    if budget < 1:
        raise ConfigError(f"--param_budget must be a positive parameter count, got {budget}")
    args = {k: v for k, v in (init_args or {}).items() if k != "d_model"}
    cache: dict[int, int | None] = {}

    def params(width: int) -> int | None:
        if width not in cache:
            cache[width] = backbone_params(name, width, args)
        return cache[width]

    def valid_at_or_above(width: int) -> tuple[int, int] | None:
        while width <= MAX_WIDTH:
            p = params(width)
            if p is not None:
                return width, p
            width += granularity
        return None

    lo, hi = granularity, MAX_WIDTH - MAX_WIDTH % granularity
    first = valid_at_or_above(lo)
    if first is None:
        raise ConfigError(f"backbone {name!r}: no width up to {MAX_WIDTH} in steps of {granularity} can be built "
                          f"with {args}")
    if first[1] >= budget:
        return first
    while hi - lo > granularity:  # invariant: params(lo) < budget (or lo invalid below the crossing)
        mid = lo + (hi - lo) // (2 * granularity) * granularity
        found = valid_at_or_above(mid)
        if found is None or found[1] >= budget:
            hi = mid
        else:
            lo = found[0]
    candidates = [c for c in (valid_at_or_above(lo), valid_at_or_above(hi)) if c is not None]
    below = [c for c in candidates if c[1] < budget]
    if below:
        candidates.append(max(below))
    return min(candidates, key=lambda c: (abs(c[1] - budget), c[0]))

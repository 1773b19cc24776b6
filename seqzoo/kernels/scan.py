"""Recurrences with a symbolic length under ``torch.export``: torch's scan operator, called so that
export does not compile its body with dynamo.

``torch._higher_order_ops.scan.scan`` runs ``torch.compile(fullgraph=True)`` over its body on
every call outside a compile, to lift the tensors the body reads from its closure into explicit
inputs. Under ``torch.export`` that cost ~0.5 s per call here (a 2-layer Mamba export: 7.1 ->
6.0 s without it; spiking LMUFormer makes 16 calls per graph). :func:`scan` takes those
tensors as ``consts`` instead and hands the body to the operator itself (``scan_op(body, init,
xs, additional_inputs)``), which traces it as ``scan()`` would after the compile. On a torch
whose operator has another signature it falls back to ``scan()``, the same recurrence.

The body must not read tensors from its closure (pass them in ``consts``; Python numbers are
fine), mutate its inputs or return an input or an alias (clone a carry that is also an output).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.utils._pytree as pytree

__all__ = ["scan"]


def scan(step: Callable[..., tuple[Any, Any]], init: Any, xs: Any, consts: Sequence[torch.Tensor] = ()
         ) -> tuple[Any, Any]:
    """``carry, ys``: ``carry, y_t = step(carry, x_t, *consts)`` over the leading dimension of
    ``xs``, ``ys`` the ``y_t`` stacked along it. ``init`` / ``xs`` / the ``y_t``: tensors or
    pytrees of tensors."""
    consts = tuple(consts)
    if not _direct():
        from torch._higher_order_ops.scan import scan as torch_scan

        return torch_scan(lambda carry, x: step(carry, x, *consts), init, xs)
    init_leaves, init_spec = pytree.tree_flatten(init)
    xs_leaves, xs_spec = pytree.tree_flatten(xs)
    n_init, n_xs = len(init_leaves), len(xs_leaves)
    out_spec: list = []

    def body(*args):
        carry = pytree.tree_unflatten(list(args[:n_init]), init_spec)
        x = pytree.tree_unflatten(list(args[n_init:n_init + n_xs]), xs_spec)
        new, y = step(carry, x, *args[n_init + n_xs:])
        new_leaves, new_spec = pytree.tree_flatten(new)
        if new_spec != init_spec:
            raise ValueError(f"scan: the step returned a carry shaped {new_spec}, not as init: {init_spec}")
        y_leaves, y_spec = pytree.tree_flatten(y)
        out_spec[:] = [y_spec]
        return [*new_leaves, *y_leaves]

    from torch._higher_order_ops.scan import scan_op

    out = scan_op(body, init_leaves, xs_leaves, consts)
    return (pytree.tree_unflatten(list(out[:n_init]), init_spec),
            pytree.tree_unflatten(list(out[n_init:]), out_spec[0]))


@lru_cache(maxsize=1)
def _direct() -> bool:
    """Whether this torch's scan operator takes ``(combine_fn, init, xs, additional_inputs)``."""
    try:
        from torch._higher_order_ops.scan import ScanOp
    except ImportError:
        return False
    names = list(inspect.signature(ScanOp.__call__).parameters)
    return names[:5] == ["self", "combine_fn", "init", "xs", "additional_inputs"]

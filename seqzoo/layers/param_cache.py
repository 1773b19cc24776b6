"""A cache of values computed from a module's own tensors, valid until one of them changes.

S4/S4D's discretisation (Ā, B̄·C) and the LMU's impulse response are functions of a few
parameters or buffers. When nothing can differentiate through them or trace them, a
streaming ``step`` or an eval ``forward`` can reuse them: :func:`cached_on_tensors`
remembers ``compute()`` per module and key until any of the tensors changes -- in place
(an optimiser step, ``load_state_dict``), swapped, moved or cast -- as seen from the
tensors' identity, ``_version``, storage, device and dtype; or until inference mode,
autocast or the float32 matmul precision change. The cache lives outside the module (a
weak-key table: never in its state_dict, pickles or copies). Writes through
``tensor.data`` bypass ``_version`` and are not seen.

It computes without caching under ``torch.compile`` and ``torch.export`` (which trace the
computation) and whenever gradients would flow into one of the tensors.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.kernels.dispatch import is_export_mode

__all__ = ["cached_on_tensors"]

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def cached_on_tensors(
    module: nn.Module,
    tensors: Sequence[Tensor],
    compute: Callable[[], Any],
    key: Hashable = (),
    max_entries: int = 1,
) -> Any:
    """``compute()``, remembered for ``module`` and ``key`` while ``tensors`` are unchanged.

    Args:
        module: the owner (the cache entry dies with it).
        tensors: the parameters/buffers ``compute`` reads.
        compute: computes the value from them.
        key: distinguishes values of the same tensors (e.g. a length and a dtype).
        max_entries: keys kept per module, least recently used dropped first.
    """
    tensors = tuple(tensors)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if needs_grad or torch.compiler.is_compiling() or is_export_mode():
        return compute()
    device = tensors[0].device.type
    valid = (torch.is_inference_mode_enabled(), torch.is_autocast_enabled(device), torch.get_autocast_dtype(device),
             torch.get_float32_matmul_precision(), *((t._version, t.data_ptr(), t.device, t.dtype) for t in tensors))
    entry = _CACHE.get(module)
    if entry is None or entry[1] != valid or any(a is not b for a, b in zip(entry[0], tensors)):
        entry = (tensors, valid, {})
        _CACHE[module] = entry
    table = entry[2]
    if key in table:
        value = table.pop(key)
    else:
        value = compute()
        if len(table) >= max_entries:
            table.pop(next(iter(table)))  # the least recently used
    table[key] = value
    return value

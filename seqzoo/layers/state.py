"""Streaming states: a state is a flat tuple of tensors whose shapes do not change from
step to step; a stack's state is the concatenation of its parts' states."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["State", "split_state"]

State = tuple[Tensor, ...]
"""A streaming state: a tuple of tensors whose shapes do not change from step to step."""


def split_state(state: State, sizes: Sequence[int]) -> list[State]:
    """Cut a flat state into consecutive tuples of ``sizes[i]`` tensors (what the i-th part owns).

    Tensors past ``sum(sizes)`` are ignored; callers that must match exactly check the total.

    Args:
        state: the flat state.
        sizes: number of tensors each part owns, in order.
    """
    parts, offset = [], 0
    for size in sizes:
        parts.append(tuple(state[offset : offset + size]))
        offset += size
    return parts

"""Command-line helpers shared by the argparse verbs (``compare``, ``sweep``, ``reproduce``,
``backbones``).

One option style across seqzoo: ``--snake_case``, as the Lightning verbs spell their keys
(``--trainer.max_epochs``); the dashed spelling stays accepted as an alias (:func:`option`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from seqzoo.errors import ConfigError


def option(name: str) -> tuple[str, ...]:
    """The option strings of ``name`` for ``argparse.add_argument``: ``--max_epochs`` (the
    documented form) and, when it differs, the dashed alias ``--max-epochs``."""
    dashed = f"--{name.replace('_', '-')}"
    return (f"--{name}", dashed) if dashed != f"--{name}" else (f"--{name}",)


def check_passthrough(command: str, args: list[str]) -> None:
    """Arguments a command does not know must be run settings (``--trainer./--model./--data.``)."""
    bad = [a for a in args if a.startswith("--") and not a.startswith(("--trainer.", "--model.", "--data."))]
    if bad:
        raise ConfigError(f"unknown {command} option(s) {bad}; pass-through keys start with --trainer., --model. "
                          "or --data.")


def int_list(text: str, flag: str) -> list[int]:
    """Comma-separated integers of a command-line option, e.g. ``--seeds 0,1,2``."""
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{flag} is empty")
    return values


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored inside: an interrupted command writes what finished (compare's table,
    sweep's curves, reproduce's tables) whole even if Ctrl-C is pressed again meanwhile. Only
    in the main thread, where Python handles signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

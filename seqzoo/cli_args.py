"""Command-line helpers shared by ``seqzoo compare`` and ``seqzoo reproduce``."""

from __future__ import annotations

from seqzoo.errors import ConfigError


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

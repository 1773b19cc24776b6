"""Multi-model pipelines: trained tasks chained into one application, behind
``seqzoo pipeline <name> ...``. Each pipeline module defines ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

PIPELINES = {"laser": "seqzoo.pipelines.laser"}


def main(argv: list[str]) -> int:
    """``seqzoo pipeline <name> [options]``: run the named pipeline's ``main``."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: seqzoo pipeline <name> [options]\npipelines: " + ", ".join(sorted(PIPELINES)))
        return 0
    if argv[0] not in PIPELINES:
        print(f"seqzoo pipeline: unknown pipeline {argv[0]!r} (known: {', '.join(sorted(PIPELINES))})", file=sys.stderr)
        return 2
    return importlib.import_module(PIPELINES[argv[0]]).main(argv[1:])

"""Reader of the probes' on-disk form written by ``seqzoo data synth diagnostics``.

Layout: ``{train,val,test}.npz`` with ``inputs`` and ``targets`` int64 (N, L) (-100 where
a position is not scored) and ``probe.json`` (task, knobs, sizes, seed). Errors name the
file and what was wrong (:class:`~seqzoo.errors.DataError`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import require_path
from seqzoo.datasets.diagnostics.synthetic import IGNORE, SPLITS
from seqzoo.errors import DataError


def read_diagnostics(path: str | os.PathLike) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(probe.json contents, {split: (inputs, targets)}) from a folder written by the synth."""
    root = require_path(path, "diagnostics folder", hint="write one with `seqzoo data synth diagnostics --out DIR`")
    meta_file = require_path(Path(root) / "probe.json", "probe description")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{meta_file}: not valid JSON: {err}") from None
    for key in ("vocab_size", "n_classes", "seq_len"):
        if not isinstance(meta.get(key), int):
            raise DataError(f"{meta_file}: missing integer {key!r}")
    splits = {}
    for split in SPLITS:
        file = require_path(Path(root) / f"{split}.npz", f"{split} split")
        with np.load(file) as arrays:
            missing = [k for k in ("inputs", "targets") if k not in arrays]
            if missing:
                raise DataError(f"{file}: missing array(s) {', '.join(missing)}")
            inputs, targets = arrays["inputs"], arrays["targets"]
        if inputs.ndim != 2 or inputs.shape != targets.shape:
            raise DataError(f"{file}: inputs {inputs.shape} and targets {targets.shape} must both be (N, L)")
        if inputs.shape[1] != meta["seq_len"]:
            raise DataError(f"{file}: sequences have length {inputs.shape[1]}, probe.json says {meta['seq_len']}")
        if inputs.size and (inputs.min() < 0 or inputs.max() >= meta["vocab_size"]):
            raise DataError(f"{file}: token ids must be in [0, {meta['vocab_size']}), found "
                            f"[{inputs.min()}, {inputs.max()}]")
        scored = targets[targets != IGNORE]
        if scored.size and (scored.min() < 0 or scored.max() >= meta["n_classes"]):
            raise DataError(f"{file}: targets must be -100 or in [0, {meta['n_classes']})")
        splits[split] = (inputs.astype(np.int64), targets.astype(np.int64))
    return meta, splits

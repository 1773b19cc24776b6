"""A run folder's ``status.json``: written atomically, merged, read, and a run whose process
is gone marked ``died``. Standard library only, so ``seqzoo status`` answers without importing
torch or Lightning (``seqzoo.runs`` re-exports these for the callbacks that keep the file current).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

RUNS_ROOT = "runs"


def default_run_dir(config_name: str, backbone: str, seed: Any) -> Path:
    return Path(RUNS_ROOT) / config_name / backbone / f"seed{seed}"


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    """Replace ``status.json`` atomically with ``{"status": status, "time": now, **extra}``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    tmp = run_dir / "status.json.partial"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, run_dir / "status.json")


def update_status(run_dir: Path, **fields: Any) -> None:
    """Merge ``fields`` into ``status.json`` (keeping its status)."""
    record = read_status_file(run_dir) or {"status": "running"}
    record.update(fields)
    status = record.pop("status")
    record.pop("time", None)
    write_status(run_dir, status, **record)


def read_status_file(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def run_status(run_dir: Path) -> dict | None:
    """``status.json`` of a run, with a run whose process is gone marked ``"died"``.

    A status still ``"running"`` whose pid no longer exists on this host (killed, out of memory,
    machine rebooted) is rewritten as ``"died"``, keeping its last checkpoint, so the next
    ``seqzoo`` call on the folder and any scheduler reading the file see the truth.
    """
    record = read_status_file(run_dir)
    if not record or record.get("status") != "running":
        return record
    pid, host = record.get("pid"), record.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not _pid_alive(pid):
        record = {**record, "status": "died", "died_noticed": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "error": f"process {pid} on {host} ended without recording an end (killed?)"}
        if record.get("last_checkpoint"):
            record["resume"] = "seqzoo fit ... --ckpt_path last"
        status = record.pop("status")
        record.pop("time", None)
        write_status(Path(run_dir), status, **record)
        record["status"] = status
    return record

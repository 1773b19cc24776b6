"""A callback that SIGKILLs its own process at a given training step (for the kill-and-resume test:
the real ``seqzoo fit`` process dies as it would under ``kill -9`` or the OOM killer)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL this process when training is about to take optimiser step ``step`` (0-based).

    Args:
        step: the global step at which the process dies (before that step's batch runs).
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

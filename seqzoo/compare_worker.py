"""One ``seqzoo compare`` run, in its own process: train, test the best checkpoint, time inference.

    python -m seqzoo.compare_worker '{"config": ..., "seed": 0, "run_dir": ..., "result": ...}'

``compare`` runs each (backbone, seed) in a process of its own, so that peak-memory figures are
clean and one failure does not stop the rest; the result is a JSON file written atomically at
``result``. :class:`Runner` starts those processes. On Linux they are forked from one server
(``python -m seqzoo.compare_worker --serve``) that has imported torch and Lightning once, so
a compare pays those ~5 s of imports once instead of once per run. The forked child becomes
exactly the process above: same argv (which Lightning's DDP launcher re-runs for the other
ranks), environment, working folder and log. ``SEQZOO_COMPARE_FORK=0`` (or a server that
did not start) gives a fresh interpreter per run.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORK_ENV = "SEQZOO_COMPARE_FORK"


def run_worker(spec: dict) -> None:
    import resource

    import torch
    from lightning.pytorch.callbacks import Callback

    from seqzoo.backbones.base import count_parameters
    from seqzoo.lightning_cli import make_cli

    class ThroughputMeter(Callback):
        """Time of forward + backward + optimiser step per training batch (no data loading)."""

        def __init__(self, warmup: int = 3) -> None:
            self.warmup, self.seen, self.samples, self.tokens, self.seconds = warmup, 0, 0, 0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            _sync(pl_module.device)
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            _sync(pl_module.device)
            self.seen += 1
            if self.seen > self.warmup:
                self.seconds += time.perf_counter() - self._t0
                n = pl_module.batch_size_of(batch)
                self.samples += n
                self.tokens += n * pl_module.tokens_per_sample(batch)

    args = ["--config", spec["config"], "--seed_everything", str(spec["seed"]), "--run_dir", spec["run_dir"],
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    if spec.get("max_epochs"):
        args += ["--trainer.max_epochs", str(spec["max_epochs"])]
    if spec.get("max_steps"):
        args += ["--trainer.max_steps", str(spec["max_steps"])]
    args += list(spec.get("extra", []))
    cli = make_cli(args=args, run=False, config_name=Path(spec["config"]).stem)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    device = trainer.strategy.root_device  # fit and test hand the model back on the CPU
    meter = ThroughputMeter()
    trainer.callbacks.append(meter)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule)
    fit_seconds = time.perf_counter() - t0
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    last = Path(spec["run_dir"]) / "checkpoints" / "last.ckpt"
    checkpoint = best or (str(last) if last.is_file() else "")
    tested = trainer.test(model, datamodule, ckpt_path=best or None, verbose=False)
    if not trainer.is_global_zero:  # a DDP run's other ranks: rank 0 measures and writes the result
        return
    metrics = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    infer_samples, infer_tokens = measure_inference(model.to(device), datamodule)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        device_name = torch.cuda.get_device_name(device)
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        device_name = f"CPU ({os.cpu_count()} cores)"
    result = {
        "params": count_parameters(model.net if hasattr(model, "net") else model),
        "metrics": metrics,
        "train_samples_per_s": meter.samples / meter.seconds if meter.seconds else float("nan"),
        "train_tokens_per_s": meter.tokens / meter.seconds if meter.seconds else float("nan"),
        "infer_samples_per_s": infer_samples,
        "infer_tokens_per_s": infer_tokens,
        "peak_mem_mb": peak_mb,
        "device": device_name,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "fit_seconds": fit_seconds,
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else "",
    }
    tmp = Path(spec["result"] + ".partial")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, spec["result"])


def measure_inference(model, datamodule, max_batches: int = 12, warmup: int = 2) -> tuple[float, float]:
    """Samples/s and tokens/s of ``model(batch)`` in eval mode over test batches."""
    import torch

    model.eval()
    samples = tokens = 0
    seconds = 0.0
    batches = list(itertools.islice(datamodule.test_dataloader(), max_batches + warmup))
    if len(batches) <= warmup:  # a small test set (one window per unit): time its batches again after warm-up
        batches = batches * (warmup // max(len(batches), 1) + 2)
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            batch = model.transfer_batch_to_device(batch, model.device, 0)  # dicts, PyG batches...
            _sync(model.device)
            t0 = time.perf_counter()
            model(batch)
            _sync(model.device)
            if i >= warmup:
                seconds += time.perf_counter() - t0
                n = model.batch_size_of(batch)
                samples += n
                tokens += n * model.tokens_per_sample(batch)
    if not seconds:
        return float("nan"), float("nan")
    return samples / seconds, tokens / seconds


def _sync(device) -> None:
    import torch

    if getattr(device, "type", "") == "cuda":
        torch.cuda.synchronize(device)


def _command(spec: dict | str) -> list[str]:
    """The command of a run as a fresh process (``spec``: the run's, or ``--serve``)."""
    return [sys.executable, "-m", "seqzoo.compare_worker", spec if isinstance(spec, str) else json.dumps(spec)]


class Runner:
    """Starts ``compare``'s runs, one process each, and returns their exit codes (negative: the
    signal that ended it, as :mod:`subprocess` reports). Forks them from a server process where
    it can (see the module's docstring); a server that fails to start, or is gone before a run
    is handed to it, leaves fresh processes for the rest (the next run's log says why). Use as
    a context manager: the server ends with it."""

    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None
        self.fork = sys.platform.startswith("linux") and os.environ.get(FORK_ENV, "1") != "0"
        self.ready = False
        self.note = ""  # why runs start fresh, once the server is given up

    def _start(self) -> None:
        self.fork = False  # one server per Runner: once started or given up, not again
        self._err = tempfile.TemporaryFile("w+")  # import warnings; the reason if it fails
        self.server = subprocess.Popen(_command("--serve"),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                       env=_run_env(), text=True)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, failed: str = "") -> None:
        """End the server (it exits when its input closes; no run is left behind). ``failed``:
        why it is given up, kept with the tail of its output for the next run's log."""
        server, self.server = self.server, None
        if server is None:
            return
        try:
            server.stdin.close()
            server.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            server.kill()
            server.wait()
        if failed:
            self._err.seek(0)
            tail = self._err.read().strip().splitlines()[-1:] or [f"exit {server.returncode}"]
            self.note = f"seqzoo compare: {failed} ({tail[0][:300]}); runs start as fresh processes"
        self._err.close()

    def run(self, spec: dict, log_file: Path) -> int:
        if self.fork:  # started with the first run: a compare whose runs are all n/a starts none
            self._start()
        code = self._forked(spec, log_file) if self.server is not None else None
        if code is not None:
            return code
        with open(log_file, "w") as log:
            if self.note:
                print(self.note, file=log, flush=True)
            return subprocess.run(_command(spec), stdout=log, stderr=subprocess.STDOUT, env=_run_env()).returncode

    def _forked(self, spec: dict, log_file: Path) -> int | None:
        """The run's exit code, forked by the server; None when the server cannot take it."""
        server = self.server
        try:
            if not self.ready:
                self.ready = server.stdout.readline().strip() == "ready"
                if not self.ready:
                    raise OSError
            request = {"spec": spec, "log": str(log_file), "cwd": os.getcwd(), "env": _run_env()}
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            started = server.stdout.readline().split()
        except OSError:
            self.close(failed="the run server ended" if self.ready else "the run server did not start")
            return None
        if not started:  # gone as it took the run: whether the run began is unknown, so it failed
            return self._lost(log_file, "the run server ended")
        pid = int(started[1])
        try:
            reply = server.stdout.readline()
        except BaseException:  # Ctrl-C in compare: the run ends too, as subprocess.run ends its child
            _kill(pid, grace=0.25)
            raise
        if not reply.strip():
            _kill(pid)
            return self._lost(log_file, "the run server ended during this run")
        return int(reply)

    def _lost(self, log_file: Path, why: str) -> int:
        """The server is gone with the run: give it up, say why in the run's log, and fail the run."""
        self.close(failed=why)
        with open(log_file, "a") as log:
            print(self.note, file=log)
        return -1


def _run_env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def _kill(pid: int, grace: float = 0.0) -> None:
    """SIGKILL the run unless it ends within ``grace`` seconds (subprocess.run gives its child
    0.25 s after a Ctrl-C)."""
    import signal

    deadline = time.monotonic() + grace
    try:
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# What every run imports: torch, Lightning, the CLI and seqzoo's data and task packages (pandas,
# scikit-learn), and torch's TensorBoard writer, which jsonargparse imports resolving the
# Trainer's logger types. Nothing here runs a model or starts a Python thread; the native thread
# pools these imports start (OpenBLAS, OpenMP, jemalloc's) are rebuilt in a forked child, as in
# the DataLoader's forked workers, and CUDA is checked untouched before the first fork.
_PRELOAD = ("torch", "lightning.pytorch", "seqzoo.lightning_cli", "seqzoo.backbones.base", "seqzoo.datasets",
            "seqzoo.domains", "seqzoo.checkpointing", "seqzoo.runs", "torch.utils.tensorboard")


def serve() -> dict | None:
    """The run server: import what every run imports, then for each request line on stdin fork
    a child that becomes that run. Answers ``started <pid>`` and then the run's exit code on
    stdout. Returns the run's spec in the child, None in the server once stdin closes."""
    import gc
    import importlib
    import signal

    # an import that asks whether there is a GPU must not initialise CUDA here (NVML answers)
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    for module in _PRELOAD:  # the imports a run would pay: the reason for the server
        try:
            importlib.import_module(module)
        except ImportError:  # an optional package: the run imports (or misses) it itself
            pass
    if cuda_poisons_fork():
        print("CUDA was initialised while importing: a forked run could not use it", file=sys.stderr)
        return None  # not ready: compare starts fresh processes

    # Ctrl-C reaches the whole process group: the run shuts down and compare decides; the
    # server only ends when its input closes. A run gets the disposition the server was
    # started with (a fresh process would: ignored in a background job, else KeyboardInterrupt).
    started_with = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()  # a child's garbage collections leave the server's objects (and their pages) alone
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else the server prints goes to its log
    print("ready", file=replies)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            replies.close()
            signal.signal(signal.SIGINT, started_with)
            return _become_run(request)
        try:
            print("started", pid, file=replies)
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status), file=replies)
        except BrokenPipeError:  # compare is gone
            break
    return None


def cuda_poisons_fork() -> bool:
    """Whether a child forked now could not use CUDA (torch refuses once the parent initialised
    it: even ``torch.cuda.is_available()`` does, without NVML). Asked of a throwaway child."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda._is_compiled():
        return False
    pid = os.fork()
    if pid == 0:
        os._exit(1 if torch.cuda._is_in_bad_fork() else 0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0


def _become_run(request: dict) -> dict:
    """In the forked child: the process ``python -m seqzoo.compare_worker <spec>`` would be."""
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((null, 0), (log, 1), (log, 2)):
        os.dup2(fd, target)
    os.close(null)
    os.close(log)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    spec = request["spec"]
    sys.argv[1:] = [json.dumps(spec)]  # what Lightning's DDP launcher re-runs for the other ranks
    return spec


def _run_forked(spec: dict) -> None:
    """Run, then end the forked child as the interpreter ends a process (exit code, traceback,
    atexit handlers, flushed output) but without tearing its modules down: that would touch,
    and so copy, every page it shares with the server (~2 s a run). multiprocessing ends its
    forked children the same way."""
    import atexit
    import signal
    import traceback

    code, interrupted = 0, False
    try:
        run_worker(spec)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if interrupted:  # as Python does: end by the signal, so the exit code says so
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        job = serve()
        if job is not None:  # in a forked child
            _run_forked(job)
    else:
        import gc

        run_worker(json.loads(sys.argv[1]))
        gc.freeze()  # as seqzoo.cli.console ends: no exit-time collections over torch's objects (~1.6 s)

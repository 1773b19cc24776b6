"""Compile gate: every Triton kernel variant the dispatchers can launch, compiled for real
GPUs on a machine without one, checked for compile errors, register spills and shared memory.

The Triton interpreter (how the kernel tests run on CPU) accepts code the compiler rejects
(a plain Python global read inside ``@triton.jit``) and cannot show spills or pipelining.
This gate compiles through the *real launch code*: a stand-in Triton driver whose target is
``GPUTarget("cuda", cc, 32)`` makes every ``kernel[grid](...)`` compile for sm_<cc>, and
``JITFunction.run`` is held to ``warmup=True``, so the kernel is compiled (PTX by Triton,
cubin by the wheel's ``ptxas``) and never launched. Inputs are ``meta`` tensors (shapes and
dtypes, no memory), and :func:`seqzoo.kernels.dispatch.compile_target` makes the dispatchers
take the Triton path and answer the stand-in GPU's multiprocessor count, so the host code
picks the tiles, chunking and segment counts it would pick on that GPU.

For every distinct compiled kernel, ``cuobjdump --dump-resource-usage`` (shipped in the
triton wheel) gives registers, STACK and LOCAL bytes (> 0 means spilled registers) and
static shared memory; Triton's metadata gives the dynamic shared memory, warps and stages;
the PTX shows whether tensor-core instructions (``mma`` / ``wgmma``) and ``cp.async`` (load
pipelining) are present. The gate fails on any compile error, any spill, or shared memory
above the architecture's per-block limit (sm_80: 163 KiB, sm_90 / sm_100: 227 KiB).

Contract for op packages (how a package joins the gate)
--------------------------------------------------------
Every package ``seqzoo/kernels/<op>/`` with a module ``variants.py`` is discovered. That
module defines ``variants() -> Iterable[Variant]``; each :class:`Variant` has a ``name``
(dtype, head size, flags, pass: e.g. ``"bf16 D=64 init+final fwd+bwd"``) and
``run(device)``, which builds inputs at the benchmark shapes of ``bench/`` on ``device``
(the gate passes ``torch.device("meta")``) and calls the package's *public dispatcher* with
``impl="triton"``: the forward, the backward (``torch.autograd.grad`` of the outputs used)
and the decoding step where it has a Triton kernel. Yield one variant per accepted dtype
(fp32, bf16, fp16, fp64 where the dispatcher takes it) and per flag combination (initial
state, final state, bias / D / z, ...); a variant's shapes matter only through the tiles
they select, and a kernel configuration shared by several variants compiles once. A flat
module (not a package) is not discovered.

Usage::

    python -m seqzoo.kernels.compile_gate                 # sm_80, sm_90; table; exit 1 on failure
    python -m seqzoo.kernels.compile_gate --markdown FILE # also the table as markdown
    python -m seqzoo.kernels.compile_gate --arch 90 --ops retention

Each architecture compiles in its own spawned process (``--workers``, default 2) with a fresh
Triton cache directory, so no stale cache entry can hide a failure, and without
``TRITON_INTERPRET``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import os
import pkgutil
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

LAST_CPU_SECONDS = 0.0
"""CPU seconds (workers and their ptxas runs) of the last :func:`run_gate`."""

ARCHS = (80, 90)
"""Compute capabilities the gate (and ``make test``) compiles by default: A100 (sm_80),
H100/H200 (sm_90). sm_100 (B200) is available with ``--arch 80,90,100``; it is reported,
not gated: at the last run the 16-bit retention output kernel at D = 128 spilled 40 B and
the fp64 prefix-attention backward 8 B there (docs/benchmarks.md)."""

SM_COUNT = {80: 108, 90: 132, 100: 148}
"""Multiprocessors of the reference GPU of each architecture (A100, H100 SXM, B200): the
dispatchers size their grids by it."""

SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024, 100: 227 * 1024}
"""Largest shared memory one block may use (bytes), per architecture."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way the public dispatcher can be called: ``run(device)`` makes the call(s)."""

    name: str
    run: Callable[[torch.device], object]


FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
"""The real dtypes the dispatchers accept, by the label variant names use."""


def head_state_variants(run: Callable[..., object]) -> Iterator[Variant]:
    """The attention-style grid (retention, prefix attention): every dtype x head dim 64 and
    128 x with/without initial and final state, forward + backward;
    ``run(dtype, head_dim, initial, final, device)``."""
    for label, dtype in FLOAT_DTYPES.items():
        for head_dim in (64, 128):
            for initial in (False, True):
                for final in (False, True):
                    flags = "+".join(f for f, on in (("init", initial), ("final", final)) if on) or "plain"
                    yield Variant(f"{label} D={head_dim} {flags} fwd+bwd",
                                  functools.partial(run, dtype, head_dim, initial, final))


@dataclasses.dataclass
class Row:
    """Resources of one compiled kernel on one architecture (or one variant's compile error)."""

    op: str
    kernel: str
    variant: str
    arch: int
    config: str = ""
    registers: int = 0
    stack: int = 0
    local: int = 0
    shared: int = 0
    warps: int = 0
    stages: int = 0
    mma: str = ""
    cp_async: bool = False
    n_variants: int = 1
    error: str = ""

    @property
    def spills(self) -> int:
        return self.stack + self.local

    def problems(self) -> list[str]:
        if self.error:
            return [f"compile error: {self.error}"]
        found = []
        if self.spills:
            found.append(f"spills (STACK {self.stack} B, LOCAL {self.local} B)")
        if self.shared > SHARED_LIMIT[self.arch]:
            found.append(f"shared memory {self.shared} B > {SHARED_LIMIT[self.arch]} B")
        return found


# ---------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------


def op_packages() -> list[str]:
    """Names of the kernel packages that declare variants (``seqzoo/kernels/<op>/variants.py``)."""
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)])
                  if m.ispkg and (here / m.name / "variants.py").is_file())


def variants_of(op: str) -> list[Variant]:
    module = importlib.import_module(f"seqzoo.kernels.{op}.variants")
    found = list(module.variants())
    names = [v.name for v in found]
    if len(set(names)) != len(names):
        raise ValueError(f"seqzoo.kernels.{op}.variants: variant names repeat: {sorted(names)}")
    return found


# ---------------------------------------------------------------------------------------
# compiling for one architecture (runs in its own process)
# ---------------------------------------------------------------------------------------


def _stand_in_driver(capability: int):
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase
    from triton.backends.nvidia.driver import ty_to_cpp

    class StandInDriver(DriverBase):
        """A CUDA target without a GPU: compiles for sm_<capability>; cannot launch."""

        @classmethod
        def is_active(cls):
            return False

        def map_python_to_cpp_type(self, ty):
            return ty_to_cpp(ty)

        def get_current_target(self):
            return GPUTarget("cuda", capability, 32)

        def get_active_torch_device(self):
            return torch.device("meta")

        def get_benchmarker(self):
            raise RuntimeError("the compile gate's stand-in driver cannot run kernels")

        def get_current_device(self):
            return capability  # one kernel cache per architecture

        def set_current_device(self, device):
            pass

        def get_current_stream(self, device=None):
            return 0

        def get_device_interface(self):
            return torch.cuda

    return StandInDriver()


@contextlib.contextmanager
def _compile_only(capability: int, launches: list):
    """Every Triton launch compiles for sm_<capability> and records (kernel name, compiled
    kernel, constexprs) in ``launches``; nothing runs."""
    import triton
    from triton.runtime.jit import JITFunction

    from seqzoo.kernels.dispatch import compile_target

    original = JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        kernel = original(self, *args, grid=grid, warmup=True, **kwargs)
        launches.append((self.fn.__name__, kernel, _config(self, args, kwargs)))
        return kernel

    triton.runtime.driver.set_active(_stand_in_driver(capability))  # stays: the gate runs in its own process
    JITFunction.run = run
    try:
        with compile_target(capability, SM_COUNT[capability]):
            yield
    finally:
        JITFunction.run = original


def _config(fn, args, kwargs) -> str:
    """The launch's constexpr values and options, e.g. ``BT=64 BK=64 num_warps=8``."""
    names = [p.name for p in fn.params]
    values = dict(zip(names, args)) | kwargs
    parts = []
    for p in fn.params:
        if p.is_constexpr and p.name in values:
            v = values[p.name]
            parts.append(f"{p.name}={getattr(v, 'name', v)}")
    parts += [f"{k}={kwargs[k]}" for k in ("num_warps", "num_stages") if k in kwargs]
    return " ".join(parts)


def _tools() -> tuple[str, str]:
    import triton

    bin_dir = Path(triton.__file__).resolve().parent / "backends" / "nvidia" / "bin"
    return str(bin_dir / "cuobjdump"), str(bin_dir / "ptxas")


def _resource_usage(cubin: bytes) -> dict[str, int]:
    cuobjdump, _ = _tools()
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if match is None:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{out}")
    return dict(zip(("registers", "stack", "shared", "local"), map(int, match.groups())))


def _tensor_core(ptx: str) -> str:
    kinds = [k for k, pattern in (("wgmma", r"\bwgmma\."), ("mma", r"\bmma\.sync\.")) if re.search(pattern, ptx)]
    return "+".join(kinds)


def compile_arch(capability: int, ops: list[str], only: str = "") -> list[Row]:
    """Run every variant of ``ops`` (whose name contains ``only``) with launches compiled for
    sm_<capability>; one row per distinct compiled kernel, and one per variant that failed."""
    rows: list[Row] = []
    by_kernel: dict[int, Row] = {}
    meta = torch.device("meta")
    for op in ops:
        for variant in variants_of(op):
            if only not in variant.name:
                continue
            launches: list = []
            try:
                with _compile_only(capability, launches):
                    variant.run(meta)
            except Exception as err:  # a compile error, reported per variant
                rows.append(Row(op, _failing_kernel(err), variant.name, capability, error=_short(err)))
                if os.environ.get("SEQZOO_GATE_VERBOSE"):
                    print(f"sm_{capability} {op} [{variant.name}]: {_short(err)}", file=sys.stderr, flush=True)
            for name, kernel, config in launches:
                row = by_kernel.get(id(kernel))
                if row is not None:
                    if variant.name not in row.variant.split(" | "):
                        row.n_variants += 1
                    continue
                usage = _resource_usage(kernel.asm["cubin"])
                ptx = kernel.asm["ptx"]
                row = Row(op, name, variant.name, capability, config=config, registers=usage["registers"],
                          stack=usage["stack"], local=usage["local"],
                          shared=max(usage["shared"], int(kernel.metadata.shared)),
                          warps=kernel.metadata.num_warps, stages=kernel.metadata.num_stages,
                          mma=_tensor_core(ptx), cp_async="cp.async" in ptx)
                by_kernel[id(kernel)] = row
                rows.append(row)
                if os.environ.get("SEQZOO_GATE_VERBOSE"):
                    print(f"sm_{capability} {op}.{name} [{variant.name}] {config}: regs {row.registers} spill "
                          f"{row.spills} shared {row.shared}", file=sys.stderr, flush=True)
    return rows


def _failing_kernel(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    frames = [f.name for f in tb if f.filename.startswith(str(Path(__file__).resolve().parent))]
    return frames[-1] if frames else "?"


def _short(err: BaseException) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text[:300]


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (ptxas), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _worker(capability: int, ops: list[str], only: str, cache_dir: str) -> tuple[list[Row], float]:
    """One architecture in a spawned process; returns its rows and the CPU seconds it used."""
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    start = _cpu_seconds()
    torch.set_num_threads(1)
    rows = compile_arch(capability, ops, only)
    return rows, _cpu_seconds() - start


@contextlib.contextmanager
def _environment_for_workers(cache_root: str) -> Iterator[None]:
    """Spawned workers inherit the environment: no interpreter, a fresh cache."""
    saved = {k: os.environ.get(k) for k in ("TRITON_INTERPRET", "TRITON_CACHE_DIR")}
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["TRITON_CACHE_DIR"] = cache_root
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def supported_archs(archs: Iterable[int] = ARCHS) -> list[int]:
    """The architectures the bundled ptxas can assemble for (sm_100 needs ``ptxas-blackwell``)."""
    _, ptxas = _tools()
    out = []
    for cc in archs:
        tool = ptxas + ("-blackwell" if cc >= 100 else "")
        if Path(tool).is_file():
            out.append(cc)
    return out


def run_gate(archs: Iterable[int] = ARCHS, ops: Iterable[str] | None = None, workers: int = 2,
             only: str = "") -> tuple[list[Row], float]:
    """Compile every variant (whose name contains ``only``) for every architecture; returns
    (rows, wall seconds). The CPU seconds of all workers (with ptxas) are in :data:`LAST_CPU_SECONDS`."""
    global LAST_CPU_SECONDS
    ops = op_packages() if ops is None else list(ops)
    archs = supported_archs(archs)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seqzoo-compile-gate-") as cache_root, \
            _environment_for_workers(cache_root):
        caches = {cc: os.path.join(cache_root, f"sm{cc}") for cc in archs}
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(archs))), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_worker, cc, ops, only, caches[cc]) for cc in archs]
            results = [f.result() for f in futures]
    rows = [row for found, _ in results for row in found]
    LAST_CPU_SECONDS = sum(cpu for _, cpu in results)
    return rows, time.perf_counter() - start


# ---------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------

COLUMNS = ("op", "kernel", "variant", "config", "arch", "regs", "spill B", "shared B", "warps", "stages",
           "tensor cores", "cp.async", "status")


def _cells(row: Row) -> list[str]:
    variant = row.variant + (f" (+{row.n_variants - 1})" if row.n_variants > 1 else "")
    status = "; ".join(row.problems()) or "ok"
    if row.error:
        return [row.op, row.kernel, variant, "", f"sm_{row.arch}", "", "", "", "", "", "", "", status]
    return [row.op, row.kernel, variant, row.config, f"sm_{row.arch}", str(row.registers), str(row.spills),
            str(row.shared), str(row.warps), str(row.stages), row.mma or "-", "yes" if row.cp_async else "-", status]


def sorted_rows(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.op, r.kernel, r.arch, r.config, r.variant))


def format_text(rows: list[Row]) -> str:
    table = [list(COLUMNS)] + [_cells(r) for r in sorted_rows(rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    widths[3] = min(widths[3], 60)
    return "\n".join("  ".join(c[:widths[i]].ljust(widths[i]) for i, c in enumerate(line)) for line in table)


def format_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in sorted_rows(rows):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |")
    return "\n".join(lines) + "\n"


def format_summary_markdown(rows: list[Row]) -> str:
    """One line per (op, kernel, architecture) over all its compiled configurations: the
    worst registers / spills / shared memory, the warps and stages used."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.op, r.kernel, r.arch), []).append(r)
    lines = ["| op | kernel | arch | configurations | max regs | max spill B | max shared B | warps | stages | "
             "tensor cores | cp.async | status |", "|" + "---|" * 12]
    for (op, kernel, arch), group in sorted(groups.items()):
        ok = [r for r in group if not r.error]
        problems = sum(len(r.problems()) for r in group)
        def values(attr):
            return "/".join(str(v) for v in sorted({getattr(r, attr) for r in ok}))
        mma = "/".join(sorted({r.mma or "-" for r in ok}))
        cp = "/".join(sorted({"yes" if r.cp_async else "-" for r in ok}))
        lines.append(f"| {op} | {kernel} | sm_{arch} | {len(ok)} | {max((r.registers for r in ok), default=0)} | "
                     f"{max((r.spills for r in ok), default=0)} | {max((r.shared for r in ok), default=0)} | "
                     f"{values('warps')} | {values('stages')} | {mma} | {cp} | "
                     f"{'ok' if not problems else f'{problems} problems'} |")
    return "\n".join(lines) + "\n"


def failures(rows: list[Row]) -> list[str]:
    return [f"{r.op}.{r.kernel} [{r.variant}] sm_{r.arch}: {p}" for r in rows for p in r.problems()]


def summary(rows: list[Row], seconds: float) -> str:
    ok = [r for r in rows if not r.error]
    archs = sorted({r.arch for r in rows})
    worst = max(ok, key=lambda r: r.registers, default=None)
    text = (f"{len(ok)} compiled kernels ({len({(r.op, r.kernel, r.config) for r in ok})} configurations) for "
            f"{', '.join(f'sm_{a}' for a in archs)} in {seconds:.0f} s wall, {LAST_CPU_SECONDS:.0f} s CPU; "
            f"{len(failures(rows))} problems")
    if worst is not None:
        text += f"; most registers: {worst.registers} ({worst.op}.{worst.kernel}, sm_{worst.arch})"
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=",".join(map(str, ARCHS)), help="compute capabilities, e.g. 80,90,100")
    p.add_argument("--ops", default="all", help=f"comma-separated op packages (default: all of {op_packages()})")
    p.add_argument("--workers", type=int, default=2, help="processes (one architecture each)")
    p.add_argument("--only", default="", help="only variants whose name contains this text, e.g. 'fp32 D=128'")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as markdown to FILE ('-': stdout)")
    p.add_argument("--summary", metavar="FILE", help="also write the per-kernel summary as markdown to FILE")
    args = p.parse_args(argv)
    ops = None if args.ops == "all" else [o.strip() for o in args.ops.split(",") if o.strip()]
    rows, seconds = run_gate([int(a) for a in args.arch.split(",")], ops, args.workers, args.only)
    print(format_text(rows))
    print(summary(rows, seconds))
    if args.markdown:
        md = format_markdown(rows)
        if args.markdown == "-":
            print(md)
        else:
            Path(args.markdown).write_text(md)
    if args.summary:
        Path(args.summary).write_text(format_summary_markdown(rows))
    problems = failures(rows)
    for line in problems:
        print("FAIL", line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

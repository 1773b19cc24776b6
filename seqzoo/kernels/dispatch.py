"""Shared by every kernel package: how a call picks Triton or the torch reference, the
accumulation dtype, the one Triton-import guard, and the stand-in device of the compile gate.

`impl="auto"` uses Triton when the tensors are on CUDA and Triton imports, else the
reference; `impl="triton"` on CPU runs the Triton kernel under the interpreter
(``TRITON_INTERPRET=1`` must be set before seqzoo is imported) and never silently
falls back; `impl="torch"` always uses the reference. Inside :func:`export_mode`
every kernel uses its torch path, so ``torch.export``/ONNX see plain torch ops.

Each op package (``seqzoo/kernels/<op>/``) imports its ``triton.py`` only on the Triton
path, after :func:`resolve_impl` has checked :func:`triton_available` (the one guard).
Inside :func:`compile_target` (used by :mod:`seqzoo.kernels.compile_gate`) ``impl="triton"``
launches on any tensors and :func:`sm_count` answers for the stand-in GPU, so the real
launch code picks the tiles it would pick on that GPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator

import torch

IMPLS = ("auto", "torch", "triton")

_EXPORT_MODE: contextvars.ContextVar[bool] = contextvars.ContextVar("seqzoo_export_mode", default=False)
_COMPILE_TARGET: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "seqzoo_compile_target", default=None)


def set_export_mode(enabled: bool) -> contextvars.Token:
    """Switch kernels to their torch path (True) or back (False). Returns a reset token."""
    return _EXPORT_MODE.set(bool(enabled))


@contextlib.contextmanager
def export_mode(enabled: bool = True) -> Iterator[None]:
    """Context in which every kernel dispatches to its pure-torch path."""
    token = set_export_mode(enabled)
    try:
        yield
    finally:
        _EXPORT_MODE.reset(token)


def is_export_mode() -> bool:
    return _EXPORT_MODE.get() or torch.compiler.is_exporting()


@contextlib.contextmanager
def compile_target(capability: int, n_sms: int) -> Iterator[None]:
    """Context of the compile gate: launches compile for compute capability ``capability``
    (e.g. 90) on a stand-in GPU with ``n_sms`` multiprocessors; nothing runs."""
    token = _COMPILE_TARGET.set((int(capability), int(n_sms)))
    try:
        yield
    finally:
        _COMPILE_TARGET.reset(token)


def device_capability(device: torch.device) -> int:
    """Compute capability as an int (80, 90, ...) of a CUDA device or of the compile gate's
    stand-in; 0 elsewhere (the interpreter)."""
    target = _COMPILE_TARGET.get()
    if target is not None:
        return target[0]
    if device.type != "cuda":
        return 0
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return impl


def resolve_impl(impl: str, *tensors: torch.Tensor | None, op: str = "kernel") -> str:
    """Return "triton" or "torch" for a call with these tensors."""
    check_impl(impl)
    if impl == "torch" or is_export_mode():
        return "torch"
    if impl == "triton" and _COMPILE_TARGET.get() is not None:
        return "triton"
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if impl == "auto":
        return "triton" if on_cuda and triton_available() else "torch"
    # impl == "triton": never fall back silently.
    if not triton_available():
        raise RuntimeError(f"{op}: impl='triton' was asked for but Triton does not import")
    if not on_cuda and not triton_interpreted():
        raise RuntimeError(
            f"{op}: impl='triton' on CPU tensors needs the Triton interpreter: set "
            "TRITON_INTERPRET=1 in the environment before importing seqzoo"
        )
    return "triton"


# ---------------------------------------------------------------------------------------
# small helpers shared by the kernel modules
# ---------------------------------------------------------------------------------------


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """States and sums accumulate in fp32 (fp64 for fp64 inputs); complex inputs in
    complex64 (complex128 for complex128)."""
    if dtype.is_complex:
        return torch.complex128 if dtype == torch.complex128 else torch.complex64
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision(dtype: torch.dtype) -> str | None:
    """``tl.dot``'s input precision. fp32 inputs: ``tf32`` (tensor cores; operands rounded to
    a 10-bit mantissa, relative error ~5e-4 per product, accumulation in fp32 -- the GPU tests
    allow 2e-3 of the largest value in fp32; ``tf32x3`` spilled 0.1-11 KB per thread on sm_80 /
    sm_90). fp64: full precision. 16-bit: the default (tensor cores, fp32 accumulation). The
    interpreter multiplies in full fp32, so the CPU tests keep their 1e-4."""
    return {torch.float32: "tf32", torch.float64: "ieee"}.get(dtype)


def dot_warps(dtype: torch.dtype) -> int:
    """Warps for the matmul (``tl.dot``) kernels: 8 for fp32 and fp64 (twice the bytes of
    16-bit operands), 4 for 16-bit inputs (checked by :mod:`seqzoo.kernels.compile_gate`)."""
    return 8 if dtype in (torch.float32, torch.float64) else 4


def chunk_for(T: int, chunk_size: int) -> int:
    """Eager calls shorter than a chunk use one chunk of exactly T (no padding); export keeps
    the fixed chunk so that the length stays symbolic."""
    return chunk_size if is_export_mode() else min(chunk_size, T)


def sm_count(device: torch.device, cpu_default: int) -> int:
    """Streaming multiprocessors of a CUDA device or of the compile gate's stand-in;
    ``cpu_default`` elsewhere (the interpreter)."""
    target = _COMPILE_TARGET.get()
    if target is not None:
        return target[1]
    if device.type != "cuda":
        return cpu_default
    return torch.cuda.get_device_properties(device).multi_processor_count

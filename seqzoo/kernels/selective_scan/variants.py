"""Every Triton variant the selective-scan dispatchers can launch, at the benchmark shape,
for the compile gate (:mod:`seqzoo.kernels.compile_gate`).

:func:`variants` yields the gate's ``Variant(name, run)``; ``run(device)`` calls the public
dispatcher (:func:`~seqzoo.kernels.selective_scan.selective_scan`, its backward through
``torch.autograd.grad``, or :func:`~seqzoo.kernels.selective_scan.selective_state_update`)
with ``impl="triton"`` at B = 4, E = 1536, N = 16, T = 4096 (bench/kernel_selective_scan.py's
shape, PEERS.md), so the gate compiles exactly what a user's call launches. Inputs are
``torch.empty`` on the given device (the gate passes ``meta``). :func:`compile_variants`
is the same list as ``(name, zero-argument call)`` on one device.

What decides the compiled code (every size and stride but the state-index strides of A,
B, C is a runtime argument, and so are the options D, Δ bias, initial state, final-state
gradient and saving checkpoints):

* the input dtype (float32, bfloat16, float16; float64, which tests use on a GPU);
* the z gate and the softplus on Δ (compile-time flags of every kernel);
* whether a block's channels span several B/C groups (per-lane atomic adds in the backward;
  a block holds 2 channels at N = 16, so groups of 3 channels).

So the list is every dtype x z x softplus, forward only and forward + backward (the
backward with and without the final state's gradient, the runtime options on in one and
off in the other), one grouped call whose blocks span groups, and the decoding step's
dtype x z x softplus.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator

import torch

BATCH, T, E, N = 4, 4096, 1536, 16
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
FLAGS = ("D", "z", "bias", "softplus", "h0")


def variants() -> Iterator[object]:
    """The compile gate's :class:`~seqzoo.kernels.compile_gate.Variant` per launch case."""
    from seqzoo.kernels.compile_gate import Variant

    for name, run in _cases():
        yield Variant(name, run)


def compile_variants(device: str | torch.device = "cpu") -> Iterator[tuple[str, Callable[[], object]]]:
    """``(variant name, zero-argument call of the public dispatcher with impl="triton")``."""
    for name, run in _cases():
        yield name, functools.partial(run, torch.device(device))


def _cases() -> Iterator[tuple[str, Callable[[torch.device], object]]]:
    for dtype_name, dtype in DTYPES.items():
        if dtype_name != "fp64":  # float64 scans take the torch path on a GPU (see selective_scan)
            yield from _scan_cases(dtype_name, dtype)
        for z, softplus in itertools.product((False, True), repeat=2):
            flags = dict(D=True, z=z, bias=True, softplus=softplus)
            label = "+".join(name for name, on in (("z", z), ("softplus", softplus)) if on) or "plain"
            yield f"step/{dtype_name}/{label}", functools.partial(_step, dtype, flags)


def _scan_cases(dtype_name: str, dtype: torch.dtype) -> Iterator[tuple[str, Callable[[torch.device], object]]]:
    for z, softplus in itertools.product((False, True), repeat=2):
        label = "+".join(name for name, on in (("z", z), ("softplus", softplus)) if on) or "plain"
        on = dict(D=True, z=z, bias=True, softplus=softplus, h0=True)
        off = dict(D=False, z=z, bias=False, softplus=softplus, h0=False)
        yield f"scan/{dtype_name}/{label}/forward", functools.partial(_scan, dtype, off, None, 1)
        yield f"scan/{dtype_name}/{label}+D+bias+h0/train", functools.partial(_scan, dtype, on, "y+final", 1)
        yield f"scan/{dtype_name}/{label}/train", functools.partial(_scan, dtype, off, "y", 1)
    all_on = dict.fromkeys(FLAGS, True)
    yield f"scan/{dtype_name}/all/train-groups-across-block", functools.partial(_scan, dtype, all_on, "y", E // 3)
    if dtype_name == "fp32":  # N = 64 (Mamba-2 sizes): a (channel, state) block spans two warps
        yield "scan/fp32/all/train-N64", functools.partial(_scan, dtype, all_on, "y+final", 1, n=64)


def _scan(dtype, flags, backward: str | None, groups: int, device: torch.device, n: int = N) -> object:
    """A scan call (N = ``n`` states); with ``backward`` ("y" or "y+final") also the gradient
    of those outputs."""
    from seqzoo.kernels.selective_scan import selective_scan

    train = backward is not None
    empty = lambda *shape, dt=dtype: torch.empty(*shape, dtype=dt, device=device, requires_grad=train)  # noqa: E731
    bc = (BATCH, T, n) if groups == 1 else (BATCH, T, groups, n)
    u, delta, z = empty(BATCH, T, E), empty(BATCH, T, E), empty(BATCH, T, E) if flags["z"] else None
    A, B, C = empty(E, n, dt=torch.float32), empty(*bc), empty(*bc)
    D = empty(E, dt=torch.float32) if flags["D"] else None
    bias = empty(E, dt=torch.float32) if flags["bias"] else None
    h0 = empty(BATCH, E, n, dt=torch.float32) if flags["h0"] else None
    with torch.set_grad_enabled(train):
        y, final = selective_scan(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=flags["softplus"],
                                  initial_state=h0, return_final_state=True, impl="triton")
        if train:
            outputs = [y, final] if backward == "y+final" else [y]
            torch.autograd.grad(outputs, [u], [torch.empty_like(o) for o in outputs])
    return y


def _step(dtype, flags, device: torch.device) -> object:
    """One decoding step, in place."""
    from seqzoo.kernels.selective_scan import selective_state_update

    empty = lambda *shape, dt=dtype: torch.empty(*shape, dtype=dt, device=device)  # noqa: E731
    return selective_state_update(
        empty(BATCH, E, N, dt=torch.float32), empty(BATCH, E), empty(BATCH, E), empty(E, N, dt=torch.float32),
        empty(BATCH, N), empty(BATCH, N), empty(E, dt=torch.float32) if flags["D"] else None,
        empty(BATCH, E) if flags["z"] else None, delta_bias=empty(E, dt=torch.float32) if flags["bias"] else None,
        delta_softplus=flags["softplus"], inplace=True, impl="triton")

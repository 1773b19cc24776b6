"""The compile gate: every Triton kernel variant the dispatchers can launch compiles for
sm_80, sm_90 (and sm_100 where the wheel's ptxas-blackwell is there) at the benchmark
shapes, without spills or too much shared memory; and the gate does catch a compile
error and a spill.

Runs without TRITON_INTERPRET in its own pytest process (``make test``); the gate's
workers are spawned with the interpreter off and a fresh Triton cache either way.
"""

from __future__ import annotations

import importlib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
import torch

from seqzoo.kernels import compile_gate
from seqzoo.kernels.dispatch import triton_available

pytestmark = pytest.mark.skipif(not triton_available(), reason="the compile gate needs Triton (with its ptxas)")

if triton_available():
    import triton
    import triton.language as tl

    SCALE = 2.0  # a plain global: the compiler must refuse to read it inside a kernel

    @triton.jit
    def _reads_a_plain_global(x_ptr):
        tl.store(x_ptr, tl.load(x_ptr) * SCALE)

    @triton.jit
    def _keeps_a_huge_tile_live(x_ptr, N: tl.constexpr):
        offs = tl.arange(0, N)
        x = tl.load(x_ptr + offs)
        tl.store(x_ptr + offs, x * tl.sum(x, axis=0))  # x stays live across the reduction


def _probe(capability: int):
    """In a spawned process: compile the two faulty kernels through the gate's launch hook."""
    import os

    os.environ.pop("TRITON_INTERPRET", None)
    launches: list = []
    x = torch.empty(16384, device="meta")
    with compile_gate._compile_only(capability, launches):
        try:
            _reads_a_plain_global[(1,)](x)
            error = ""
        except Exception as err:  # the compile error the gate reports
            error = f"{type(err).__name__}: {err}"
        _keeps_a_huge_tile_live[(1,)](x, N=16384, num_warps=1)
    return error, compile_gate._resource_usage(launches[-1][1].asm["cubin"])


@pytest.fixture(scope="module")
def gate():
    rows, seconds = compile_gate.run_gate()
    print()
    print(compile_gate.format_text(rows))
    print(compile_gate.summary(rows, seconds))
    return rows


def test_every_kernel_variant_compiles_without_spills(gate):
    assert compile_gate.failures(gate) == []


def test_every_op_package_and_architecture_is_covered(gate):
    ops = compile_gate.op_packages()
    assert {"retention", "prefix_attention", "linear_recurrence", "lif"} <= set(ops)
    archs = compile_gate.supported_archs()
    assert {80, 90} <= set(archs)
    for op in ops:
        for arch in archs:
            compiled = any(r.op == op and r.arch == arch and not r.error for r in gate)
            assert compiled, f"{op}: nothing compiled for sm_{arch}"


def test_variants_follow_the_contract():
    for op in compile_gate.op_packages():
        found = compile_gate.variants_of(op)
        assert found, f"{op}: no variants"
        assert all(isinstance(v, compile_gate.Variant) and v.name for v in found)
        assert importlib.import_module(f"seqzoo.kernels.{op}")  # the dispatcher's package imports


def test_the_gate_catches_a_plain_global_and_a_spill():
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        error, usage = pool.submit(_probe, 90).result()
    assert "SCALE" in error
    assert usage["stack"] + usage["local"] > 0, usage

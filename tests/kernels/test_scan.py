"""seqzoo.kernels.scan: the scan operator without torch's per-call dynamo compile -- the same
recurrence as a Python loop, eagerly and exported with a symbolic length, as torch's scan()."""

from __future__ import annotations

import pytest
import torch

import seqzoo.kernels.scan as scan_module
from seqzoo.kernels.scan import scan


def step(carry, x, w):
    """A two-leaf carry (an LSTM-like pair), a two-leaf input and a tensor read as a const."""
    h, c = carry
    a, b = x
    c = torch.tanh(w * c + a)
    h = torch.sigmoid(h * b) + c
    return (h, c), {"h": h.clone(), "sum": (h + c).sum(-1)}


def loop(init, xs, w):
    carry, ys = init, []
    for t in range(xs[0].shape[0]):
        carry, y = step(carry, (xs[0][t], xs[1][t]), w)
        ys.append(y)
    return carry, {k: torch.stack([y[k] for y in ys]) for k in ys[0]}


def inputs(T=7, B=3, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    init = (torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, D, generator=g, dtype=torch.float64))
    xs = (torch.randn(T, B, D, generator=g, dtype=torch.float64), torch.randn(T, B, D, generator=g, dtype=torch.float64))
    return init, xs, torch.randn(D, generator=g, dtype=torch.float64)


class Scanned(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, h, c, a, b):
        (h, c), ys = scan(step, (h, c), (a, b), (self.w,))
        return h, c, ys["h"], ys["sum"]


@pytest.fixture(params=["scan_op", "torch scan()"])
def path(request, monkeypatch):
    if request.param != "scan_op":  # a torch whose operator has another signature
        monkeypatch.setattr(scan_module, "_direct", lambda: False)
    return request.param


def test_eager_scan_is_the_loop(path):
    init, xs, w = inputs()
    (h, c), ys = scan(step, init, xs, (w,))
    (h_ref, c_ref), ys_ref = loop(init, xs, w)
    for got, want in ((h, h_ref), (c, c_ref), (ys["h"], ys_ref["h"]), (ys["sum"], ys_ref["sum"])):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_exported_with_a_symbolic_length_without_compiling_the_body(monkeypatch):
    import sys

    import torch._higher_order_ops.scan  # noqa: F401 -- the module (the package's `scan` is the function)

    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile was called on the scan body")

    monkeypatch.setattr(sys.modules["torch._higher_order_ops.scan"], "_maybe_compile_and_run_fn", no_compile)
    init, xs, w = inputs(T=7)
    model = Scanned(w)
    T, B = torch.export.Dim("T", min=2), torch.export.Dim("B")
    with torch.no_grad():
        program = torch.export.export(model, (*init, *xs), strict=False,
                                      dynamic_shapes=({0: B}, {0: B}, {0: T, 1: B}, {0: T, 1: B}))
    init, xs, w2 = inputs(T=11, B=2, seed=1)  # another length and batch, the same weights
    got = program.module()(*init, *xs)
    (h_ref, c_ref), ys_ref = loop(init, xs, model.w.detach())
    for g, want in zip(got, (h_ref, c_ref, ys_ref["h"], ys_ref["sum"])):
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


def test_a_carry_that_changes_shape_is_an_error():
    init, xs, w = inputs()
    with pytest.raises(ValueError, match="carry"):
        scan(lambda carry, x, w: ((carry[0],), x[0].clone()), init, xs, (w,))

"""Selective scan: Triton (interpreted on CPU) and the loop-free chunked path against the
sequential reference -- outputs, final states and the gradient of every input.

Shapes stay tiny on CPU (the interpreter runs ``tl.associative_scan`` element by element);
the ``gpu`` tests repeat the comparisons at real sizes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seqzoo.kernels.selective_scan as ss
from seqzoo.kernels import export_mode
from seqzoo.kernels.selective_scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
)

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(batch, T, E, N, *, groups=None, options=True, dtype=torch.float64, device="cpu", seed=0):
    """Inputs in a realistic range: Δ from softplus of ~N(-2, 1), A = -exp(A_log) with A_log ~ log(1..N)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype).to(device)

    bc = (batch, T, N) if groups is None else (batch, T, groups, N)
    A = -torch.exp(torch.log(torch.arange(1, N + 1, dtype=torch.float64)).repeat(E, 1)
                   + 0.1 * torch.randn(E, N, generator=g, dtype=torch.float64)).to(device)
    inputs = {
        "u": rand(batch, T, E),
        "delta": rand(batch, T, E, scale=1.0, shift=-2.0 if options else 0.0),
        "A": A if dtype == torch.float64 else A.float(),
        "B": rand(*bc),
        "C": rand(*bc),
        "D": rand(E) if options else None,
        "z": rand(batch, T, E) if options else None,
        "delta_bias": rand(E, scale=0.5) if options else None,
        "initial_state": rand(batch, E, N) if options else None,
    }
    if not options:  # no softplus: Δ must be positive by itself
        inputs["delta"] = F.softplus(inputs["delta"] - 2.0)
    return inputs


def run(fn, inputs, *, softplus, **kw):
    leaves = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    args = [leaves[k] for k in ("u", "delta", "A", "B", "C", "D", "z")]
    y, final = fn(*args, delta_bias=leaves["delta_bias"], delta_softplus=softplus,
                  initial_state=leaves["initial_state"], return_final_state=True, **kw)
    return leaves, y, final


def grads_of(leaves, y, final, seed=3):
    """Gradients of a random projection of both outputs: y and the final state."""
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y)
    dfinal = torch.randn(final.shape, generator=g, dtype=torch.float64).to(final)
    names = [k for k, v in leaves.items() if v is not None]
    loss = (y * dy).sum() + (final * dfinal).sum()
    return dict(zip(names, torch.autograd.grad(loss, [leaves[k] for k in names])))


def assert_same(fn, inputs, *, softplus=True, atol=1e-10, rtol=1e-8, **kw):
    ref_leaves, y_ref, h_ref = run(selective_scan_ref, inputs, softplus=softplus)
    leaves, y, h = run(fn, inputs, softplus=softplus, **kw)
    torch.testing.assert_close(y, y_ref, atol=atol, rtol=rtol, msg="outputs differ")
    torch.testing.assert_close(h, h_ref, atol=atol, rtol=rtol, msg="final states differ")
    want, got = grads_of(ref_leaves, y_ref, h_ref), grads_of(leaves, y, h)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=rtol, msg=f"gradient of {name} differs")
    return want


def triton(*args, **kw):
    return selective_scan(*args, impl="triton", **kw)


# ---------------------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------------------


def test_reference_is_the_recurrence_written_out():
    x = make_inputs(1, 5, 2, 3, options=False)
    y = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"])
    h = torch.zeros(2, 3, dtype=torch.float64)
    for t in range(5):
        dt, u = x["delta"][0, t], x["u"][0, t]
        h = torch.exp(dt[:, None] * x["A"]) * h + (dt * u)[:, None] * x["B"][0, t][None, :]
        torch.testing.assert_close(y[0, t], h @ x["C"][0, t])


def test_grouped_b_c_equal_per_channel_copies():
    x = make_inputs(2, 9, 6, 3, groups=3)
    y = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], delta_bias=x["delta_bias"],
                           delta_softplus=True, initial_state=x["initial_state"])
    for g in range(3):  # channels 2g, 2g+1 read group g: the same as an ungrouped call on them
        sl = slice(2 * g, 2 * g + 2)
        y_g = selective_scan_ref(x["u"][..., sl], x["delta"][..., sl], x["A"][sl], x["B"][:, :, g], x["C"][:, :, g],
                                 x["D"][sl], x["z"][..., sl], delta_bias=x["delta_bias"][sl], delta_softplus=True,
                                 initial_state=x["initial_state"][:, sl])
        torch.testing.assert_close(y[..., sl], y_g)


# ---------------------------------------------------------------------------------------
# loop-free chunked path == reference
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 15, 16, 63])
@pytest.mark.parametrize("chunk_size", [4, 16])
def test_chunked_matches_reference(T, chunk_size):
    assert_same(selective_scan_chunked, make_inputs(2, T, 5, 3), chunk_size=chunk_size)


def test_chunked_grouped_and_without_options():
    assert_same(selective_scan_chunked, make_inputs(2, 21, 6, 4, groups=2), chunk_size=8)
    assert_same(selective_scan_chunked, make_inputs(2, 21, 3, 2, options=False), softplus=False, chunk_size=8)


def test_chunked_is_stable_with_strong_decay():
    """Large Δ·|A| would overflow exp(-a_s) in a cumulative-product form; relative decays do not."""
    x = make_inputs(1, 40, 3, 4)
    x["delta"] = x["delta"] + 8.0  # Δ ≈ 6 per step: a_t reaches -1000s inside a chunk
    assert_same(selective_scan_chunked, x, chunk_size=16)


def test_export_and_compile_dispatch_to_the_chunked_path(monkeypatch):
    x = make_inputs(1, 6, 2, 2)
    calls = []
    original = ss.selective_scan_chunked
    monkeypatch.setattr(ss, "selective_scan_chunked", lambda *a, **k: calls.append(1) or original(*a, **k))
    args = [x[k] for k in ("u", "delta", "A", "B", "C")]
    eager = selective_scan(*args)
    assert not calls, "eager CPU calls run the reference"
    with export_mode():
        exported = selective_scan(*args)
    assert calls, "export mode must use the loop-free path"
    torch.testing.assert_close(exported, eager)


# ---------------------------------------------------------------------------------------
# Triton (under the interpreter on CPU) == reference
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch,T,E,N",
    [(2, 1, 4, 3), (2, 63, 5, 3), (1, 257, 2, 3), (1, 20, 3, 40)],
    ids=["T1", "T63-masked-channels", "T257-five-chunks", "N40-one-channel-per-block"],
)
def test_triton_matches_reference_every_gradient(batch, T, E, N):
    grads = assert_same(triton, make_inputs(batch, T, E, N))
    assert set(grads) == set(NAMES)


def test_triton_grouped_b_c():
    assert_same(triton, make_inputs(1, 40, 4, 2, groups=2))


def test_triton_without_optional_inputs():
    assert_same(triton, make_inputs(2, 20, 3, 2, options=False), softplus=False)


def test_triton_float32_accumulates_in_float32():
    x = make_inputs(2, 30, 4, 4, dtype=torch.float32)
    ref_leaves, y_ref, h_ref = run(selective_scan_ref, x, softplus=True)
    leaves, y, h = run(triton, x, softplus=True)
    assert y.dtype == torch.float32 and h.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-4)
    want, got = grads_of(ref_leaves, y_ref, h_ref), grads_of(leaves, y, h)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-3, msg=f"gradient of {name}")


def test_triton_half_precision_io_accumulates_in_float32():
    """fp16 inputs are read and y written in fp16 (half the bytes), the state in float32:
    within fp16 rounding of the float64 reference run on the same (rounded) inputs."""
    x = make_inputs(1, 20, 4, 2, dtype=torch.float16)
    wide = {k: (v.double() if v is not None else None) for k, v in x.items()}
    _, y_ref, h_ref = run(selective_scan_ref, wide, softplus=True)
    leaves, y, h = run(triton, x, softplus=True)
    assert y.dtype == torch.float16 and h.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(h.double(), h_ref, atol=1e-4, rtol=1e-4)
    grads = grads_of(leaves, y, h)
    assert all(g.dtype == leaves[k].dtype for k, g in grads.items())


@pytest.mark.parametrize("tuning", [dict(prefetch=0), dict(fwd_t=4, bwd_t=2), dict(bwd_e=2), dict(bwd_e=8)],
                         ids=["no-prefetch", "short-chunks", "narrow-backward", "wide-backward"])
def test_triton_other_block_settings_match_reference(tuning, monkeypatch):
    """The settings bench/scan_tuning.py compares (``TUNING``) compute the same scan: without
    the forward's prefetch, with chunks shorter than a segment's worth of the defaults, and
    with backward programs of other widths than the forward's (2 channels where the forward
    takes 8 at N = 3; 8 channels over 4 warps where it takes 2 at N = 16, the last program
    partly masked; groups that a program spans or splits)."""
    from seqzoo.kernels.selective_scan import triton_blocks

    monkeypatch.setattr(triton_blocks, "TUNING", tuning)
    assert_same(triton, make_inputs(2, 70, 5, 3))
    assert_same(triton, make_inputs(1, 40, 4, 2, groups=2), softplus=False)
    if "bwd_e" in tuning:
        assert_same(triton, make_inputs(1, 24, 12, 16))
        assert_same(triton, make_inputs(1, 20, 12, 16, groups=3))


def test_triton_reads_strided_views_and_an_expanded_gradient():
    """As Mamba's layer passes them: u a transposed view of channel-major storage, Δ, B and C
    slices of wider tensors (each with its own strides), z contiguous, and ∂y expanded from a
    sum (stride 0); gradients flow back into the storages."""
    x = make_inputs(2, 37, 5, 3)

    def outputs(fn, **kw):
        u_store = x["u"].transpose(1, 2).contiguous().requires_grad_()  # (B, E, T)
        d_store = torch.cat([x["delta"], x["u"]], dim=-1).requires_grad_()
        bc_store = torch.cat([x["B"], x["C"]], dim=-1).requires_grad_()
        z = x["z"].clone().requires_grad_()
        u, delta, B, C = u_store.transpose(1, 2), d_store[..., :5], bc_store[..., :3], bc_store[..., 3:]
        assert not (u.is_contiguous() or delta.is_contiguous() or B.is_contiguous())
        y, final = fn(u, delta, x["A"], B, C, x["D"], z, delta_bias=x["delta_bias"], delta_softplus=True,
                      initial_state=x["initial_state"], return_final_state=True, **kw)
        grads = torch.autograd.grad(y.sum() + final.sum(), [u_store, d_store, bc_store, z])
        return [y, final, *grads]

    for got, want in zip(outputs(triton), outputs(selective_scan_ref)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_triton_carried_state_equals_one_call():
    x = make_inputs(1, 48, 3, 2)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z")]
    kw = dict(delta_bias=x["delta_bias"], delta_softplus=True, return_final_state=True)
    y_full, h_full = triton(*args, initial_state=x["initial_state"], **kw)
    cut = 21

    def part(sl):
        return [a[:, sl] if a is not None and a.dim() == 3 else a for a in args]

    y1, h1 = triton(*part(slice(0, cut)), initial_state=x["initial_state"], **kw)
    y2, h2 = triton(*part(slice(cut, None)), initial_state=h1, **kw)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(h2, h_full, atol=1e-12, rtol=1e-10)


def test_chunked_calls_with_carried_state_equal_one_call():
    x = make_inputs(2, 37, 3, 2)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z")]
    kw = dict(delta_bias=x["delta_bias"], delta_softplus=True, return_final_state=True)
    for fn in (selective_scan_ref, selective_scan_chunked):
        y_full, h_full = fn(*args, initial_state=x["initial_state"], **kw)
        state, ys = x["initial_state"], []
        for lo, hi in ((0, 5), (5, 6), (6, 37)):
            part = [a[:, lo:hi] if a is not None and a.dim() == 3 else a for a in args]
            y, state = fn(*part, initial_state=state, **kw)
            ys.append(y)
        torch.testing.assert_close(torch.cat(ys, dim=1), y_full)
        torch.testing.assert_close(state, h_full)


# ---------------------------------------------------------------------------------------
# one step for decoding
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("groups", [None, 2])
def test_state_update_steps_equal_the_scan(impl, groups):
    x = make_inputs(2, 7, 4, 3, groups=groups)
    y_scan, h_scan = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                        delta_bias=x["delta_bias"], delta_softplus=True,
                                        initial_state=x["initial_state"], return_final_state=True)
    state = x["initial_state"].clone()
    for t in range(7):
        y_t, state = selective_state_update(state, x["u"][:, t], x["delta"][:, t], x["A"], x["B"][:, t],
                                            x["C"][:, t], x["D"], x["z"][:, t], delta_bias=x["delta_bias"],
                                            delta_softplus=True, impl=impl)
        torch.testing.assert_close(y_t, y_scan[:, t])
    torch.testing.assert_close(state, h_scan)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_state_update_in_place_keeps_one_buffer(impl):
    x = make_inputs(2, 5, 4, 3)
    state = x["initial_state"].clone()
    before, buffer = state.clone(), state.data_ptr()
    y_ref, h_ref = selective_state_update_ref(before, x["u"][:, 0], x["delta"][:, 0], x["A"], x["B"][:, 0],
                                              x["C"][:, 0], x["D"], delta_bias=x["delta_bias"], delta_softplus=True)
    y, new = selective_state_update(state, x["u"][:, 0], x["delta"][:, 0], x["A"], x["B"][:, 0], x["C"][:, 0],
                                    x["D"], delta_bias=x["delta_bias"], delta_softplus=True, inplace=True, impl=impl)
    assert new is state and state.data_ptr() == buffer, "in place: the state buffer is reused"
    torch.testing.assert_close(state, h_ref)
    torch.testing.assert_close(y, y_ref)
    y2, kept = selective_state_update(before, x["u"][:, 0], x["delta"][:, 0], x["A"], x["B"][:, 0], x["C"][:, 0],
                                      x["D"], delta_bias=x["delta_bias"], delta_softplus=True, impl=impl)
    assert kept.data_ptr() != before.data_ptr(), "out of place: the given state is left as it was"


def test_state_update_refuses_in_place_on_a_differentiated_state():
    x = make_inputs(1, 1, 2, 2)
    state = x["initial_state"].clone().requires_grad_()
    with pytest.raises(RuntimeError, match="inplace=False"):
        selective_state_update(state, x["u"][:, 0], x["delta"][:, 0], x["A"], x["B"][:, 0], x["C"][:, 0], inplace=True)


# ---------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(delta=torch.zeros(2, 5, 3)), "delta must have u's shape"),
        (dict(A=torch.zeros(3, 2)), r"A must be \(E, N\)"),
        (dict(B=torch.zeros(2, 5, 3)), "B and C must have the same shape"),
        (dict(B=torch.zeros(2, 5, 3, 2), C=torch.zeros(2, 5, 3, 2)), "number of B/C groups"),
        (dict(D=torch.zeros(3)), r"D must be \(E,\)"),
        (dict(initial_state=torch.zeros(2, 4, 3)), "initial_state must be"),
        (dict(u=torch.zeros(2, 0, 4), delta=torch.zeros(2, 0, 4), z=None), "at least one time step"),
        (dict(u=torch.zeros(2, 5, 4, dtype=torch.long)), "floating-point"),
    ],
)
def test_bad_arguments_are_named(change, message):
    args = dict(u=torch.zeros(2, 5, 4), delta=torch.zeros(2, 5, 4), A=torch.zeros(4, 2), B=torch.zeros(2, 5, 2),
                C=torch.zeros(2, 5, 2), D=torch.zeros(4), z=torch.zeros(2, 5, 4), initial_state=None)
    args.update(change)
    if "u" in change and args["u"].shape[1] == 0:
        args["B"], args["C"] = torch.zeros(2, 0, 2), torch.zeros(2, 0, 2)
    with pytest.raises((ValueError, TypeError), match=message):
        selective_scan(args.pop("u"), args.pop("delta"), args.pop("A"), args.pop("B"), args.pop("C"), **args)


# ---------------------------------------------------------------------------------------
# real sizes on a GPU
# ---------------------------------------------------------------------------------------


def assert_near_float64_reference(x, tol):
    """The Triton scan of ``x`` (fp32, bf16 or fp16 on the GPU: float64 takes the torch path
    there) against the float64 reference on the same values: output, final state and every
    gradient within ``tol`` of each tensor's largest value (at least 1)."""
    x64 = {k: (v.double() if v is not None else None) for k, v in x.items()}
    ref_leaves, y_ref, h_ref = run(selective_scan_ref, x64, softplus=True)
    leaves, y, h = run(triton, x, softplus=True)
    want, got = grads_of(ref_leaves, y_ref, h_ref), grads_of(leaves, y, h)
    assert set(got) == set(want)
    pairs = [("y", y, y_ref), ("final state", h, h_ref)] + [(f"gradient of {n}", got[n], want[n]) for n in want]
    for name, g, w in pairs:
        scale = w.abs().max().clamp(min=1.0).item()
        torch.testing.assert_close(g.double(), w, atol=tol * scale, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 2049, 8192])
@pytest.mark.parametrize("groups", [None, 4])
def test_gpu_triton_matches_reference(T, groups):
    assert_near_float64_reference(make_inputs(2, T, 256, 16, groups=groups, dtype=torch.float32, device="cuda"), 2e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 3e-2)])
def test_gpu_low_precision_inputs(dtype, tol):
    assert_near_float64_reference(make_inputs(4, 4096, 512, 16, dtype=dtype, device="cuda"), tol)


@pytest.mark.gpu
def test_gpu_carried_state_and_decoding():
    x = make_inputs(2, 4096, 256, 16, dtype=torch.float32, device="cuda")
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z")]
    kw = dict(delta_bias=x["delta_bias"], delta_softplus=True, return_final_state=True)
    y_full, h_full = triton(*args, initial_state=x["initial_state"], **kw)
    y1, h1 = triton(*[a[:, :1000] if a.dim() == 3 else a for a in args], initial_state=x["initial_state"], **kw)
    y2, h2 = triton(*[a[:, 1000:] if a.dim() == 3 else a for a in args], initial_state=h1, **kw)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h2, h_full, atol=1e-5, rtol=1e-5)
    state = h_full.clone()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for t in range(64):
        selective_state_update(state, x["u"][:, t], x["delta"][:, t], x["A"], x["B"][:, t], x["C"][:, t], x["D"],
                               x["z"][:, t], delta_bias=x["delta_bias"], delta_softplus=True, inplace=True)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before < 1 << 20, "decoding keeps no per-step tensors"


def test_float64_never_runs_the_triton_scan_on_a_gpu(monkeypatch):
    """float64 scans spill registers on sm_80/sm_90: on a GPU ``auto`` takes the torch path and
    ``impl="triton"`` is refused (the interpreter still runs them, for these tests)."""
    import seqzoo.kernels.selective_scan as scan

    monkeypatch.setattr(scan, "resolve_impl", lambda impl, *t, op="": "triton")
    monkeypatch.setattr(scan, "triton_interpreted", lambda: False)
    u64, u32 = torch.zeros(1, 2, 3, dtype=torch.float64), torch.zeros(1, 2, 3)
    assert scan._scan_impl("auto", u64) == "torch"
    assert scan._scan_impl("auto", u32) == "triton"
    with pytest.raises(RuntimeError, match="fp32, bf16 or fp16 on a GPU, got float64"):
        scan._scan_impl("triton", u64)

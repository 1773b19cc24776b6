"""S4 and S4D: kernels against independent computations, the HiPPO-LegS NPLR form, chunks
with carried state, the export path, optimiser groups, bad settings, and learning."""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.backbones.s4 import DiagonalSSM, NPLRSSM, hippo_legs_nplr
from seqzoo.kernels import export_mode


def form(causal: bool) -> dict:
    """The causal model, or the bidirectional variant (asked for by name)."""
    return {"causal": True} if causal else {"bidirectional": True}


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("directions", [1, 2])
@pytest.mark.parametrize("L", [1, 7, 64])
def test_s4_cauchy_kernel_equals_the_krylov_sequence(directions, L):
    """Generating function at the roots of unity + Woodbury + inverse FFT == C Ā^l B̄."""
    torch.manual_seed(0)
    ssm = NPLRSSM(3, 16, directions=directions, dt_min=1e-3, dt_max=1e-1).double()
    with torch.no_grad():  # move off the identical-per-channel init
        for p in ssm.parameters():
            p.add_(randn(*p.shape, seed=1) * 0.05)
    torch.testing.assert_close(ssm.kernel(L), ssm.export_kernel(L), atol=1e-10, rtol=1e-8)


def test_hippo_legs_nplr_is_similar_to_hippo_legs():
    """diag(Λ) - P P* in real coordinates has HiPPO-LegS's eigenvalues -1, ..., -N."""
    N = 12
    Lambda, P, B = hippo_legs_nplr(N)
    assert torch.allclose(Lambda.real, torch.full_like(Lambda.real, -0.5))
    ssm = NPLRSSM(1, N, directions=1, dt_min=1e-3, dt_max=1e-1).double()
    with torch.no_grad():
        ssm.log_A_real.copy_(torch.log(-Lambda.real)[None])
        ssm.A_imag.copy_(Lambda.imag[None])
        ssm.P.copy_(torch.view_as_real(P)[None])
    A, _ = ssm.continuous_real()
    eigenvalues = torch.linalg.eigvals(A[0])
    torch.testing.assert_close(eigenvalues.real.sort().values, -torch.arange(N, 0, -1, dtype=torch.float64), atol=1e-6, rtol=0)
    assert eigenvalues.imag.abs().max() < 1e-6


def test_s4d_kernel_is_the_zoh_vandermonde_product():
    torch.manual_seed(0)
    ssm = DiagonalSSM(4, 8, directions=1, init="lin", dt_min=1e-3, dt_max=1e-1).double()
    L = 20
    dt = torch.exp(ssm.log_dt)[:, None]
    A = torch.complex(-torch.exp(ssm.log_A_real), ssm.A_imag)
    C = torch.view_as_complex(ssm.C.detach().contiguous())[0]
    Cbar = C * (torch.exp(dt * A) - 1) / A
    powers = torch.exp(dt[..., None] * A[..., None] * torch.arange(L, dtype=torch.float64))
    want = 2 * torch.einsum("hn,hnl->hl", Cbar, powers).real
    torch.testing.assert_close(ssm.kernel(L)[0], want.detach())


@pytest.mark.parametrize("L,chunk", [(1, 4), (23, 5), (64, 64), (40, None)])
def test_chunked_vandermonde_equals_the_plain_formula_with_gradients(L, chunk):
    """The chunked kernel (backward by recomputation) against autograd through the plain
    formula: K and the gradients of ΔA and C̄ (two directions), chunk edges included."""
    from seqzoo.kernels.vandermonde import vandermonde_kernel_chunked, vandermonde_kernel_ref

    g = torch.Generator().manual_seed(0)
    H, N = 3, 4
    dta_re = -torch.rand(H, N, generator=g, dtype=torch.float64) * 0.3
    shapes = ((H, N), (2, H, N), (2, H, N))
    inputs = [dta_re, *(torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes)]
    upstream = torch.randn(2, H, L, generator=g, dtype=torch.float64)
    results = []
    for fn, kw in ((vandermonde_kernel_ref, {}), (vandermonde_kernel_chunked, dict(chunk=chunk))):
        leaves = [x.clone().requires_grad_() for x in inputs]
        K = fn(*leaves, L, **kw)
        results.append([K, *torch.autograd.grad((K * upstream).sum(), leaves)])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("L,chunk", [(2, 1), (30, 4), (64, None)])
def test_chunked_cauchy_equals_the_formula_with_gradients(L, chunk):
    """S4's chunked Cauchy kernel against autograd through the formula (complex128): r and
    the gradients of v, λ and Δ, under a loss using real and imaginary parts."""
    from seqzoo.layers import cauchy_kernel, cauchy_kernel_ref

    g = torch.Generator().manual_seed(0)
    H, N, K = 3, 4, L // 2 + 1

    def crandn(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64))

    v, upstream = crandn(2, 2, H, N), crandn(2, 2, H, K)
    lam = torch.complex(-torch.rand(H, N, generator=g, dtype=torch.float64) - 0.1,
                        3 * torch.randn(H, N, generator=g, dtype=torch.float64))
    dt = 0.01 + 0.1 * torch.rand(H, generator=g, dtype=torch.float64)
    k = torch.arange(K, dtype=torch.float64)
    omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / L)
    results = []
    for fn, kw in ((cauchy_kernel_ref, {}), (cauchy_kernel, dict(chunk=chunk))):
        leaves = [x.clone().requires_grad_() for x in (v, lam, dt)]
        r = fn(*leaves, omega, **kw)
        loss = (r * upstream).real.sum() + 0.01 * (r.abs() ** 2).sum()
        results.append([r, *torch.autograd.grad(loss, leaves)])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("name", ["DiagonalSSM", "NPLRSSM"])
def test_training_kernels_keep_no_length_sized_tensors_for_the_backward(name):
    """What autograd saves for the kernel's backward: (H, N)- and (H, L)-sized tensors, never
    an (H, N/2, L/2 + 1) table of powers or resolvents (8 x 8 x 257 here; before the chunked
    kernels the largest saved tensors were 32,768 and 16,448 values)."""
    import seqzoo.backbones.s4 as s4

    kw = dict(init="lin") if name == "DiagonalSSM" else {}
    H, modes, L, saved = 8, 8, 512, []
    ssm = getattr(s4, name)(H, 2 * modes, directions=1, dt_min=1e-3, dt_max=1e-1, **kw)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        ssm.kernel(L)
    assert saved and max(saved) < H * modes * (L // 2 + 1) // 2, max(saved)


@pytest.mark.parametrize("L", [1, 16])
def test_direct_convolution_equals_fft_convolution(L):
    from seqzoo.backbones.s4 import direct_convolution, fft_convolution

    u, K = randn(2, L, 3), randn(2, 3, L, seed=1)
    torch.testing.assert_close(direct_convolution(u, K[:1]), fft_convolution(u, K[:1]))
    torch.testing.assert_close(direct_convolution(u, K), fft_convolution(u, K))
    # causal part by hand: y_t = sum_{s<=t} K0[t-s] u_s; anti-causal: sum_{s>t} K1[s-t-1] u_s
    want = torch.zeros(2, L, 3, dtype=torch.float64)
    for t in range(L):
        for s_ in range(L):
            want[:, t] += K[0, :, t - s_] * u[:, s_] if s_ <= t else K[1, :, s_ - t - 1] * u[:, s_]
    torch.testing.assert_close(fft_convolution(u, K), want)


def test_s4d_initialisations():
    lin = DiagonalSSM(2, 8, directions=1, init="lin", dt_min=1e-3, dt_max=1e-1)
    real = DiagonalSSM(2, 8, directions=1, init="real", dt_min=1e-3, dt_max=1e-1)
    torch.testing.assert_close(-torch.exp(lin.log_A_real[0]), torch.full((4,), -0.5))
    torch.testing.assert_close(lin.A_imag[0], math.pi * torch.arange(4.0))
    torch.testing.assert_close(-torch.exp(real.log_A_real[0]), -torch.arange(1.0, 5.0))
    assert torch.all(real.A_imag == 0)
    dt = torch.exp(lin.log_dt)
    assert torch.all((dt >= 1e-3 - 1e-9) & (dt <= 1e-1 + 1e-9))


@pytest.mark.parametrize("name", ["s4d", "s4"])
def test_chunks_with_carried_state_equal_one_forward(name):
    torch.manual_seed(0)
    model = build_backbone(name, d_model=8, n_layers=2, causal=True, d_state=8).double().eval()
    x = randn(2, 23, 8)
    whole = model(x)
    state = model.init_state(2, dtype=torch.float64)
    parts = []
    for lo, hi in [(0, 9), (9, 10), (10, 23)]:
        y, state = model.forward_with_state(x[:, lo:hi], state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("causal", [True, False])
def test_export_path_equals_the_fft_path(causal):
    """Direct convolution with the materialised kernel (exportable) == FFT convolution.
    (S4's export kernel is the Krylov sequence, checked against its Cauchy kernel above.)"""
    torch.manual_seed(0)
    model = build_backbone("s4d", d_model=8, n_layers=2, **form(causal), d_state=8).double().eval()
    x = randn(2, 19, 8)
    with export_mode():
        exported = model(x)
    torch.testing.assert_close(exported, model(x), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name,ssm_names", [("s4d", {"log_dt", "log_A_real", "A_imag"}),
                                            ("s4", {"log_dt", "log_A_real", "A_imag", "P", "B"})])
def test_ssm_parameters_get_their_own_optimiser_group(name, ssm_names):
    from seqzoo.domains.forecasting import ForecastingTask

    model = build_backbone(name, d_model=8, n_layers=2, d_state=8)
    (group,) = model.param_groups()
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.0
    named = {id(p): n.rsplit(".", 1)[-1] for n, p in model.named_parameters()}
    assert {named[id(p)] for p in group["params"]} == ssm_names
    assert len(group["params"]) == 2 * len(ssm_names)
    task = ForecastingTask(model, n_channels=3, n_targets=3, lookback=16, horizon=4)
    optimizer = task.configure_optimizers()
    first = optimizer.param_groups[0]
    assert first["lr"] == 1e-3 and first["weight_decay"] == 0.0 and len(first["params"]) == len(group["params"])


@pytest.mark.parametrize("kwargs,message", [
    (dict(d_state=7), "d_state must be an even integer"),
    (dict(dt_min=0.1, dt_max=0.01), "0 < dt_min < dt_max"),
    (dict(ssm_lr=0.0), "ssm_lr must be positive"),
])
def test_bad_settings_are_named(kwargs, message):
    for name in ("s4d", "s4"):
        with pytest.raises(ConfigError, match=message):
            build_backbone(name, d_model=8, n_layers=1, **kwargs)
    with pytest.raises(ConfigError, match="S4D-Lin"):
        build_backbone("s4d", d_model=8, n_layers=1, init="legs")


def moving_average_task(model, steps=150, window=8, seed=1):
    """Train read-in -> model -> read-out to output 3 x the mean of the last ``window`` inputs.

    A memoryless model explains 1/window of the variance (loss ~ 0.98): falling far below
    that needs memory. Returns the mean losses of the first and last ten steps.
    """
    torch.manual_seed(0)
    read_in, read_out = torch.nn.Linear(1, model.d_model), torch.nn.Linear(model.d_model, 1)
    params = [*model.parameters(), *read_in.parameters(), *read_out.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        u = torch.randn(16, 40, 1, generator=g)
        sums = torch.cumsum(torch.nn.functional.pad(u, (0, 0, window, 0)), dim=1)
        target = (sums[:, window:] - sums[:, :-window]) / window * 3
        loss = torch.nn.functional.mse_loss(read_out(model(read_in(u))), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[:10]) / 10, sum(losses[-10:]) / 10


def test_s4d_learns_a_moving_average():
    first, last = moving_average_task(build_backbone("s4d", d_model=16, n_layers=1, causal=True, d_state=16))
    assert last < 0.15 and last < 0.2 * first, (first, last)


@pytest.mark.parametrize("name", ["s4d", "s4"])
def test_decoding_reuses_the_discretisation_until_a_parameter_changes(name):
    """``step`` caches the discretisation with gradients off; an optimiser-style in-place
    update and ``load_state_dict`` must both be seen by the next step."""
    torch.manual_seed(0)
    model, fresh = (build_backbone(name, d_model=8, n_layers=1, causal=True).double() for _ in range(2))
    x = torch.randn(2, 8, dtype=torch.float64)

    def one_step(m):
        with torch.no_grad():
            return m.step(x, m.init_state(2, dtype=torch.float64))[0]

    one_step(model)  # fills the cache
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)  # in place, as an optimiser step
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(one_step(model), one_step(fresh), atol=0, rtol=0)
    fresh_out = one_step(fresh)
    fresh.load_state_dict(build_backbone(name, d_model=8, n_layers=1, causal=True).double().state_dict())
    assert not torch.equal(one_step(fresh), fresh_out), "load_state_dict must refresh the cached discretisation"

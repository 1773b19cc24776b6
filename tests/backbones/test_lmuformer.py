"""LMUFormer: the Legendre memory (ZOH matrices, convolution == recurrence, fixed), spiking
membranes step == forward in float64, BatchNorm statistics over valid positions, learning."""

from __future__ import annotations

import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.backbones.lmuformer import BatchNorm, LegendreMemory, LIFNeuron, legendre_state_space
from seqzoo.kernels.lif import lif_ref
from tests.backbones.test_s4 import moving_average_task


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_memory_matrices_are_the_zoh_of_the_legendre_system():
    A, B = legendre_state_space(6, theta=10.0)
    assert A[0, 0] == -0.1 and A[1, 0] == 0.3 and A[0, 1] == -0.1 and A[2, 0] == -0.5  # (2i+1)/θ · signs
    assert B.tolist() == pytest.approx([0.1, -0.3, 0.5, -0.7, 0.9, -1.1])
    memory = LegendreMemory(6, theta=10.0)
    A_bar = torch.linalg.matrix_exp(A)
    B_bar = torch.linalg.solve(A, (A_bar - torch.eye(6, dtype=torch.float64)) @ B)  # A^{-1}(e^A - I) B
    torch.testing.assert_close(memory.A_bar.double(), A_bar, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(memory.B_bar.double(), B_bar, atol=1e-6, rtol=1e-6)
    assert not any(True for _ in memory.parameters()), "the Legendre matrices are fixed buffers"


@pytest.mark.parametrize("L", [1, 40, 300])  # direct convolution up to 128, FFT beyond
def test_memory_convolution_equals_the_recurrence(L):
    memory = LegendreMemory(8, theta=32.0).double()
    u = randn(2, L)
    m = memory(u)
    state, outs = memory.init_state(2, dtype=torch.float64), []
    for t in range(L):
        m_t, state = memory.step(u[:, t], state)
        outs.append(m_t)
    torch.testing.assert_close(m, torch.stack(outs, dim=1), atol=1e-10, rtol=1e-8)


def calibrated(name, **kw):
    """A model whose BatchNorm running statistics come from one batch (so neurons fire in eval)."""
    torch.manual_seed(0)
    model = build_backbone(name, d_model=16, n_layers=2, causal=True, **kw).double()
    for module in model.modules():
        if isinstance(module, BatchNorm):
            module.momentum = None  # cumulative average: one batch sets the statistics
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(randn(4, 30, 16, seed=9))
    return model.eval()


def test_spiking_membranes_match_between_step_and_forward():
    """Spikes flip on tiny differences: check the currents into every LIF layer and the membranes
    they produce, in float64, between the full forward and the streaming steps."""
    model = calibrated("spiking_lmuformer")
    neurons = [m for m in model.modules() if isinstance(m, LIFNeuron)]
    currents: dict[int, list] = {id(n): [] for n in neurons}
    hooks = [n.register_forward_pre_hook(lambda mod, args: currents[id(mod)].append(args[0])) for n in neurons]
    x = randn(3, 17, 16, seed=2)
    y = model(x)
    full = {k: v[0] for k, v in currents.items()}
    for v in currents.values():
        v.clear()
    for hook in hooks:
        hook.remove()
    steps = {id(n): [] for n in neurons}
    originals = {id(n): n.step for n in neurons}
    for n in neurons:
        n.step = lambda x_t, state, n=n: (steps[id(n)].append(x_t), originals[id(n)](x_t, state))[1]
    state = model.init_state(3, dtype=torch.float64)
    outs = []
    with torch.no_grad():
        for t in range(17):
            y_t, state = model.step(x[:, t], state)
            outs.append(y_t)
    rates = []
    for n in neurons:
        stepped = torch.stack(steps[id(n)], dim=1)
        torch.testing.assert_close(stepped, full[id(n)], atol=1e-10, rtol=1e-10)
        _, _, membrane = lif_ref(full[id(n)], v_threshold=n.v_threshold, return_membrane=True)
        _, _, membrane_steps = lif_ref(stepped, v_threshold=n.v_threshold, return_membrane=True)
        torch.testing.assert_close(membrane_steps, membrane, atol=1e-10, rtol=1e-10)
        rates.append(float((membrane >= n.v_threshold).double().mean()))
    assert sum(r > 0 for r in rates) >= len(rates) // 2, f"too few layers fire to make the test meaningful: {rates}"
    torch.testing.assert_close(torch.stack(outs, dim=1), y, atol=1e-10, rtol=1e-10)


def test_batchnorm_statistics_skip_padded_positions():
    torch.manual_seed(0)
    norm = BatchNorm(3).double().train()
    x = randn(2, 6, 3)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    y = norm(x, mask)
    garbage = torch.where(mask[..., None], x, randn(2, 6, 3, seed=4) * 100)
    reference = BatchNorm(3).double().train()
    reference(garbage, mask)
    torch.testing.assert_close(norm(garbage, mask)[mask], y[mask])
    valid = x[mask]
    torch.testing.assert_close(norm.running_mean, 0.19 * valid.mean(0), atol=1e-12, rtol=0)  # two updates, momentum 0.1
    torch.testing.assert_close(reference.running_var, 0.9 + 0.1 * valid.var(0), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["lmuformer", "spiking_lmuformer"])
def test_train_mode_forward_ignores_padding(name):
    torch.manual_seed(0)
    model = build_backbone(name, d_model=8, n_layers=1).double().train()
    lengths = torch.tensor([12, 7])
    mask = torch.arange(12)[None] < lengths[:, None]
    x = randn(2, 12, 8)
    x2 = torch.where(mask[..., None], x, randn(2, 12, 8, seed=3) * 10)
    torch.testing.assert_close(model(x, mask)[mask], model(x2, mask)[mask])


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="theta"):
        build_backbone("lmuformer", d_model=8, n_layers=1, theta=0)
    with pytest.raises(ConfigError, match="memory_size"):
        build_backbone("spiking_lmuformer", d_model=8, n_layers=1, memory_size=0)
    with pytest.raises(ConfigError, match="embed_layers"):
        build_backbone("lmuformer", d_model=8, n_layers=1, embed_layers=0)


def test_memory_size_defaults_follow_the_paper():
    assert build_backbone("lmuformer", d_model=8, n_layers=1).memory_size == 8
    assert build_backbone("spiking_lmuformer", d_model=8, n_layers=1).memory_size == 16


def test_lmuformer_learns_a_moving_average():
    model = build_backbone("lmuformer", d_model=16, n_layers=1, causal=True, theta=16.0, embed_layers=1)
    first, last = moving_average_task(model)
    assert last < 0.3 and last < 0.35 * first, (first, last)


def test_memory_impulse_response_cache_follows_the_buffers():
    """The cached impulse response is dropped when Ā or B̄ change (in place or by loading)."""
    memory = LegendreMemory(8, theta=32.0).double()
    u = randn(2, 40)
    first = memory(u)
    torch.testing.assert_close(memory(u), first, atol=0, rtol=0)
    with torch.no_grad():
        memory.B_bar.mul_(2.0)
    torch.testing.assert_close(memory(u), 2 * first, atol=1e-12, rtol=1e-10)
    memory.load_state_dict(LegendreMemory(8, theta=32.0).double().state_dict())
    torch.testing.assert_close(memory(u), first, atol=0, rtol=0)


def test_spiking_paper_form_and_its_named_variants():
    """The paper's spiking model: BatchNorm γ = 1 before each LIF and no real-valued shortcut
    around the stem; ``bn_gain``/``stem_shortcut`` are variants, and compare labels them."""
    from seqzoo.backbones.base import variant_label
    paper = build_backbone("spiking_lmuformer", d_model=16, n_layers=1, causal=True)
    assert {float(v) for m in paper.modules() if isinstance(m, BatchNorm) for v in m.weight.detach()} == {1.0}
    assert not paper.blocks[0].shortcut
    variant = build_backbone("spiking_lmuformer", d_model=16, n_layers=1, causal=True, bn_gain=2.0, stem_shortcut=True)
    assert {float(v) for m in variant.modules() if isinstance(m, BatchNorm) for v in m.weight.detach()} == {1.0, 2.0}
    assert variant.blocks[0].shortcut

    # firing at initialisation (training-mode BatchNorm): the paper's form fires sparsely, the variant more
    def firing(model):
        rates = []
        hooks = [m.register_forward_hook(lambda mod, a, out: rates.append(float((out != 0).double().mean())))
                 for m in model.modules() if isinstance(m, LIFNeuron)]
        model.double().train()(randn(4, 40, 16, seed=3))
        for h in hooks:
            h.remove()
        return sum(rates) / len(rates)

    assert 0.0 < firing(paper) < firing(variant)
    assert variant_label("spiking_lmuformer", {"bn_gain": 2.0, "stem_shortcut": True}) == \
        "spiking_lmuformer (stem_shortcut, bn_gain=2)"
    assert variant_label("spiking_lmuformer", {"bn_gain": 1.0, "stem_shortcut": False}) == "spiking_lmuformer"

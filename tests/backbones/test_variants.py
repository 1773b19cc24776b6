"""A family's default is its paper's form; a non-causal variant is asked for by name
(``bidirectional=True``), never produced by ``causal=False``, and results label it."""

from __future__ import annotations

import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.backbones.base import variant_label

D = 16
PAPER_CAUSAL = ["mamba", "s4", "s4d", "vir", "tcnca"]  # mambamixer's token mixer: test_mambamixer.py


def future_changes_past(model, length=12, t0=6) -> bool:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, length, D, generator=g, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t0:] += 3 * torch.randn(2, length - t0, D, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return not torch.allclose(model(x)[:, :t0], model(x2)[:, :t0], atol=1e-12, rtol=0)


def build(name, **kw):
    torch.manual_seed(0)
    return build_backbone(name, d_model=D, n_layers=2, **kw).double().eval()


@pytest.mark.parametrize("name", PAPER_CAUSAL)
def test_default_build_is_the_papers_causal_model(name):
    for kw in ({}, {"causal": False}):  # compare hands causal=False to every family
        model = build(name, **kw)
        assert not model.bidirectional
        assert not future_changes_past(model), f"a default-built {name} ({kw}) reads the future"
    causal, plain = build(name, causal=True), build(name, causal=False)
    assert sum(p.numel() for p in causal.parameters()) == sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("name", PAPER_CAUSAL)
def test_bidirectional_variant_by_name_only(name):
    model = build(name, bidirectional=True)
    assert model.bidirectional and future_changes_past(model), f"{name} (bidirectional) must read later tokens"
    with pytest.raises(ConfigError, match="cannot be causal"):
        build(name, causal=True, bidirectional=True)


def test_default_mamba_is_causal_and_the_vim_variant_adds_a_scan_per_layer():
    default, vim = build("mamba"), build("mamba", bidirectional=True)
    assert not future_changes_past(default)
    n_default, n_vim = (sum(p.numel() for p in m.parameters()) for m in (default, vim))
    scan = sum(p.numel() for p in default.blocks[0].mixer.directions[0].parameters())
    assert n_vim == n_default + 2 * scan, "one more scan direction (conv, x/dt projections, A, D) per layer"


def test_results_label_variants():
    assert variant_label("mamba", {"d_model": 64}) == "mamba"
    assert variant_label("mamba", {"bidirectional": False}) == "mamba"
    assert variant_label("mamba", {"bidirectional": True, "d_model": 64}) == "mamba (bidirectional)"


def test_vir_retention_is_the_authors_form_and_retnet_msr_is_a_labelled_variant():
    """ViR's authors' code: decay-masked retention -> output projection, no swish gate and no
    group norm, decays 1 - exp(linspace(log 1/32, log 1/512, H)). RetNet's gate + GroupNorm
    is a variant with its own label."""
    import math

    from seqzoo.backbones.vir import decay_schedule

    paper = build("vir", n_heads=4)
    mixer = paper.blocks[0].mixer
    assert mixer.gate is None and mixer.head_norm is None
    expected = 1 - torch.exp(torch.linspace(math.log(1 / 32), math.log(1 / 512), 4, dtype=torch.float64))
    torch.testing.assert_close(decay_schedule(4).double(), expected, rtol=0, atol=1e-7)
    msr = build("vir", n_heads=4, gate=True, group_norm=True)
    assert msr.blocks[0].mixer.gate is not None and msr.blocks[0].mixer.head_norm is not None
    extra = sum(p.numel() for p in msr.parameters()) - sum(p.numel() for p in paper.parameters())
    assert extra == 2 * (D * D + D + 2 * D)  # per layer: gate Linear(D, D) + GroupNorm affine
    assert variant_label("vir", {}) == "vir"
    assert variant_label("vir", {"gate": True, "group_norm": True}) == "vir (gate, group_norm)"

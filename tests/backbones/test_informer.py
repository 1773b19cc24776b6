"""Informer: ProbSparse attention against full attention and its own definition, seeded
sampling, distilling, and the shrunk/restored encoder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqzoo import build_backbone
from seqzoo.backbones.informer import DistillingLayer, max_pool3_stride2
from seqzoo.layers import (
    CircularConv1d,
    MaskedBatchNorm1d,
    ProbSparseSelfAttention,
    prob_sparse_attention,
    probsparse_count,
    sample_key_index,
)

D, HEADS = 16, 4


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def attention_module(seed=0, **kw) -> ProbSparseSelfAttention:
    torch.manual_seed(seed)
    return ProbSparseSelfAttention(D, HEADS, **kw).double().eval()


def standard_attention(module, x, mask=None, causal=False):
    """softmax(Q K^T / sqrt(d)) V with the module's projections, written out."""
    B, L, _ = x.shape
    q, k, v = module.qkv(x).view(B, L, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // HEADS)
    allowed = torch.ones(L, L, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask[:, None, None, :] | torch.eye(L, dtype=torch.bool)
    out = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    return module.proj(out.transpose(1, 2).reshape(B, L, D))


@pytest.mark.parametrize("causal", [False, True])
def test_full_attention_switch_is_standard_attention(causal):
    module = attention_module(attention="full", causal=causal)
    x = randn(2, 21, D)
    torch.testing.assert_close(module(x), standard_attention(module, x, causal=causal))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_probsparse_with_every_query_active_equals_full_attention(causal, padded):
    L = 20
    assert probsparse_count(10, L) == L  # 10 * ceil(ln 20) = 30 >= L: u clipped to L
    prob, full = attention_module(factor=10, causal=causal), attention_module(attention="full", causal=causal)
    full.load_state_dict(prob.state_dict())
    x = randn(3, L, D)
    mask = torch.arange(L)[None] < torch.tensor([[20], [13], [5]]) if padded else None
    y_prob, y_full = prob(x, mask), full(x, mask)
    valid = mask if padded else torch.ones(3, L, dtype=torch.bool)
    torch.testing.assert_close(y_prob[valid], y_full[valid])


def test_informer_backbone_prob_equals_full_when_u_covers_the_length():
    torch.manual_seed(0)
    prob = build_backbone("informer", d_model=D, n_layers=3, factor=10).double().eval()
    full = build_backbone("informer", d_model=D, n_layers=3, attention="full").double().eval()
    full.load_state_dict(prob.state_dict())
    x = randn(2, 24, D)
    torch.testing.assert_close(prob(x), full(x))


def _active_and_lazy(q, k, v, mask, causal, factor, seed, measure="authors"):
    """Reference: the top-u queries by M(q) over the same sampled keys, written with loops.
    ``measure``: "authors" (max - sum / L_K, zhouhaoyi/Informer2020 ``_prob_QK``) or
    "mean" (max - mean over the sampled keys)."""
    B, H, L, E = q.shape
    n = probsparse_count(factor, L)
    lengths = mask.sum(1) if mask is not None else torch.full((B,), L)
    expected_active = torch.zeros(B, H, L, dtype=torch.bool)
    span = torch.stack([torch.minimum(torch.arange(L) + 1, lengths[b]) if causal else lengths[b].expand(L)
                        for b in range(B)])
    index = sample_key_index(seed, span, n)
    for b in range(B):
        for h in range(H):
            m = []
            for t in range(L):
                s = torch.stack([q[b, h, t] @ k[b, h, j] for j in index[b, t]]) / math.sqrt(E)
                score = s.max() - (s.sum() / lengths[b] if measure == "authors" else s.mean())
                m.append(score if t < lengths[b] else torch.tensor(float("-inf"), dtype=q.dtype))
            expected_active[b, h, torch.stack(m).topk(n).indices] = True
    return expected_active, n


@pytest.mark.parametrize("causal", [False, True])
def test_lazy_queries_get_mean_or_cumsum_of_values_and_active_ones_full_attention(causal):
    B, H, L, E = 2, 3, 40, 4
    q, k, v = randn(B, H, L, E, seed=1), randn(B, H, L, E, seed=2), randn(B, H, L, E, seed=3)
    out = prob_sparse_attention(q, k, v, factor=1, causal=causal, seed=7)
    active, n = _active_and_lazy(q, k, v, None, causal, factor=1, seed=7)
    assert n == math.ceil(math.log(L)) == 4
    lazy_value = v.cumsum(2) if causal else v.mean(2, keepdim=True).expand_as(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(E)
    if causal:
        scores = scores.masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), float("-inf"))
    full = torch.softmax(scores, -1) @ v
    torch.testing.assert_close(out[active], full[active])
    torch.testing.assert_close(out[~active], lazy_value[~active])
    assert (active.sum(-1) == n).all()


def test_sparsity_measure_is_the_authors_max_minus_sum_over_key_count():
    """The authors' M(q) = max - sum / L_K picks other queries than max - mean would."""
    B, H, L, E = 2, 3, 60, 4
    q, k, v = randn(B, H, L, E, seed=11), randn(B, H, L, E, seed=12), randn(B, H, L, E, seed=13)
    out = prob_sparse_attention(q, k, v, factor=1, seed=3)
    authors, _ = _active_and_lazy(q, k, v, None, False, factor=1, seed=3)
    by_mean, _ = _active_and_lazy(q, k, v, None, False, factor=1, seed=3, measure="mean")
    assert (authors != by_mean).any(), "the two measures must disagree here, or this test proves nothing"
    lazy = v.mean(2, keepdim=True).expand_as(v)
    torch.testing.assert_close(out[~authors], lazy[~authors])
    assert not torch.allclose(out[authors & ~by_mean], lazy[authors & ~by_mean])


def test_padding_mask_with_lazy_queries():
    """Lazy queries average valid values only; valid outputs ignore padded inputs."""
    B, H, L, E = 3, 2, 40, 4
    lengths = torch.tensor([40, 23, 9])
    mask = torch.arange(L)[None] < lengths[:, None]
    q, k, v = randn(B, H, L, E, seed=1), randn(B, H, L, E, seed=2), randn(B, H, L, E, seed=3)
    out = prob_sparse_attention(q, k, v, factor=1, mask=mask, seed=3)
    noisy = [torch.where(mask[:, None, :, None], t, randn(B, H, L, E, seed=9) * 100) for t in (q, k, v)]
    valid = mask[:, None].expand(-1, H, -1)
    torch.testing.assert_close(prob_sparse_attention(*noisy, factor=1, mask=mask, seed=3)[valid], out[valid])
    active, _ = _active_and_lazy(q, k, v, mask, False, factor=1, seed=3)
    for b, n_valid in enumerate(lengths.tolist()):
        lazy = ~active[b, :, :n_valid]
        mean_valid = v[b, :, :n_valid].mean(1, keepdim=True).expand(-1, n_valid, -1)
        torch.testing.assert_close(out[b, :, :n_valid][lazy], mean_valid[lazy])

    module = attention_module(factor=1)
    x = randn(3, L, D)
    x2 = torch.where(mask[..., None], x, randn(3, L, D, seed=5) * 10)
    torch.testing.assert_close(module(x, mask)[mask], module(x2, mask)[mask], atol=1e-12, rtol=1e-10)


def test_sampling_is_seeded_in_eval_and_random_in_training():
    module = attention_module(factor=1)
    x = randn(2, 60, D)
    torch.testing.assert_close(module(x), module(x), atol=0, rtol=0)
    other = attention_module(factor=1, sample_seed=1)
    other.load_state_dict(module.state_dict())
    assert not torch.allclose(module(x), other(x)), "the eval seed picks the sampled keys"
    module.train()
    torch.manual_seed(3)
    a = module(x)
    b = module(x)
    torch.manual_seed(3)
    torch.testing.assert_close(module(x), a, atol=0, rtol=0)
    assert not torch.allclose(a, b), "training draws new keys on every call"


def test_key_sampler_stays_in_range_and_spreads_evenly():
    L, n = 2000, 30
    span = torch.arange(1, L + 1)[None]  # causal: query t samples [0, t]
    index = sample_key_index(0, span, n)
    assert index.shape == (1, L, n) and index.min() >= 0 and (index < span[..., None]).all()
    full = sample_key_index(5, torch.full((1, L), 64), n).flatten()
    counts = torch.bincount(full, minlength=64).double()
    expected = full.numel() / 64
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 130, f"sampled keys far from uniform (chi2 {chi2:.0f}, 63 dof)"
    assert (index[0, 1:] != index[0, :-1]).any(1).float().mean() > 0.99, "queries sample different keys"


def test_sample_and_query_counts():
    assert [probsparse_count(5, n) for n in (1, 2, 3, 13, 96, 1000)] == [1, 2, 3, 13, 25, 35]


# ---------------------------------------------------------------------------------------
# distilling and the shrunk encoder
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 5, 8, 13])
def test_max_pool_matches_torch(length):
    x = randn(2, length, 3)
    torch.testing.assert_close(max_pool3_stride2(x), F.max_pool1d(x.transpose(1, 2), 3, 2, 1).transpose(1, 2))


def test_circular_conv_wraps_each_sequence_at_its_own_end():
    torch.manual_seed(0)
    conv = CircularConv1d(3, 5).double()
    x = randn(2, 11, 3)
    mask = torch.arange(11)[None] < torch.tensor([[11], [6]])
    y = conv(x, mask)
    torch.testing.assert_close(y[0], conv(x[:1])[0])
    torch.testing.assert_close(y[1, :6], conv(x[1:, :6])[0])
    reference = F.conv1d(F.pad(x.transpose(1, 2), (1, 1), mode="circular"), conv.weight, conv.bias).transpose(1, 2)
    torch.testing.assert_close(conv(x), reference)


def test_masked_batch_norm_uses_valid_steps_only():
    torch.manual_seed(0)
    norm, plain = MaskedBatchNorm1d(4).double(), torch.nn.BatchNorm1d(4).double()
    x = randn(3, 10, 4)
    mask = torch.arange(10)[None] < torch.tensor([[10], [4], [7]])
    out = norm(x, mask)
    torch.testing.assert_close(out[mask], plain(x[mask]))
    torch.testing.assert_close(norm.running_mean, plain.running_mean)
    torch.testing.assert_close(norm.running_var, plain.running_var)


def test_distilling_halves_the_length_and_its_mask():
    torch.manual_seed(0)
    layer = DistillingLayer(D).double().eval()
    x = randn(2, 13, D)
    mask = torch.arange(13)[None] < torch.tensor([[13], [6]])
    y, m = layer(x, mask)
    assert y.shape == (2, 7, D) and m.tolist()[1] == [True] * 3 + [False] * 4
    torch.testing.assert_close(y[1, :3], layer(x[1:, :6])[0][0])


def test_forward_restores_the_length_from_the_shrunk_encoding():
    torch.manual_seed(0)
    model = build_backbone("informer", d_model=D, n_layers=3).double().eval()
    x = randn(2, 29, D)
    shrunk, mask = model.encoder_memory(x)
    assert shrunk.shape == (2, 8, D) and mask is None  # 29 -> 15 -> 8
    y = model(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, shrunk[:, torch.arange(29) // 4])
    flat = build_backbone("informer", d_model=D, n_layers=3, distil=False)
    assert flat.encoder_memory(x.float())[0].shape == (2, 29, D)


def test_bad_options_are_clear_errors():
    from seqzoo import ConfigError

    with pytest.raises(ConfigError, match="attention must be 'prob'"):
        build_backbone("informer", d_model=D, n_layers=2, attention="sparse")
    with pytest.raises(ConfigError, match="factor"):
        build_backbone("informer", d_model=D, n_layers=2, factor=0)
    with pytest.raises(ConfigError, match="n_heads=3 must divide d_model=16"):
        build_backbone("informer", d_model=D, n_layers=2, n_heads=3)

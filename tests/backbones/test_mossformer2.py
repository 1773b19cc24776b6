"""MossFormer2: the gated attention unit's joint attention against a direct computation
(relu² inside groups + linear attention over every valid step), rotary positions are
relative, and the family trains as the separation task's mask network."""

from __future__ import annotations

import pytest
import torch

from seqzoo import build_backbone
from seqzoo.layers.gated_attention import GatedAttentionUnit
from seqzoo.layers.rotary import Rotary


def _direct(qq, lq, qk, lk, w, g, n_valid):
    """att(w)_i = Σ_{j in group(i), j valid} relu(qq_i·qk_j / g)² w_j + Σ_{j valid} (lq_i·lk_j) w_j / n."""
    L = w.shape[0]
    out = torch.zeros_like(w)
    for i in range(L):
        for j in range(n_valid):
            if i // g == j // g:
                out[i] += torch.relu(qq[i] @ qk[j] / g) ** 2 * w[j]
            out[i] += (lq[i] @ lk[j]) * w[j] / n_valid
    return out


@pytest.mark.parametrize("n_valid", [10, 7])
def test_joint_attention_equals_the_direct_sums(n_valid):
    torch.manual_seed(0)
    unit = GatedAttentionUnit(8, group_size=4, qk_dim=6).double()
    L = 10
    qq, lq, qk, lk = (torch.randn(1, L, 6, dtype=torch.float64) for _ in range(4))
    v, u = torch.randn(1, L, 16, dtype=torch.float64), torch.randn(1, L, 16, dtype=torch.float64)
    mask = (torch.arange(L) < n_valid)[None]
    att_v, att_u = unit.attend(qq, lq, qk, lk, v, u, mask if n_valid < L else None)
    for got, w in ((att_v, v), (att_u, u)):
        want = _direct(qq[0], lq[0], qk[0], lk[0], w[0], 4, n_valid)
        torch.testing.assert_close(got[0, :n_valid], want[:n_valid], atol=1e-10, rtol=1e-10)


def test_rotary_scores_depend_on_the_offset_only():
    rotary = Rotary(8)
    q, k = torch.randn(1, 8, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    seq_q, seq_k = q.expand(12, 8), k.expand(12, 8)
    rq, rk = rotary(seq_q), rotary(seq_k)
    scores = rq @ rk.T
    assert torch.allclose(scores[3, 1], scores[9, 7]) and torch.allclose(scores[5, 5], q[0] @ k[0])
    assert not torch.allclose(scores[3, 1], scores[3, 2])
    wide = torch.randn(2, 5, 12, dtype=torch.float64)  # features past ``dim`` pass through
    torch.testing.assert_close(rotary(wide)[..., 8:], wide[..., 8:])


def test_separation_with_mossformer2_as_the_mask_network_learns():
    """A few steps on one repeated synthetic batch raise the SI-SNR (the family trains end to end)."""
    from seqzoo.domains.separation import SeparationTask, pit_si_snr

    torch.manual_seed(0)
    backbone = build_backbone("mossformer2", d_model=16, n_layers=1, qk_dim=16, group_size=32, fsmn_inner_dim=16)
    task = SeparationTask(backbone, n_filters=16)
    t = torch.arange(800) / 8000
    sources = torch.stack([torch.sin(2 * torch.pi * 440 * t), torch.sign(torch.sin(2 * torch.pi * 97 * t)) * 0.5])
    batch = {"mix": sources.sum(0, keepdim=True).repeat(2, 1), "sources": sources[None].repeat(2, 1, 1)}
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        si_snr, _ = pit_si_snr(task(batch), batch["sources"])
        loss = -si_snr.mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 3.0, (first, loss.item())

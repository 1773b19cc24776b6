"""The gated FSMN block as the MossFormer2 authors build it: the dense memory's channel
layout (newest output first, consecutive channel blocks per group) and its InstanceNorm
over the valid steps."""

from __future__ import annotations

import torch

from seqzoo.layers.gated_fsmn import DilatedFSMN, MaskedInstanceNorm


def test_dense_memory_concatenates_newest_first_in_channel_blocks():
    torch.manual_seed(0)
    memory = DilatedFSMN(4, order=3, depth=2, causal=False).double()
    seen = {}
    memory.project.register_forward_hook(lambda m, a, out: seen.update(p=out))
    memory.acts[0].register_forward_hook(lambda m, a, out: seen.update(m1=out))
    memory.convs[1].register_forward_hook(lambda m, a, out: seen.update(conv_in=a[0]))
    memory(torch.randn(2, 9, 4, dtype=torch.float64), None)
    torch.testing.assert_close(seen["conv_in"], torch.cat([seen["m1"], seen["p"]], dim=-1))
    assert memory.convs[1].conv.weight.shape == (4, 2, 5) and memory.convs[1].conv.groups == 4


def test_instance_norm_over_valid_steps_only():
    torch.manual_seed(0)
    norm = MaskedInstanceNorm(3).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    reference = torch.nn.functional.instance_norm(x.transpose(1, 2), eps=1e-5).transpose(1, 2)
    torch.testing.assert_close(norm(x), reference)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    padded = norm(x, mask)
    torch.testing.assert_close(padded[1, :4], norm(x[1:, :4])[0])
    assert bool((padded[1, 4:] == 0).all())
    torch.testing.assert_close(padded[0], norm(x[:1])[0])

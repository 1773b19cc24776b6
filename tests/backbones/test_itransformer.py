"""iTransformer: the encoder equals PyTorch's post-LN TransformerEncoder on the same
weights, and mixes variate tokens without any order."""

from __future__ import annotations

import torch
from torch import nn

from seqzoo import build_backbone, get_backbone_class


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_equals_torch_post_ln_encoder_with_final_norm():
    torch.manual_seed(0)
    model = build_backbone("itransformer", d_model=16, n_layers=2, n_heads=4).double().eval()
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=16, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=False)
    reference = nn.TransformerEncoder(layer, num_layers=2, norm=nn.LayerNorm(16), enable_nested_tensor=False)
    reference = reference.double().eval()
    with torch.no_grad():
        for ours, theirs in zip(model.blocks, reference.layers):
            theirs.self_attn.in_proj_weight.copy_(ours.mixer.qkv.weight)
            theirs.self_attn.in_proj_bias.copy_(ours.mixer.qkv.bias)
            theirs.self_attn.out_proj.load_state_dict(ours.mixer.proj.state_dict())
            theirs.linear1.load_state_dict(ours.mlp.fc1.state_dict())
            theirs.linear2.load_state_dict(ours.mlp.fc2.state_dict())
            theirs.norm1.load_state_dict(ours.norm1.state_dict())
            theirs.norm2.load_state_dict(ours.norm2.state_dict())
        reference.norm.load_state_dict(model.norm_f.state_dict())
    x = randn(3, 9, 16)  # 9 variate tokens
    torch.testing.assert_close(model(x), reference(x))
    mask = torch.arange(9)[None] < torch.tensor([[9], [5], [2]])
    torch.testing.assert_close(model(x, mask)[mask], reference(x, src_key_padding_mask=~mask)[mask])


def test_variate_tokens_have_no_order():
    model = build_backbone("itransformer", d_model=16, n_layers=2).double().eval()
    x = randn(2, 7, 16)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(x[:, perm]), model(x)[:, perm])


def test_declares_variate_tokens_and_paper_defaults():
    cls = get_backbone_class("itransformer")
    assert cls.tokens == "variate" and not cls.causal and not cls.streaming
    model = build_backbone("itransformer", d_model=32, n_layers=2)
    assert model.blocks[0].mixer.n_heads == 8
    assert model.blocks[0].mlp.fc1.out_features == 32, "d_ff = d_model as in the paper's ETTh1 setting"

"""TCNCA: receptive field rule, chunk-local attention, streaming across chunk borders with
ring buffers, padding masks with small chunks; the ring-buffer temporal convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqzoo import ConfigError, build_backbone
from seqzoo.layers import TemporalConv
from seqzoo.backbones.tcnca import receptive_field
from seqzoo.kernels import export_mode
from tests.backbones.test_s4 import moving_average_task

SMALL = dict(chunk_size=4, kernel_size=2, dilation_base=2, tcn_depth=3)  # receptive field 8 > 4


def form(causal: bool) -> dict:
    """The causal model, or the bidirectional variant (asked for by name)."""
    return {"causal": True} if causal else {"bidirectional": True}


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_receptive_field_must_exceed_the_chunk():
    assert receptive_field(3, 2, 5) == 1 + 2 * 31
    assert receptive_field(2, 2, 3) == 8
    with pytest.raises(ConfigError, match=r"receptive field \(8 .*chunk_size=8"):
        build_backbone("tcnca", d_model=8, n_layers=1, chunk_size=8, kernel_size=2, tcn_depth=3)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_stays_inside_chunks(causal):
    torch.manual_seed(0)
    block = build_backbone("tcnca", d_model=8, n_layers=1, **form(causal), **SMALL).double().blocks[0]
    q, k, v = randn(2, 10, 8, seed=1), randn(2, 10, 8, seed=2), randn(2, 10, 16, seed=3)
    got = block._chunked_attention(q, k, v, None)
    bias = block.rel_bias.detach()
    want = torch.zeros_like(got)
    for start in range(0, 10, 4):  # chunks [0,4), [4,8), [8,10)
        stop = min(start + 4, 10)
        i = torch.arange(stop - start)
        scores = q[:, start:stop] @ k[:, start:stop].transpose(1, 2) / 8**0.5 + bias[i[:, None] - i[None, :] + 3]
        if causal:
            scores = scores.masked_fill(i[None, :] > i[:, None], float("-inf"))
        want[:, start:stop] = torch.softmax(scores, -1) @ v[:, start:stop]
    torch.testing.assert_close(got, want)


def test_step_matches_forward_across_chunk_borders():
    torch.manual_seed(0)
    model = build_backbone("tcnca", d_model=8, n_layers=2, causal=True, **SMALL).double().eval()
    x = randn(2, 23, 8)
    y = model(x)
    state = model.init_state(2, dtype=torch.float64)
    shapes = [s.shape for s in state]
    outs = []
    with torch.no_grad():
        for t in range(23):
            y_t, state = model.step(x[:, t], state)
            outs.append(y_t)
    assert [s.shape for s in state] == shapes
    torch.testing.assert_close(torch.stack(outs, dim=1), y, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_is_ignored_with_several_chunks(causal):
    torch.manual_seed(0)
    model = build_backbone("tcnca", d_model=8, n_layers=2, **form(causal), **SMALL).double().eval()
    lengths = torch.tensor([14, 9, 3])
    mask = torch.arange(14)[None] < lengths[:, None]
    x = randn(3, 14, 8)
    x2 = torch.where(mask[..., None], x, randn(3, 14, 8, seed=5) * 10)
    torch.testing.assert_close(model(x, mask)[mask], model(x2, mask)[mask], atol=1e-12, rtol=1e-10)


def test_information_crosses_chunk_borders():
    """Attention is chunk-local but the TCN is not: an input in chunk 0 reaches chunk 1."""
    torch.manual_seed(0)
    model = build_backbone("tcnca", d_model=8, n_layers=1, causal=True, **SMALL).double().eval()
    x = randn(1, 8, 8)
    x2 = x.clone()
    x2[:, 2] += randn(8, seed=1)  # not a constant shift: LayerNorm would remove it
    assert not torch.allclose(model(x)[:, 4:], model(x2)[:, 4:])


@pytest.mark.slow
def test_export_pads_to_whole_chunks_with_a_symbolic_length(tmp_path):
    from seqzoo.export import backbone_spec, export_onnx

    torch.manual_seed(0)
    model = build_backbone("tcnca", d_model=8, n_layers=1, causal=True, **SMALL).eval()
    with export_mode():  # 13 and 20 are not multiples of the chunk
        torch.testing.assert_close(model(torch.randn(2, 13, 8)).shape, torch.Size([2, 13, 8]))
    report = export_onnx(backbone_spec(model, length=13, generator=torch.Generator().manual_seed(0)),
                         tmp_path / "tcnca.onnx")
    assert report.max_abs_diff < 1e-4


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (4, 3), (1, 1)])
def test_ring_buffer_convolution_streams_like_the_full_convolution(kernel_size, dilation):
    torch.manual_seed(0)
    conv = TemporalConv(4, 6, kernel_size, causal=True, dilation=dilation).double()
    x = randn(2, 17, 4)
    y = conv(x)
    want = F.conv1d(F.pad(x.transpose(1, 2), ((kernel_size - 1) * dilation, 0)), conv.conv.weight, conv.conv.bias,
                    dilation=dilation).transpose(1, 2)
    torch.testing.assert_close(y, want)
    state = conv.init_state(2, dtype=torch.float64)
    outs = []
    for t in range(17):
        y_t, state = conv.step(x[:, t], state)
        outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, dim=1), y)
    if conv.history:
        buffer, position = state
        assert buffer.shape == (2, 4, (kernel_size - 1) * dilation) and position.dtype == torch.long


def test_centred_convolution_reads_both_sides_but_not_padding():
    conv = TemporalConv(1, 1, 3, causal=False, bias=False).double()
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor([[[1.0, 10.0, 100.0]]]))
    x = torch.arange(1.0, 6.0, dtype=torch.float64).view(1, 5, 1)
    mask = torch.tensor([[True, True, True, True, False]])
    y = conv(x, mask)[0, :, 0].tolist()
    assert y == [0 + 10 * 1 + 100 * 2, 1 + 20 + 300, 2 + 30 + 400, 3 + 40 + 0, 4 + 0 + 0][:4] + [y[4]]


def test_tcnca_learns_a_moving_average():
    model = build_backbone("tcnca", d_model=16, n_layers=1, causal=True, chunk_size=4, kernel_size=3, tcn_depth=3)
    first, last = moving_average_task(model)
    assert last < 0.3 and last < 0.35 * first, (first, last)

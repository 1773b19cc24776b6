"""MambaMixer's mixing blocks, shared by ``mambamixer``, ``tsm2`` and ``vim2``.

* :class:`MixerLayers` -- token and channel sublayers, alternating, each fed a learned
  weighted average of every earlier output (the paper's x_Token / x_Channel equations);
* :class:`WeightedAverage` -- Σ_i w_i h_i, starting one-hot on the latest output;
* :class:`AxisMixer` -- a sequence mixer applied along one axis of a larger tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AxisMixer", "MixerLayers", "WeightedAverage"]


class MixerLayers(nn.Module):
    """Token and channel sublayers, alternating, each fed a learned average of all earlier outputs."""

    def __init__(self, token: list[nn.Module], channel: list[nn.Module]) -> None:
        super().__init__()
        if len(token) != len(channel):
            raise ValueError("one channel sublayer per token sublayer")
        self.token = nn.ModuleList(token)
        self.channel = nn.ModuleList(channel)
        # history before layer ℓ's token sublayer: x and 2ℓ outputs; before its channel sublayer: one more
        self.token_inputs = nn.ModuleList(WeightedAverage(2 * i + 1) for i in range(len(token)))
        self.channel_inputs = nn.ModuleList(WeightedAverage(2 * i + 2) for i in range(len(token)))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        history = [x]
        for token, channel, token_in, channel_in in zip(self.token, self.channel, self.token_inputs,
                                                        self.channel_inputs):
            history.append(token(token_in(history), mask))
            history.append(channel(channel_in(history), mask))
        return history[-1]


class WeightedAverage(nn.Module):
    """Σ_i w_i h_i over a list of equally shaped tensors; w starts one-hot on the last."""

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        weight = torch.zeros(n_inputs)
        weight[-1] = 1.0
        self.weight = nn.Parameter(weight)

    def forward(self, history: list[Tensor]) -> Tensor:
        if len(history) != self.weight.numel():
            raise ValueError(f"weighted average over {self.weight.numel()} inputs got {len(history)}")
        out = history[0] * self.weight[0]
        for i in range(1, len(history)):
            out = out + history[i] * self.weight[i]
        return out


class AxisMixer(nn.Module):
    """A sequence mixer (B', S, F) -> (B', S, F) applied along one axis of a larger tensor: that
    axis is scanned, the last one holds the features, every other axis becomes batch.

    On (B, L, D) tokens, ``axis=1`` scans the L tokens with D features (the token mixer) and
    ``axis=2`` scans the D channels with the L tokens as features (MambaMixer's channel
    mixer); on a (B, C, L, D) grid, ``axis=2`` scans the L patches of each variate and
    ``axis=1`` the C variates of each patch, with D features.
    """

    def __init__(self, layer: nn.Module, axis: int) -> None:
        super().__init__()
        self.layer, self.axis = layer, axis

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() == 3 and self.axis == 2:  # channels scanned, tokens are the features
            return self.layer(x.transpose(1, 2)).transpose(1, 2)
        moved = x.movedim(self.axis, -2)
        if mask is not None and moved.dim() != 3:
            raise ValueError("a padding mask applies to (B, L, D) inputs only")
        y = self.layer(moved.reshape(-1, *moved.shape[-2:]), mask)
        return y.reshape(moved.shape).movedim(-2, self.axis)

"""Convolutions along time on (B, L, C) tokens.

* :class:`CircularConv1d` -- kernel 3 with circular padding (Informer's token embedding and
  distilling convolution), wrapping each padded sequence at its own last valid step;
* :class:`TemporalConv` -- causal (left zero padding) or centred convolution that streams
  with a ring buffer (TCNCA's TCN, the FSMN memory, LMUFormer's causal embedding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.layers.masking import mask_positions

__all__ = ["CircularConv1d", "TemporalConv"]

from seqzoo.layers.state import State


class CircularConv1d(nn.Conv1d):
    """Conv1d, kernel 3, circular padding, over (B, L, C) tokens (Informer's token embedding
    and distilling convolution).

    With a padding mask each sequence wraps around at its own last valid step,
    y_t = W_0 x_{(t-1) mod n} + W_1 x_t + W_2 x_{(t+1) mod n}, so padded steps never reach
    valid outputs. The weights are an ordinary ``nn.Conv1d``'s.

    Args:
        in_channels: input features C_in.
        out_channels: output features C_out.
        bias: add a learned bias.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, *, device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="circular", bias=bias,
                         device=device, dtype=dtype)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        L = x.shape[1]
        steps = torch.arange(L, device=x.device)
        n = mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1) valid length per sequence
        neighbours = [torch.remainder(steps + shift, n) for shift in (-1, 1)]  # (B, L) each
        prev, nxt = (torch.gather(x, 1, i[..., None].expand_as(x)) for i in neighbours)
        weight = self.weight.permute(0, 2, 1).reshape(self.out_channels, -1)  # taps (t-1, t, t+1)
        return F.linear(torch.cat([prev, x, nxt], dim=-1), weight, self.bias)


class TemporalConv(nn.Module):
    """Conv1d along time on (B, L, C_in) -> (B, L, C_out); causal (left zero padding) or centred.

    Streams (causal only) with a ring buffer of the last (K-1)·dilation inputs: state
    ``(buffer (B, C_in, (K-1)·dilation), write position (B,) int64)``, constant in size; the
    taps read the slots ``(pos - j·dilation) mod size``. Padded positions (``mask`` False)
    are zeroed first, so a centred kernel never reads them.

    Args:
        in_channels: input features C_in.
        out_channels: output features C_out.
        kernel_size: taps K.
        causal: left padding only (output t reads inputs <= t); else centred.
        dilation: spacing between taps.
        groups: as ``nn.Conv1d`` (``groups = C_in = C_out`` is depthwise).
        bias: add a learned bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        causal: bool,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups, bias=bias,
                              device=device, dtype=dtype)
        self.causal = causal
        self.history = (kernel_size - 1) * dilation
        lags = dilation * torch.arange(kernel_size - 1, 0, -1)  # tap i reads x_{t - (K-1-i)·dilation}
        self.register_buffer("lags", lags, persistent=False)

    @property
    def n_state(self) -> int:
        return 2 if self.history else 0

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = mask_positions(x, mask).transpose(1, 2)
        left = self.history if self.causal else self.history // 2
        return self.conv(F.pad(x, (left, self.history - left))).transpose(1, 2)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        if not self.history:
            return ()
        buffer = torch.zeros(batch_size, self.conv.in_channels, self.history, device=device, dtype=dtype)
        return buffer, torch.zeros(batch_size, dtype=torch.long, device=device)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        if not self.history:
            return self.conv(x_t[..., None])[..., 0], ()
        buffer, pos = state
        slots = torch.remainder(pos[:, None] - self.lags, self.history)  # (B, K-1)
        past = torch.gather(buffer, 2, slots[:, None, :].expand(-1, buffer.shape[1], -1))
        window = torch.cat([past, x_t[..., None]], dim=-1)
        y = F.conv1d(window, self.conv.weight, self.conv.bias, groups=self.conv.groups)[..., 0]
        write = torch.arange(self.history, device=pos.device)[None, None, :] == pos[:, None, None]
        buffer = torch.where(write, x_t[..., None], buffer)
        return y, (buffer, torch.remainder(pos + 1, self.history))

"""MossFormer2 (Zhao et al., ICASSP 2024): MossFormer's gated attention units interleaved
with the gated-FSMN recurrent module, as the authors' ``MossformerBlock_GFSMN``.

Layer i: x <- GatedAttentionUnit_i(x) (:mod:`seqzoo.layers.gated_attention`: token shift,
FFConvM projections, rotary positions, relu² attention inside groups of ``group_size``
steps plus linear attention over the whole sequence, triple gating), then
x <- GatedFSMNBlock_i(x) (:mod:`seqzoo.layers.gated_fsmn`: 1x1 projection to
``fsmn_inner_dim``, gated conv units, dense dilated FSMN memory with InstanceNorm); a final
LayerNorm. One rotary table is shared by the layers, as in the authors' code.

The authors' sizes: d_model 512, 24 layers, query/key width 128, expansion 4, group 256,
FSMN inner width 256, memory order 20, dropout 0.1. Non-causal (the linear attention and
the InstanceNorm read the whole utterance): it has no causal or streaming form.
"""

from __future__ import annotations

from torch import Tensor, nn

from seqzoo.backbones.base import register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.errors import ConfigError
from seqzoo.layers.gated_attention import GatedAttentionUnit
from seqzoo.layers.gated_fsmn import GatedFSMNBlock
from seqzoo.layers.rotary import Rotary


@register_backbone("mossformer2")
class MossFormer2(BlockStack):
    """MossFormer2: gated single-head attention units + gated FSMN recurrent blocks (non-causal)."""

    causal = False

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        group_size: int = 256,
        qk_dim: int = 128,
        expansion: float = 4.0,
        conv_kernel: int = 17,
        shift_tokens: bool = True,
        fsmn_inner_dim: int = 256,
        memory_order: int = 20,
        memory_depth: int = 2,
    ) -> None:
        """
        Args:
            group_size: steps per group of the quadratic (local) attention.
            qk_dim: width of the shared query/key projection.
            expansion: hidden width of the value/gate projection = expansion * d_model.
            conv_kernel: taps of the depthwise convolutions in every FFConvM unit.
            shift_tokens: shift half the channels one step before the attention unit.
            fsmn_inner_dim: inner width of each gated FSMN block (the authors' 256).
            memory_order: FSMN memory order (centred kernel of 2 * order - 1 taps).
            memory_depth: dilated layers in the FSMN memory.
        """
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        for key, value in (("group_size", group_size), ("qk_dim", qk_dim), ("fsmn_inner_dim", fsmn_inner_dim),
                           ("memory_order", memory_order), ("memory_depth", memory_depth)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"backbone 'mossformer2': {key} must be a positive integer, got {value!r}")
        if conv_kernel < 1 or conv_kernel % 2 == 0:
            raise ConfigError(f"backbone 'mossformer2': conv_kernel must be a positive odd number, got {conv_kernel}")
        rotary = Rotary(min(32, qk_dim - qk_dim % 2))
        self.build_blocks(
            lambda i: MossFormer2Layer(
                GatedAttentionUnit(d_model, group_size=group_size, qk_dim=qk_dim, expansion=expansion,
                                   conv_kernel=conv_kernel, dropout=dropout, shift_tokens=shift_tokens, rotary=rotary),
                GatedFSMNBlock(d_model, fsmn_inner_dim, memory_order=memory_order, memory_depth=memory_depth,
                               conv_kernel=conv_kernel, causal=False, dropout=dropout),
            ),
            final_norm="layer",
        )


class MossFormer2Layer(nn.Module):
    """A gated attention unit then a gated FSMN block (each residual inside)."""

    def __init__(self, attention: GatedAttentionUnit, recurrent: GatedFSMNBlock) -> None:
        super().__init__()
        self.attention, self.recurrent = attention, recurrent

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.recurrent(self.attention(x, mask), mask)

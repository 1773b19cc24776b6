"""MossFormer2's recurrent module on its own: gated FSMN blocks with dilated memory (Zhao et al. 2024).

MossFormer2 pairs its attention blocks (the ``mossformer2`` family) with an "RNN-free
recurrent" module: a feedforward sequential memory network (FSMN) whose memory is a
dense stack of dilated depthwise convolutions, wrapped in gated convolutional units
(:class:`seqzoo.layers.gated_fsmn.GatedFSMNBlock`, the authors' ``Gated_FSMN_Block``:
their channel grouping and, centred, their InstanceNorm). This backbone is ``n_layers``
such blocks and a final norm. ``causal=True`` makes every convolution look only
backwards (a memory of ``memory_order`` past steps instead of a symmetric window of
``2 * memory_order - 1``) and the memory's norm a per-step LayerNorm. All temporal
mixing is convolution, so export keeps a symbolic length.
"""

from __future__ import annotations

from seqzoo.backbones.base import register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.errors import ConfigError
from seqzoo.layers.gated_fsmn import (  # noqa: F401  (re-exported: their old home)
    ChannelPReLU,
    DepthwiseConv,
    DilatedFSMN,
    GatedConvUnit,
    GatedFSMNBlock,
)


@register_backbone("fsmn")
class GatedFSMN(BlockStack):
    """MossFormer2 recurrent module: gated FSMN blocks with dilated convolutional memory."""

    causal = True

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        inner_dim: int | None = None,
        memory_order: int = 20,
        memory_depth: int = 2,
        conv_kernel: int = 17,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        if memory_order < 1 or memory_depth < 1:
            raise ConfigError(f"fsmn: memory_order and memory_depth must be >= 1, got {memory_order}, {memory_depth}")
        if conv_kernel < 1 or (not causal and conv_kernel % 2 == 0):
            raise ConfigError(f"fsmn: conv_kernel must be a positive odd number when not causal, got {conv_kernel}")
        inner = inner_dim or d_model
        self.build_blocks(
            lambda i: GatedFSMNBlock(
                d_model, inner, memory_order=memory_order, memory_depth=memory_depth,
                conv_kernel=conv_kernel, causal=causal, dropout=dropout,
            ),
            final_norm="layer",
        )

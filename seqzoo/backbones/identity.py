"""``identity``: no sequence mixing at all -- the ablation row of every comparison.

``forward(x) = x``: the task's embedding and head run alone, so a compare row for
``identity`` shows what the sequence model adds. In the graph domain it is GSM's
pure-GNN baseline (the same local GNN stack without a global sequence model); in the
window domains it is "embedding + head" without mixing across time. It has no
parameters; the shared keywords are accepted with their usual meaning (``n_layers`` and
``dropout`` have nothing to apply to), and it is trivially causal.
"""

from __future__ import annotations

from torch import Tensor

from seqzoo.backbones.base import Backbone, register_backbone


@register_backbone("identity")
class Identity(Backbone):
    """No mixing: (B, L, d_model) -> the same tensor.

    Args:
        d_model: token width (kept for the contract; nothing is built from it).
        n_layers: accepted for the shared keywords; there are no layers.
        causal: trivially satisfied (output t is input t).
        dropout: accepted for the shared keywords; nothing to drop.
        impl: accepted for the shared keywords; there is no kernel.
    """

    causal = True

    def __init__(self, d_model: int, n_layers: int = 1, *, causal: bool = False, dropout: float = 0.0,
                 impl: str = "auto") -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x

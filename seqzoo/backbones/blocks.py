"""The backbone scaffolding most families share: :class:`BlockStack`, a :class:`Backbone`
made of a list of blocks (usually :class:`seqzoo.layers.ResidualBlock` around the family's
mixer) and a final norm, with ``forward``, ``init_state``, ``step`` and
``forward_with_state`` written once. The blocks, norms, MLPs and convolutions themselves
are in :mod:`seqzoo.layers`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, State
from seqzoo.layers import (
    MlpKind,
    NormKind,
    ResidualBlock,
    check_mask,
    make_norm,
    split_state,
    stochastic_depth,
)

__all__ = ["BlockStack"]


class BlockStack(Backbone):
    """A backbone made of ``self.blocks`` (modules with forward/init_state/step) and a final norm.

    Subclasses call :meth:`build_blocks` (or :meth:`build_residual_blocks`) in their
    ``__init__``. The stack's streaming state is the concatenation of its blocks' states.
    """

    def build_residual_blocks(
        self,
        make_mixer: Callable[[int], nn.Module],
        *,
        mlp: MlpKind = "gelu",
        mlp_ratio: float = 4.0,
        norm: NormKind = "layer",
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        dropout: float | None = None,
    ) -> None:
        """``n_layers`` :class:`ResidualBlock` s around ``make_mixer(i)``, drop-path rising
        linearly to ``drop_path`` (:func:`stochastic_depth`), final norm of kind ``norm``;
        ``dropout`` defaults to the backbone's. Each mixer is built before its block, so the
        parameters are drawn in the order mixer, then the block's own layers."""
        rates = stochastic_depth(drop_path, self.n_layers)
        dropout = self.dropout_p if dropout is None else dropout

        def make_block(i: int) -> ResidualBlock:
            mixer = make_mixer(i)
            return ResidualBlock(self.d_model, mixer, mlp=mlp, mlp_ratio=mlp_ratio, norm=norm, dropout=dropout,
                                 drop_path=rates[i], layer_scale=layer_scale)

        self.build_blocks(make_block, final_norm=norm)

    def build_blocks(
        self,
        make_block: Callable[[int], nn.Module],
        *,
        final_norm: NormKind | None = "layer",
        count: int | None = None,
    ) -> None:
        """``count`` blocks (default ``n_layers``; a family with a stem block adds one)."""
        self.blocks = nn.ModuleList(make_block(i) for i in range(self.n_layers if count is None else count))
        self.norm_f = make_norm(final_norm, self.d_model) if final_norm else nn.Identity()
        self._state_sizes: list[int] | None = None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_mask(x, mask)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm_f(x)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        self._check_can_step()
        states = [tuple(block.init_state(batch_size, device=device, dtype=dtype)) for block in self.blocks]
        self._state_sizes = [len(s) for s in states]
        return tuple(t for s in states for t in s)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        self._check_can_step()
        x_t, state = self._through_blocks("step", x_t, state)
        return self.norm_f(x_t), state

    def forward_with_state(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Process a chunk (B, L, D) of a long stream, continuing from ``state`` (as returned by
        ``init_state`` or an earlier call); chunk by chunk equals one ``forward`` (causal).
        Chunked through the blocks when every mixer has ``forward_with_state`` (S4/S4D),
        else one ``step`` per position (the contract's default)."""
        if not all(callable(getattr(getattr(b, "mixer", b), "forward_with_state", None)) for b in self.blocks):
            return super().forward_with_state(x, state)
        self._check_can_step()
        x, state = self._through_blocks("forward_with_state", x, state)
        return self.norm_f(x), state

    def _through_blocks(self, method: str, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Call ``block.<method>(x, its slice of state)`` for each block in turn."""
        if self._state_sizes is None:
            self.init_state(1, device=x.device, dtype=x.dtype)
        new_state: list[Tensor] = []
        for block, s in zip(self.blocks, split_state(state, self._state_sizes)):
            x, s = getattr(block, method)(x, s)
            new_state.extend(s)
        if sum(self._state_sizes) != len(state):
            raise ValueError(f"{type(self).name}: state has {len(state)} tensors, expected {sum(self._state_sizes)}")
        return x, tuple(new_state)

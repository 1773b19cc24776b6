"""What to export: :class:`ExportSpec` (a plain module, example inputs, free axes) and the
spec builders shared by backbones and tasks (bare backbone, one streaming step).

A low module (torch only): tasks declare their ``export_spec()`` with it without importing
the exporter (:mod:`seqzoo.export`), which rebuilds tasks from checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class ExportSpec:
    """What to export: a plain module, example inputs and which input axes are free.

    ``dynamic`` maps an input name to ``{axis: label}``, e.g. ``{"x": {0: "batch", 1:
    "length"}}``; ``check_inputs`` are the input tuples onnxruntime is checked on.
    """

    module: nn.Module
    example_inputs: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    check_inputs: list[tuple[Tensor, ...]] = field(default_factory=list)
    #: what the inputs and outputs mean, by name (shapes, units, order), for the model's metadata
    doc: dict[str, str] = field(default_factory=dict)
    #: a streaming graph's states: name, shape (axis labels), dtype and initial value
    states: list[dict] = field(default_factory=list)
    #: per last-axis scale of the first output when it is in the data's units (``ScaledIO``):
    #: parity is judged on the difference divided by it, i.e. in the units the model computes in
    output_scale: Tensor | None = None


class ScaledIO(nn.Module):
    """Raw units in, raw units out around a module that works in scaled units: the first input
    becomes ``(x - in_mean) / in_scale`` and the first output ``y * out_scale + out_mean`` (over
    the last axis); other inputs and outputs (time features, streaming states) pass through.
    Exported inside the ONNX graph, so a deployed model takes the user's numbers as they are."""

    def __init__(self, module: nn.Module, in_mean, in_scale, out_mean, out_scale) -> None:
        super().__init__()
        self.inner = module
        for name, value in (("in_mean", in_mean), ("in_scale", in_scale), ("out_mean", out_mean),
                            ("out_scale", out_scale)):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

    def forward(self, x: Tensor, *rest: Tensor):
        out = self.inner((x - self.in_mean) / self.in_scale, *rest)
        if isinstance(out, Tensor):
            return out * self.out_scale + self.out_mean
        return (out[0] * self.out_scale + self.out_mean, *out[1:])



# ---------------------------------------------------------------------------------------
# Backbone-level specs (used by the contract tests and by tasks' streaming export)
# ---------------------------------------------------------------------------------------


class StepModule(nn.Module):
    """``(x_t, *state) -> (y_t, *state_out)``: one streaming step as a plain module."""

    def __init__(self, step_fn: nn.Module) -> None:
        super().__init__()
        self.inner = step_fn

    def forward(self, x_t: Tensor, *state: Tensor):
        y, new_state = self.inner.step(x_t, tuple(state))
        return (y, *new_state)


def sequence_inputs(
    batch_sizes: Sequence[int], lengths: Sequence[int], make
) -> list[tuple[Tensor, ...]]:
    """Check inputs over two batch sizes and two lengths: (b0, l0), (b1, l1), (b0, l1)."""
    combos = [(batch_sizes[0], lengths[0]), (batch_sizes[-1], lengths[-1])]
    if len(lengths) > 1:
        combos.append((batch_sizes[0], lengths[-1]))
    return [make(b, n) for b, n in combos]


def backbone_spec(backbone, *, length: int = 12, generator: torch.Generator | None = None) -> ExportSpec:
    """Spec for a bare backbone ``x (B, L, d_model) -> (B, L, d_model)``."""
    d = backbone.d_model
    free_length = not type(backbone).export_fixed_length
    dtype = next(backbone.parameters(), torch.empty(0)).dtype  # parameter-free backbones: float32

    def make(b: int, n: int) -> tuple[Tensor, ...]:
        return (torch.randn(b, n, d, generator=generator, dtype=dtype),)

    dynamic = {"x": {0: "batch", 1: "length"} if free_length else {0: "batch"}}
    lengths = [length, length + 7] if free_length else [length]
    return ExportSpec(
        module=backbone,
        example_inputs=make(2, length),
        input_names=["x"],
        output_names=["y"],
        dynamic=dynamic,
        check_inputs=sequence_inputs([2, 3], lengths, make),
    )


def step_spec(stepper, d_in: int, *, in_dtype=None, generator: torch.Generator | None = None) -> ExportSpec:
    """Spec for a stateful one-step graph of anything with ``init_state``/``step``.

    Checked on a state reached after a few real steps, so parity covers a live state.
    """
    dtype = in_dtype or next(stepper.parameters()).dtype

    def make(b: int, _n: int = 0) -> tuple[Tensor, ...]:
        state = stepper.init_state(b, device=None, dtype=dtype)
        with torch.no_grad():
            for _ in range(3):
                _, state = stepper.step(torch.randn(b, d_in, generator=generator, dtype=dtype), state)
        return (torch.randn(b, d_in, generator=generator, dtype=dtype), *state)

    example = make(2)
    n_state = len(example) - 1
    names = ["x_t"] + [f"state_{i}" for i in range(n_state)]
    dynamic = {"x_t": {0: "batch"}}
    for name, axis in zip(names[1:], state_batch_axes(stepper, dtype)):
        if axis is not None:
            dynamic[name] = {axis: "batch"}
    return ExportSpec(
        module=StepModule(stepper),
        example_inputs=example,
        input_names=names,
        output_names=["y_t"] + [f"state_out_{i}" for i in range(n_state)],
        dynamic=dynamic,
        check_inputs=[make(2), make(3)],
        states=describe_states(stepper, names[1:], dtype),
    )


def describe_states(stepper, names: Sequence[str], dtype=None) -> list[dict]:
    """The state spec of a one-step graph: per state its name, shape with ``batch`` where the
    batch goes, dtype, and initial value (``init_state``: ``"zeros"`` or the value of batch 1)."""
    out = []
    axes = state_batch_axes(stepper, dtype)
    for name, tensor, axis in zip(names, stepper.init_state(1, dtype=dtype), axes):
        shape = ["batch" if i == axis else int(n) for i, n in enumerate(tensor.shape)]
        init = "zeros" if not torch.count_nonzero(tensor) else tensor.squeeze(axis).tolist() if axis is not None \
            else tensor.tolist()
        out.append({"name": name, "output": name.replace("state_", "state_out_"), "shape": shape,
                    "dtype": str(tensor.dtype).removeprefix("torch."), "initial": init})
    return out


def state_batch_axes(stepper, dtype=None) -> list[int | None]:
    """The batch axis of each state tensor (the axis that changes with the batch size)."""
    axes = []
    for a, b in zip(stepper.init_state(2, dtype=dtype), stepper.init_state(3, dtype=dtype)):
        diff = [i for i, (p, q) in enumerate(zip(a.shape, b.shape)) if p != q]
        axes.append(diff[0] if diff else None)
    return axes

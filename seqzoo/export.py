"""ONNX export with checks: ``torch.export`` -> ONNX (dynamo) -> onnxruntime parity.

The steps, each of which fails loudly:

1. ``torch.export`` with the requested axes dynamic (``Dim.AUTO``), kernels on their
   torch path (:func:`seqzoo.kernels.export_mode`);
2. every requested dynamic axis must still be symbolic in the exported program and
   in the ONNX graph's inputs -- a silently specialised length is an error;
3. ``torch.onnx.export(dynamo=True)``, the graph simplified by :func:`simplify_graph`;
4. onnxruntime on every check input (two batch sizes and, where the length is free,
   two lengths) against the eager module; the max absolute difference is reported
   and must be within ``atol``.

:func:`export_checkpoint` rebuilds a trained task from its run directory and exports it.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from seqzoo.errors import ExportError
from seqzoo.export_spec import (  # noqa: F401  (re-exported: the spec builders' old home)
    ExportSpec,
    StepModule,
    backbone_spec,
    sequence_inputs,
    state_batch_axes,
    step_spec,
)
from seqzoo.kernels.dispatch import export_mode


@dataclass
class ExportReport:
    path: Path
    max_abs_diff: float
    checked_shapes: list[list[tuple[int, ...]]]
    dynamic: dict[str, dict[int, str]]
    scaled: bool = False  # the difference was judged in the model's (scaled) units

    def summary(self) -> str:
        shapes = "; ".join(" ".join("x".join(map(str, s)) for s in inputs) for inputs in self.checked_shapes)
        return (
            f"exported {self.path} -- onnxruntime parity: max |diff| = {self.max_abs_diff:.3g}"
            f"{' (relative to the output scaler)' if self.scaled else ''} "
            f"over {len(self.checked_shapes)} input sets ({shapes})"
        )


def export_onnx(spec: ExportSpec, path: str | os.PathLike, *, atol: float = 1e-4,
                metadata: dict[str, str] | None = None) -> ExportReport:
    """Export ``spec.module`` to ONNX at ``path`` and check it with onnxruntime.

    The free axes get their labels as names in the graph (``batch``, ``time``...), and
    ``metadata`` (plus the spec's input/output docs and states) goes into ``metadata_props``."""
    with _fewer_collections():
        return _export_onnx(spec, Path(path), atol, metadata)


def _export_onnx(spec: ExportSpec, path: Path, atol: float, metadata: dict[str, str] | None) -> ExportReport:
    module = spec.module.eval()
    if len(spec.input_names) != len(spec.example_inputs):
        raise ValueError("ExportSpec: one input name per example input")
    program = _torch_export(spec, module)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with export_mode(), _quiet(), torch.no_grad(), _one_torchlib_registry():
            onnx_program = torch.onnx.export(
                program,
                args=(),
                dynamo=True,
                input_names=spec.input_names,
                output_names=spec.output_names,
                verbose=False,
                optimize=False,
            )
            simplify_graph(onnx_program.model, spec.input_names)
            onnx_program.save(str(tmp), external_data=False)
        _name_axes_and_describe(tmp, spec, metadata or {})
        _check_onnx_dims(tmp, spec)
        diff, shapes = _check_parity(tmp, spec, module, atol)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(path=path, max_abs_diff=diff, checked_shapes=shapes, dynamic=spec.dynamic,
                        scaled=spec.output_scale is not None)


def _torch_export(spec: ExportSpec, module: nn.Module) -> torch.export.ExportedProgram:
    from torch.export import Dim

    flat = [{axis: Dim.AUTO for axis in spec.dynamic.get(name, {})} or None for name in spec.input_names]
    dynamic_shapes = _nest_varargs(module, flat)
    # traced without autograd: the graph is for inference, and torch's scan operator (LIF, the
    # RNNs' and the selective scan's export path) would otherwise also trace its backward
    # (spiking LMUFormer's window graph: 7.4 -> 4.2 s, GRU's 2.4 -> 0.9 s on one CPU thread)
    with export_mode(), _quiet(), torch.no_grad():
        try:
            program = torch.export.export(module, tuple(spec.example_inputs), dynamic_shapes=dynamic_shapes)
        except Exception as err:  # re-raised with the module named
            raise ExportError(f"torch.export failed for {type(module).__name__}: {err}") from err
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user_inputs = [nodes[n] for n in program.graph_signature.user_inputs]
    for name, node in zip(spec.input_names, user_inputs):
        shape = node.meta["val"].shape
        for axis, label in spec.dynamic.get(name, {}).items():
            if not isinstance(shape[axis], torch.SymInt):
                raise ExportError(
                    f"input {name!r} axis {axis} ({label}) was specialised to {shape[axis]} by torch.export: "
                    f"{type(module).__name__} does not keep it free (a Python loop over it, or a shape "
                    f"baked into a parameter). Families that cannot avoid it declare export_fixed_length."
                )
    return program


def _nest_varargs(module: nn.Module, flat: list):
    """torch.export wants the specs of ``*args`` grouped as one tuple, like the inputs."""
    import inspect

    params = list(inspect.signature(module.forward).parameters.values())
    for i, p in enumerate(params):
        if p.kind is p.VAR_POSITIONAL:
            return (*flat[:i], tuple(flat[i:])) if len(flat) > i else tuple(flat)
    return tuple(flat)


def _name_axes_and_describe(path: Path, spec: ExportSpec, metadata: dict[str, str]) -> None:
    """Rename the exporter's symbols of the free axes (``s77``) to their labels everywhere in the
    graph, and write ``metadata_props``: ``metadata``, ``inputs``/``outputs`` (JSON: name -> what it
    is) and, for a streaming graph, ``states`` (JSON: name, shape, dtype, initial value)."""
    import json

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inputs = {i.name: i for i in graph.input}
    rename: dict[str, str] = {}
    for name, axes in spec.dynamic.items():
        if name in inputs:
            dims = inputs[name].type.tensor_type.shape.dim
            for axis, label in axes.items():
                if dims[axis].dim_param:
                    rename[dims[axis].dim_param] = label
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    props = dict(metadata)
    if spec.doc:
        props["inputs"] = json.dumps({n: spec.doc[n] for n in spec.input_names if n in spec.doc})
        props["outputs"] = json.dumps({n: spec.doc[n] for n in spec.output_names if n in spec.doc})
    if spec.states:
        props["states"] = json.dumps(spec.states)
    if props:
        del model.metadata_props[:]
        for key, value in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(model, str(path))


def _check_onnx_dims(path: Path, spec: ExportSpec) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name: i for i in graph.input}
    for name, axes in spec.dynamic.items():
        if name not in inputs:
            raise ExportError(f"ONNX graph has no input {name!r} (inputs: {sorted(inputs)})")
        dims = inputs[name].type.tensor_type.shape.dim
        for axis, label in axes.items():
            if not dims[axis].dim_param:
                raise ExportError(
                    f"ONNX input {name!r} axis {axis} ({label}) is fixed to {dims[axis].dim_value}; expected symbolic"
                )
            if dims[axis].dim_param != label:
                raise ExportError(f"ONNX input {name!r} axis {axis} is named {dims[axis].dim_param!r}, not {label!r}")


def _check_parity(path: Path, spec: ExportSpec, module: nn.Module, atol: float) -> tuple[float, list]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst, shapes = 0.0, []
    for inputs in spec.check_inputs or [spec.example_inputs]:
        feed = {name: _to_numpy(t) for name, t in zip(spec.input_names, inputs)}
        got = session.run(None, feed)
        with torch.no_grad():
            want = module(*inputs)
        want = [want] if isinstance(want, Tensor) else list(want)
        if len(got) != len(want):
            raise ExportError(f"ONNX graph returns {len(got)} outputs, the module {len(want)}")
        for k, (g, w) in enumerate(zip(got, want)):
            w = _to_numpy(w)
            if g.shape != w.shape:
                raise ExportError(f"onnxruntime output shape {g.shape} != torch {w.shape}")
            if w.size:
                diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
                if k == 0 and spec.output_scale is not None:  # data's units: judged in the model's units
                    diff = diff / _to_numpy(spec.output_scale).astype(np.float64)
                worst = max(worst, float(np.max(diff)))
        shapes.append([tuple(t.shape) for t in inputs])
    if not worst <= atol:
        raise ExportError(f"onnxruntime differs from torch by {worst:.3g} (> atol {atol:g}) for {path}")
    return worst, shapes


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def simplify_graph(model, input_names: list[str] | None = None) -> None:
    """Fold constants, then drop unused nodes, functions and opsets, deduplicate initializers and
    common subexpressions (an ``onnx_ir.Model``, in place).

    Instead of ``torch.onnx.export(optimize=True)``: that also runs onnxscript's pattern
    rewriter, whose matcher took 210 s of a 280 s export of the digits ViM2 model (11k nodes
    before folding) and made onnxruntime no faster than these passes (measured on one CPU
    thread: ViM2 32.3 vs 32.3 ms per batch of 2, weather transformer 0.85 vs 0.88 ms;
    onnxruntime fuses at session creation itself). These passes take seconds at most."""
    import onnx_ir as ir
    import onnx_ir.passes.common as passes
    import onnxscript.optimizer

    passes.InlinePass()(model)
    onnxscript.optimizer.fold_constants(model)
    for step in (passes.RemoveUnusedNodesPass(), passes.RemoveUnusedFunctionsPass(), passes.RemoveUnusedOpsetsPass(),
                 passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
                 passes.LiftSubgraphInitializersToMainGraphPass(), passes.DeduplicateInitializersPass(),
                 passes.CommonSubexpressionEliminationPass(), passes.RemoveUnusedNodesPass(),
                 passes.OutputFixPass(), passes.NameFixPass()):  # the last two as onnxscript's optimize_ir
        step(model)
    graph = model.graph
    for value, name in zip(list(graph.inputs), input_names or []):
        if value.name == name:
            continue
        # an input that is also an output (an identity model) took the output's name: pass it
        # through an Identity node that keeps the output's name, and give the input its own
        for i, output in enumerate(list(graph.outputs)):
            if output is value:
                node = ir.Node("", "Identity", inputs=[value], num_outputs=1)
                graph.append(node)
                out = node.outputs[0]
                out.name, out.shape, out.type = value.name, value.shape, value.type
                graph.outputs[i] = out
        value.name = name


_REGISTRIES: dict = {}
"""The exporter's registries of torchlib functions built so far, by the builder's arguments (the opset)."""
_REGISTRY_LOCK = threading.Lock()
"""Held while ``from_torchlib`` is swapped: exports from two threads take turns, and torch's own
classmethod is always what is put back."""


@contextlib.contextmanager
def _one_torchlib_registry():
    """One registry of torchlib functions per process and opset for every export.

    ``torch.onnx.export(dynamo=True)`` builds ``ONNXRegistry.from_torchlib()`` afresh on every
    call: it reads the source of ~1,500 torchlib functions again (0.3-1 s of CPU per export,
    up to 1/6 of a small model's export). Without a custom translation table (seqzoo passes none)
    the exporter only reads the registry, so the first one built is handed out again while
    this context is open. Where torch has no such classmethod, nothing changes."""
    try:
        from torch.onnx._internal.exporter._registration import ONNXRegistry
    except ImportError:  # another torch layout: the exporter builds its own
        yield
        return
    original = ONNXRegistry.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod):
        yield
        return
    build = original.__func__

    def from_torchlib(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _REGISTRIES:
            _REGISTRIES[key] = build(cls, *args, **kwargs)
        return _REGISTRIES[key]

    with _REGISTRY_LOCK:
        ONNXRegistry.from_torchlib = classmethod(from_torchlib)
        try:
            yield
        finally:
            ONNXRegistry.from_torchlib = original


EXPORT_GC_THRESHOLD = (20_000, 20, 100)
"""The garbage collector's thresholds while an export runs (Python's default: 700, 10, 10)."""
_GC_LOCK = threading.Lock()
_GC_DEPTH = [0, None]  # exports running, thresholds to put back when the last one ends


@contextlib.contextmanager
def _fewer_collections():
    """Collect garbage less often while an export traces.

    Tracing (``torch.export``, the exporter's decomposition pass: fake tensors, sympy shape
    expressions, FX nodes) allocates millions of container objects that mostly live until the
    export ends, so the default thresholds run a collection every 700 allocations and a full
    one several times per export, re-walking every live object of torch and Lightning each
    time. Measured on one CPU thread (ViM2, Mamba, Aaren and TCNCA exported in turn):
    collections took 13 % of the time with the defaults and 3 % with these thresholds. They
    are raised while any export runs (also from two threads) and put back after."""
    with _GC_LOCK:
        if _GC_DEPTH[0] == 0:
            _GC_DEPTH[1] = gc.get_threshold()
            gc.set_threshold(*EXPORT_GC_THRESHOLD)
        _GC_DEPTH[0] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_DEPTH[0] -= 1
            if _GC_DEPTH[0] == 0:
                gc.set_threshold(*_GC_DEPTH[1])


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints and warnings (errors still raise)."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------
# Trained checkpoints
# ---------------------------------------------------------------------------------------


def export_checkpoint(
    ckpt_path: str | os.PathLike, out: str | os.PathLike, *, streaming: bool = False, atol: float = 1e-4
) -> list[ExportReport]:
    """Rebuild the task of a seqzoo checkpoint, export it (and its one-step graph).

    Self-describing: each graph's ``metadata_props`` carry the seqzoo version, task, backbone,
    what every input and output is (shapes, units, column order), the data transform the model
    was trained with and, for the one-step graph, its states; the same goes into ``OUT.json``.
    A forecasting model with its training scaler takes and gives the data's units (the scaler
    is inside the graph)."""
    import json

    import seqzoo
    from seqzoo.trained import load

    task = load(ckpt_path)
    out = Path(out)
    if streaming:  # check before writing anything
        step_spec_ = task.export_step_spec()
    meta = {
        "seqzoo_version": seqzoo.__version__,
        "checkpoint": str(ckpt_path),
        "task": f"{type(task).__module__}.{type(task).__qualname__}",
        "backbone": type(task.backbone).name,
        "dims": task.seqzoo_dims,
        "transform": task.data_transform,
    }
    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    spec = task.export_spec()
    reports = [export_onnx(spec, out, atol=atol, metadata={**props, "graph": "window"})]
    specs = [spec]
    if streaming:
        reports.append(export_onnx(step_spec_, out.with_suffix(".step.onnx"), atol=atol,
                                   metadata={**props, "graph": "step"}))
        specs.append(step_spec_)
    meta["graphs"] = [
        {"path": str(r.path), "dynamic_axes": r.dynamic, "max_abs_diff": r.max_abs_diff, "inputs": s.input_names,
         "outputs": s.output_names, "doc": s.doc, **({"states": s.states} if s.states else {})}
        for r, s in zip(reports, specs)
    ]
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return reports


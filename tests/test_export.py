"""seqzoo.export's own machinery (every family and config is exported by the contract suite and
tests/domains/test_export_every_config.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqzoo import export as export_module
from seqzoo.export import ExportSpec, export_onnx

pytest.importorskip("onnxruntime")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, x):
        return torch.tanh(self.proj(x)).cumsum(1)


def spec(module: nn.Module) -> ExportSpec:
    g = torch.Generator().manual_seed(0)
    return ExportSpec(module=module, example_inputs=(torch.randn(2, 5, 4, generator=g),), input_names=["x"],
                      output_names=["y"], dynamic={"x": {0: "batch", 1: "time"}})


def test_exports_in_one_process_build_the_torchlib_registry_once(tmp_path, monkeypatch):
    registration = pytest.importorskip("torch.onnx._internal.exporter._registration")
    original = registration.ONNXRegistry.__dict__["from_torchlib"]
    builds = []

    def counting(cls, *args, **kwargs):
        builds.append(args)
        return original.__func__(cls, *args, **kwargs)

    monkeypatch.setattr(registration.ONNXRegistry, "from_torchlib", classmethod(counting))
    monkeypatch.setattr(export_module, "_REGISTRIES", {})
    reports = [export_onnx(spec(Tiny().eval()), tmp_path / f"m{i}.onnx") for i in range(2)]
    assert len(builds) == 1, f"the registry was built {len(builds)} times for 2 exports"
    assert all(r.max_abs_diff <= 1e-5 for r in reports)
    # torch's own classmethod is back once the export is done
    assert registration.ONNXRegistry.__dict__["from_torchlib"].__func__ is counting
    assert torch.is_grad_enabled()


def test_an_export_collects_garbage_less_often_and_puts_the_thresholds_back(tmp_path):
    import gc

    before = gc.get_threshold()
    seen = []

    def record(phase, info):
        if phase == "start":
            seen.append(gc.get_threshold())

    gc.callbacks.append(record)
    try:
        export_onnx(spec(Tiny().eval()), tmp_path / "m.onnx")
    finally:
        gc.callbacks.remove(record)
    assert seen and set(seen) == {export_module.EXPORT_GC_THRESHOLD}, set(seen)
    assert gc.get_threshold() == before
    with pytest.raises(ValueError, match="one input name"):  # a failed export puts them back too
        export_onnx(ExportSpec(module=Tiny(), example_inputs=(), input_names=["x"], output_names=["y"]),
                    tmp_path / "bad.onnx")
    assert gc.get_threshold() == before

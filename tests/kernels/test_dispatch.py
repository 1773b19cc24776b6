"""The kernel dispatcher: which implementation a call gets, and loud refusals."""

from __future__ import annotations

import pytest
import torch

from seqzoo.kernels import export_mode, is_export_mode, resolve_impl


def test_auto_uses_the_reference_on_cpu():
    assert resolve_impl("auto", torch.zeros(2)) == "torch"
    assert resolve_impl("torch", torch.zeros(2)) == "torch"


def test_triton_on_cpu_runs_under_the_interpreter_or_refuses(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_impl("triton", torch.zeros(2)) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        resolve_impl("triton", torch.zeros(2), op="selective_scan")


def test_export_mode_forces_the_torch_path_and_restores():
    assert not is_export_mode()
    with export_mode():
        assert is_export_mode()
        assert resolve_impl("triton", torch.zeros(2)) == "torch"
        with export_mode(False):
            assert not is_export_mode()
        assert is_export_mode()
    assert not is_export_mode()


def test_unknown_impl_is_an_error():
    with pytest.raises(ValueError, match="impl must be one of"):
        resolve_impl("cuda", torch.zeros(2))

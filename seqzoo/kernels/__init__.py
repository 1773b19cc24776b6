"""Kernels: one module per op family, each with a pure-torch reference beside its
Triton kernels and a public dispatcher (see :mod:`seqzoo.kernels.dispatch`)."""

from seqzoo.kernels.dispatch import export_mode, is_export_mode, resolve_impl, set_export_mode, triton_available

__all__ = ["export_mode", "is_export_mode", "resolve_impl", "set_export_mode", "triton_available"]

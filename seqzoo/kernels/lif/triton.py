"""LIF neurons in Triton: forward and surrogate-gradient backward kernels and their autograd.Function.

Imported only when Triton imports (the dispatcher checks :func:`seqzoo.kernels.dispatch.triton_available`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, sm_count


def _block_channels(rows: int, D: int, device: torch.device) -> int:
    """Neurons per program: 256, halved (down to 32) until rows × blocks fill the device
    (4 programs per SM). The membrane recurrence is nonlinear, so time cannot be split."""
    target = max(1, 4 * sm_count(device, cpu_default=0))  # 1 under the interpreter: no halving
    block = 256
    while block > 32 and rows * triton.cdiv(D, block) < target:
        block //= 2
    return block


class LIFFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, v0: Tensor | None, tau: float, v_th: float, v_reset: float, alpha: float):
        B, T = x.shape[:2]
        D = int(x[0, 0].numel())
        acc = accumulation_dtype(x.dtype)
        x_c = x.contiguous()
        spikes = torch.empty_like(x_c)
        membrane = torch.empty(x.shape, dtype=acc, device=x.device)
        final = torch.empty((B, *x.shape[2:]), dtype=acc, device=x.device)
        v0_c = v0.to(acc).contiguous() if v0 is not None else final
        block = _block_channels(B, D, x.device)
        _lif_fwd_kernel[(triton.cdiv(D, block), B)](
            x_c, v0_c, spikes, membrane, final, T, D, tau, v_th, v_reset,
            HAS_V0=v0 is not None, ACC=tl.float64 if acc == torch.float64 else tl.float32, BLOCK_D=block,
            num_warps=max(1, block // 64),
        )
        ctx.save_for_backward(membrane)
        ctx.constants = (tau, v_th, alpha, x.dtype, v0 is not None)
        return spikes, final

    @staticmethod
    def backward(ctx, grad_spikes: Tensor, grad_final: Tensor):
        (membrane,) = ctx.saved_tensors
        tau, v_th, alpha, x_dtype, has_v0 = ctx.constants
        B, T = membrane.shape[:2]
        D = int(membrane[0, 0].numel())
        grad_x = torch.empty(membrane.shape, dtype=x_dtype, device=membrane.device)
        grad_v0 = torch.empty_like(grad_final, dtype=membrane.dtype)
        block = _block_channels(B, D, membrane.device)
        _lif_bwd_kernel[(triton.cdiv(D, block), B)](
            membrane, grad_spikes.contiguous(), grad_final.to(membrane.dtype).contiguous(), grad_x, grad_v0,
            T, D, tau, v_th, alpha,
            ACC=tl.float64 if membrane.dtype == torch.float64 else tl.float32, BLOCK_D=block,
            num_warps=max(1, block // 64),
        )
        return grad_x, (grad_v0 if has_v0 else None), None, None, None, None


@triton.jit(do_not_specialize=["T"])
def _lif_fwd_kernel(
    x_ptr, v0_ptr, s_ptr, h_ptr, final_ptr, T, D, tau, v_th, v_reset,
    HAS_V0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_d = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    live = d < D
    if HAS_V0:
        v = tl.load(v0_ptr + row * D + d, mask=live, other=0.0).to(ACC)
    else:
        v = tl.zeros([BLOCK_D], dtype=ACC) + v_reset
    for t in tl.range(0, T, num_stages=3):  # loads run ahead of the membrane
        off = (row * T + t) * D + d
        x = tl.load(x_ptr + off, mask=live, other=0.0).to(ACC)
        h = v + (x - (v - v_reset)) / tau
        fired = h >= v_th
        s = tl.where(fired, 1.0, 0.0).to(ACC)
        v = tl.where(fired, v_reset, h)
        tl.store(s_ptr + off, s.to(s_ptr.dtype.element_ty), mask=live)
        tl.store(h_ptr + off, h.to(h_ptr.dtype.element_ty), mask=live)
    tl.store(final_ptr + row * D + d, v.to(final_ptr.dtype.element_ty), mask=live)

@triton.jit(do_not_specialize=["T"])
def _lif_bwd_kernel(
    h_ptr, gs_ptr, gfinal_ptr, gx_ptr, gv0_ptr, T, D, tau, v_th, alpha,
    ACC: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # carry = dL/dV_t arriving from step t + 1 (or from the final state)
    pid_d = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    live = d < D
    carry = tl.load(gfinal_ptr + row * D + d, mask=live, other=0.0).to(ACC)
    for i in tl.range(0, T, num_stages=3):
        t = T - 1 - i
        off = (row * T + t) * D + d
        h = tl.load(h_ptr + off, mask=live, other=0.0).to(ACC)
        gs = tl.load(gs_ptr + off, mask=live, other=0.0).to(ACC)
        s = tl.where(h >= v_th, 1.0, 0.0).to(ACC)
        sig = 1.0 / (1.0 + tl.exp(-alpha * (h - v_th)))
        grad_h = gs * alpha * sig * (1.0 - sig) + carry * (1.0 - s)
        tl.store(gx_ptr + off, (grad_h / tau).to(gx_ptr.dtype.element_ty), mask=live)
        carry = grad_h * (1.0 - 1.0 / tau)
    tl.store(gv0_ptr + row * D + d, carry.to(gv0_ptr.dtype.element_ty), mask=live)

"""Pure-torch selective scan (S6): the sequential oracle, the loop-free export form, and
the one-step decoding update (see :mod:`seqzoo.kernels.selective_scan` for the math and
layout).

* :func:`selective_scan_ref` -- the recurrence one step at a time: the oracle in tests and
  the eager CPU path (``unbind`` over time keeps its autograd linear in T; on the weather
  shape it trains about 20x faster on CPU than the chunked form with 16-step chunks, 4x
  faster than with 4-step chunks);
* :func:`selective_scan_chunked` -- loop-free in T: pairwise relative decays
  exp(a_t - a_s) <= 1 inside chunks of ``chunk_size`` steps, the state carried between
  chunks by torch's ``scan`` operator when the length is symbolic (a fixed length walks its
  T/K chunks in Python: a small graph, no loop op). Used under ``torch.export`` (ONNX
  keeps a symbolic length) and ``torch.compile``;
* :func:`selective_state_update_ref` -- one step of the reference, for decoding.

Everything accumulates in :func:`~seqzoo.kernels.dispatch.accumulation_dtype` (float32,
float64 for float64 inputs); the output has ``u``'s dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqzoo.kernels.dispatch import accumulation_dtype, is_export_mode
from seqzoo.kernels.scan import scan

__all__ = [
    "check_scan_args",
    "check_step_args",
    "selective_scan_chunked",
    "selective_scan_ref",
    "selective_state_update_ref",
]

OP = "selective_scan"
DEFAULT_CHUNK = 16


# ---------------------------------------------------------------------------------------
# the reference: one step at a time
# ---------------------------------------------------------------------------------------


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,  y_t = C_t h_t (+ D u_t) (⊙ SiLU(z_t)), step by step."""
    batch, _, E = u.shape
    groups, N = _groups(B), A.shape[-1]
    acc = accumulation_dtype(u.dtype)
    dt, u_, A_, B_, C_ = _grouped_inputs(u, delta, A, B, C, delta_bias, delta_softplus, acc)
    h = _grouped_state(initial_state, batch, groups, E, N, acc, u.device)  # (B, G, E/G, N)
    states = []
    for dt_t, u_t, B_t in zip(dt.unbind(1), u_.unbind(1), B_.unbind(1)):
        h = torch.exp(dt_t[..., None] * A_) * h + (dt_t * u_t)[..., None] * B_t
        states.append(h)
    y = (torch.stack(states, dim=1) * C_).sum(-1).reshape(u.shape)  # y_t = C_t h_t
    return _outputs(y, h, u, D, z, N, acc, return_final_state)


# ---------------------------------------------------------------------------------------
# loop-free: relative decays inside chunks, torch's scan operator between chunks
# ---------------------------------------------------------------------------------------


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> Tensor | tuple[Tensor, Tensor]:
    """The scan with no Python loop over time, so ``torch.export`` keeps T symbolic.

    Inside a chunk of K steps with cumulative log-decay a_t = A Σ_{s<=t} Δ_s,

        h_t = exp(a_t) h_0 + Σ_{s<=t} exp(a_t - a_s) Δ_s B_s u_s,

    where every factor exp(a_t - a_s) <= 1 (no overflow, unlike exp(a_t) exp(-a_s)); the
    chunk's last state is carried to the next chunk by torch's scan operator (:mod:`seqzoo.kernels.scan`).
    Work is K times the recurrence's, so K stays small. T is padded to a multiple of K with
    Δ = 0 steps, which leave the state unchanged. A symbolic T (``torch.export`` with a
    dynamic length) goes through the scan operator, which under export runs without
    autograd (inference graphs: that keeps symbolic sizes out of its saved tensors); a
    fixed T walks its chunks in a Python loop, which traces to a small graph.
    """
    if chunk_size < 1:
        raise ValueError(f"{OP}: chunk_size must be >= 1, got {chunk_size}")
    batch, T, E = u.shape
    groups, N = _groups(B), A.shape[-1]
    acc = accumulation_dtype(u.dtype)
    dt, u_, A_, B_, C_ = _grouped_inputs(u, delta, A, B, C, delta_bias, delta_softplus, acc)
    h0 = _grouped_state(initial_state, batch, groups, E, N, acc, u.device)
    K = chunk_size
    pad = (-T) % K
    drive = dt * u_  # (B, T, G, P)

    def chunks(x: Tensor) -> Tensor:  # (B, T, ...) -> (T/K, B, K, ...)
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
        return x.unflatten(1, (-1, K)).transpose(0, 1)

    xs = [chunks(dt), chunks(drive), chunks(B_[..., 0, :]), chunks(C_[..., 0, :])]
    causal = torch.ones(K, K, dtype=torch.bool, device=u.device).tril()[:, :, None, None, None]
    symbolic = not isinstance(xs[0].shape[0], int)
    if symbolic and is_export_mode():
        A_, h0, xs = A_.detach(), h0.detach(), [x.detach() for x in xs]

    def chunk_step(h: Tensor, inputs: list[Tensor], A_: Tensor, causal: Tensor) -> tuple[Tensor, Tensor]:
        dt_c, drive_c, B_c, C_c = inputs  # (B, K, G, P), (B, K, G, P), (B, K, G, N), (B, K, G, N)
        log_decay = dt_c.cumsum(1)[..., None] * A_  # a_t: (B, K, G, P, N), non-increasing in t
        relative = log_decay[:, :, None] - log_decay[:, None, :]  # a_t - a_s: (B, K_t, K_s, G, P, N)
        weights = torch.exp(relative.masked_fill(~causal, float("-inf")))
        x = drive_c[..., None] * B_c[:, :, :, None, :]  # Δ_s u_s B_s: (B, K, G, P, N)
        states = (weights * x[:, None]).sum(2) + torch.exp(log_decay) * h[:, None]
        y = (states * C_c[:, :, :, None, :]).sum(-1)  # (B, K, G, P)
        last = torch.empty_like(h, memory_format=torch.contiguous_format).copy_(states[:, -1])
        return last, y

    if symbolic:
        final, ys = scan(chunk_step, h0, xs, (A_, causal))
    else:
        final, outs = h0, []
        for chunk in zip(*xs):
            final, y_chunk = chunk_step(final, list(chunk), A_, causal)
            outs.append(y_chunk)
        ys = torch.stack(outs)
    y = ys.transpose(0, 1).flatten(1, 2)[:, :T].reshape(u.shape)
    return _outputs(y, final, u, D, z, N, acc, return_final_state)


# ---------------------------------------------------------------------------------------
# one step, for decoding
# ---------------------------------------------------------------------------------------


def selective_state_update_ref(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> tuple[Tensor, Tensor]:
    """One step of :func:`selective_scan_ref` (the same arithmetic, T = 1)."""
    y, new_state = selective_scan_ref(
        u[:, None], delta[:, None], A, B[:, None], C[:, None], D, None if z is None else z[:, None],
        delta_bias=delta_bias, delta_softplus=delta_softplus, initial_state=state, return_final_state=True,
    )
    return y[:, 0], _cast(new_state, state.dtype)


# ---------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------


def _groups(B: Tensor) -> int:
    return 1 if B.dim() == 3 else B.shape[2]


def _grouped_inputs(u, delta, A, B, C, delta_bias, delta_softplus, acc):
    """Inputs in the (batch, T, G, E/G[, N]) shapes both torch paths use; Δ made final."""
    batch, T, E = u.shape
    groups, N = _groups(B), A.shape[-1]
    dt = _cast(delta, acc)
    if delta_bias is not None:
        dt = dt + _cast(delta_bias, acc)
    if delta_softplus:
        dt = F.softplus(dt)
    per_group = (batch, T, groups, E // groups)
    B_ = _cast(B, acc).reshape(batch, T, groups, 1, N)
    C_ = _cast(C, acc).reshape(batch, T, groups, 1, N)
    A_ = _cast(A, acc).reshape(groups, E // groups, N)
    return dt.reshape(per_group), _cast(u, acc).reshape(per_group), A_, B_, C_


def _grouped_state(initial_state, batch, groups, E, N, acc, device) -> Tensor:
    if initial_state is None:
        return torch.zeros(batch, groups, E // groups, N, dtype=acc, device=device)
    return _cast(initial_state, acc).reshape(batch, groups, E // groups, N)


def _outputs(y, h, u, D, z, N, acc, return_final_state):
    """The torch paths' common tail: skip and gate on y = C h, cast to u's dtype; the final
    state (B, G, E/G, N) as (B, E, N)."""
    batch, _, E = u.shape
    y = _cast(_skip_and_gate(y, u, D, z, acc), u.dtype)
    final = h.reshape(batch, E, N)
    return (y, final) if return_final_state else y


def _skip_and_gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, acc) -> Tensor:
    if D is not None:
        y = y + _cast(u, acc) * _cast(D, acc)
    if z is not None:
        y = y * F.silu(_cast(z, acc))
    return y


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)`` that adds nothing to an exported graph when the dtype already matches."""
    return t if t.dtype == dtype else t.to(dtype)


def check_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None) -> None:
    """Shapes, dtypes and devices of a :func:`selective_scan` call, with messages that say what to pass."""
    _need_float(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state)
    if u.dim() != 3:
        raise ValueError(f"{OP}: u must be (batch, T, E), got shape {tuple(u.shape)}")
    batch, T, E = u.shape
    if T < 1 or E < 1:
        raise ValueError(f"{OP}: u needs at least one time step and one channel, got shape {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"{OP}: delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"{OP}: z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    if A.dim() != 2 or A.shape[0] != E:
        raise ValueError(f"{OP}: A must be (E, N) = ({E}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    _check_bc(B, C, (batch, T), E, N, OP)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (E,):
            raise ValueError(f"{OP}: {name} must be (E,) = ({E},), got {tuple(t.shape)}")
    if initial_state is not None and initial_state.shape != (batch, E, N):
        raise ValueError(f"{OP}: initial_state must be (batch, E, N) = ({batch}, {E}, {N}), "
                         f"got {tuple(initial_state.shape)}")
    _same_device(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state)


def check_step_args(state, u, delta, A, B, C, D=None, z=None, delta_bias=None) -> None:
    op = "selective_state_update"
    _need_float(state=state, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    if u.dim() != 2:
        raise ValueError(f"{op}: u must be (batch, E) (one step), got shape {tuple(u.shape)}")
    batch, E = u.shape
    for name, t in (("delta", delta), ("z", z)):
        if t is not None and t.shape != u.shape:
            raise ValueError(f"{op}: {name} must have u's shape {tuple(u.shape)}, got {tuple(t.shape)}")
    if A.dim() != 2 or A.shape[0] != E:
        raise ValueError(f"{op}: A must be (E, N) = ({E}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    if state.shape != (batch, E, N):
        raise ValueError(f"{op}: state must be (batch, E, N) = ({batch}, {E}, {N}), got {tuple(state.shape)}")
    _check_bc(B, C, (batch,), E, N, op)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (E,):
            raise ValueError(f"{op}: {name} must be (E,) = ({E},), got {tuple(t.shape)}")
    _same_device(state=state, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)


def _check_bc(B: Tensor, C: Tensor, lead: tuple[int, ...], E: int, N: int, op: str) -> None:
    k = len(lead)
    if B.shape != C.shape:
        raise ValueError(f"{op}: B and C must have the same shape, got {tuple(B.shape)} and {tuple(C.shape)}")
    if B.dim() not in (k + 1, k + 2) or tuple(B.shape[:k]) != lead or B.shape[-1] != N:
        want = ", ".join(map(str, lead))
        raise ValueError(f"{op}: B and C must be ({want}, N) or ({want}, G, N) with N = {N}, got {tuple(B.shape)}")
    groups = 1 if B.dim() == k + 1 else B.shape[k]
    if groups < 1 or E % groups:
        raise ValueError(f"{op}: the number of B/C groups ({groups}) must divide E ({E})")


def _need_float(**tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and not t.is_floating_point():
            raise TypeError(f"{OP}: {name} must be a floating-point tensor, got {t.dtype}")


def _same_device(**tensors: Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{OP}: all tensors must be on one device, got {devices}")

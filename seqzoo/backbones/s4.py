"""Structured state spaces: S4D (diagonal, the default member) and S4 (normal plus low rank).

Each of the H = d_model channels is a continuous single-input single-output SSM

    x'(t) = A x(t) + B u(t),    y(t) = C x(t) + D u(t),    Δ = exp(log_dt), log_dt ~ U[log 1e-3, log 1e-1]

discretised to x_k = Ā x_{k-1} + B̄ u_k, y_k = C x_k + D u_k, i.e. the convolution
y = K * u + D u with K_l = C Ā^l B̄. A layer is GELU(K * u + D u) followed by a GLU output
projection; layers sit in pre-norm residual blocks (Gu et al. 2022).

* S4D (Gu, Gupta et al. 2022, "On the parameterization and initialization of diagonal
  state space models"): A diagonal complex with N/2 modes (conjugate pairs implicit),
  A = -exp(log_A_real) + i A_imag, initialised S4D-Lin A_n = -1/2 + iπn or S4D-Real
  A_n = -(n+1); zero-order hold Ā = exp(ΔA), B̄ = (Ā - 1)/A · B with B = 1 folded into C;
  Vandermonde kernel K_l = 2 Re Σ_n C_n B̄_n Ā_n^l.
* S4 (Gu, Goel, Ré 2022): A = Λ - P P* (normal plus low rank) from HiPPO-LegS, bilinear
  discretisation. The kernel's generating function at the roots of unity ω_k is a
  Cauchy kernel with a Woodbury correction for the rank-1 term; an inverse FFT gives K.
  Here it is written as K̂(ω) = k00 - h k01 k10 / (1 + h k11), h = (1+ω)/2, with
  k_ab = Σ_n 2Δ a_n b_n / (2(1-ω) - (1+ω)ΔΛ_n) (+ the conjugate modes): the same value as
  the S4 code's 2/(1+ω)·(r00 - r01 r10 / (1 + r11)), without its singularity at ω = -1.
  C is the output matrix itself; C̃ = C(I - Ā^L) is formed for each length L.

Paths. Training: FFT convolution of size 2L. Export (onnxruntime runs no FFT of dynamic
length): K materialised in real arithmetic (S4D's Vandermonde; S4's Krylov sequence
C Ā^l B̄ through the dense recurrence) and applied as a causal depthwise convolution, so
the length stays symbolic. ``step`` and ``forward_with_state`` (chunks with a carried
state) run the recurrence: S4D through :func:`seqzoo.kernels.linear_recurrence`, S4 in
dense real coordinates. The default is the S4 code's default, the causal kernel (built
``causal`` or not); ``bidirectional=True`` asks for the S4 code's bidirectional variant:
a second output matrix C gives an anti-causal kernel over the strictly later inputs.

SSM parameters (log_dt and A, plus S4's P and B) form their own optimiser group: lr 1e-3, no
weight decay.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.backbones.base import State, check_bidirectional, register_backbone
from seqzoo.backbones.blocks import BlockStack
from seqzoo.errors import ConfigError
from seqzoo.kernels.dispatch import is_export_mode
from seqzoo.kernels.linear_recurrence import linear_recurrence, lti_recurrence
from seqzoo.layers import (
    MlpKind, NormKind, cached_on_tensors, cauchy_kernel, vandermonde_kernel, vandermonde_kernel_ref,
)


class _SSMBackbone(BlockStack):
    causal = True
    streaming = True

    def _build(self, make_ssm, *, d_state, dt_min, dt_max, ssm_lr, mlp, mlp_ratio, norm, drop_path,
               bidirectional) -> None:
        label = type(self).name
        self.bidirectional = check_bidirectional(label, bidirectional, self.is_causal)
        if not isinstance(d_state, int) or d_state < 2 or d_state % 2:
            raise ConfigError(f"backbone {label!r}: d_state must be an even integer >= 2 (N/2 complex modes), got {d_state!r}")
        if not 0 < dt_min < dt_max:
            raise ConfigError(f"backbone {label!r}: need 0 < dt_min < dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if not ssm_lr > 0:
            raise ConfigError(f"backbone {label!r}: ssm_lr must be positive, got {ssm_lr}")
        self.ssm_lr = float(ssm_lr)
        directions = 2 if self.bidirectional else 1
        self.build_residual_blocks(
            lambda i: SSMLayer(make_ssm(directions), self.d_model, dropout=self.dropout_p),
            mlp=mlp, mlp_ratio=mlp_ratio, norm=norm, drop_path=drop_path,
        )

    def param_groups(self) -> list[dict]:
        params = [p for block in self.blocks for p in block.mixer.ssm.ssm_parameters()]
        return [{"params": params, "lr": self.ssm_lr, "weight_decay": 0.0}]


@register_backbone("s4d")
class S4D(_SSMBackbone):
    """Diagonal structured state space (S4D-Lin / S4D-Real), FFT convolution in training.

    ``init``: ``"lin"`` (S4D-Lin, A_n = -1/2 + iπn) or ``"real"`` (S4D-Real, A_n = -(n+1)).

    Args:
        d_state: state size N (N/2 complex modes for S4D).
        dt_min, dt_max: range of the log-uniform initial step Δ.
        ssm_lr: learning rate of the SSM parameter group (no weight decay).
        mlp: channel MLP after the SSM layer (``"none"``: the GLU output projection only).
        mlp_ratio: MLP hidden width / D.
        norm: the pre-norms' kind.
        drop_path: stochastic depth, rising linearly to this rate.
        bidirectional: the S4 code's bidirectional variant (a second, anti-causal kernel);
            the default is the causal kernel, whatever ``causal`` says.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        d_state: int = 64,
        init: Literal["lin", "real"] = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        ssm_lr: float = 1e-3,
        mlp: MlpKind = "none",
        mlp_ratio: float = 4.0,
        norm: NormKind = "layer",
        drop_path: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        if init not in ("lin", "real"):
            raise ConfigError(f"backbone 's4d': init must be 'lin' (S4D-Lin) or 'real' (S4D-Real), got {init!r}")
        self._build(
            lambda directions: DiagonalSSM(d_model, d_state, directions=directions, init=init,
                                           dt_min=dt_min, dt_max=dt_max, impl=impl),
            d_state=d_state, dt_min=dt_min, dt_max=dt_max, ssm_lr=ssm_lr, mlp=mlp, mlp_ratio=mlp_ratio,
            norm=norm, drop_path=drop_path, bidirectional=bidirectional,
        )


@register_backbone("s4")
class S4(_SSMBackbone):
    """S4 with a normal-plus-low-rank HiPPO-LegS state matrix and the Cauchy/Woodbury kernel.

    Args:
        d_state: state size N (N/2 complex modes for S4D).
        dt_min, dt_max: range of the log-uniform initial step Δ.
        ssm_lr: learning rate of the SSM parameter group (no weight decay).
        mlp: channel MLP after the SSM layer (``"none"``: the GLU output projection only).
        mlp_ratio: MLP hidden width / D.
        norm: the pre-norms' kind.
        drop_path: stochastic depth, rising linearly to this rate.
        bidirectional: the S4 code's bidirectional variant (a second, anti-causal kernel);
            the default is the causal kernel, whatever ``causal`` says.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        *,
        causal: bool = False,
        dropout: float = 0.0,
        impl: str = "auto",
        d_state: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        ssm_lr: float = 1e-3,
        mlp: MlpKind = "none",
        mlp_ratio: float = 4.0,
        norm: NormKind = "layer",
        drop_path: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__(d_model, n_layers, causal=causal, dropout=dropout, impl=impl)
        self._build(
            lambda directions: NPLRSSM(d_model, d_state, directions=directions, dt_min=dt_min, dt_max=dt_max),
            d_state=d_state, dt_min=dt_min, dt_max=dt_max, ssm_lr=ssm_lr, mlp=mlp, mlp_ratio=mlp_ratio,
            norm=norm, drop_path=drop_path, bidirectional=bidirectional,
        )


# ---------------------------------------------------------------------------------------
# The layer: convolution with the SSM kernel, D skip, GELU, GLU projection
# ---------------------------------------------------------------------------------------


class SSMLayer(nn.Module):
    """u (B, L, H) -> GLU(W · GELU(K * u + D ⊙ u)); K from ``ssm`` (one or two directions)."""

    def __init__(self, ssm: nn.Module, d_model: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.ssm = ssm
        self.D = nn.Parameter(torch.randn(d_model))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))

    def forward(self, u: Tensor, mask: Tensor | None = None) -> Tensor:
        # Padded positions arrive zeroed (ResidualBlock), so neither direction reads them.
        L = u.shape[1]
        with _full_precision(u):
            if is_export_mode():
                y = direct_convolution(u, self.ssm.export_kernel(L))
            else:
                y = fft_convolution(u, self.ssm.kernel(L))
        return self._output(y.to(u.dtype), u)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return self.ssm.init_state(batch_size, device=device, dtype=dtype)

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        y_t, state = self.ssm.step(u_t, state)
        return self._output(y_t, u_t), state

    def forward_with_state(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        y, state = self.ssm.scan(u, state)
        return self._output(y, u), state

    def _output(self, y: Tensor, u: Tensor) -> Tensor:
        return self.output(self.dropout(self.activation(y + u * self.D)))


def fft_convolution(u: Tensor, K: Tensor) -> Tensor:
    """y_t = Σ_{s<=t} K0[t-s] u_s (+ Σ_{s>t} K1[s-t-1] u_s when K has two rows).

    ``u`` (B, L, H), ``K`` (1 or 2, H, L); FFT of size 2L so the circular convolution
    does not wrap around.
    """
    L = u.shape[1]
    k = K[0] if K.shape[0] == 1 else F.pad(K[0], (0, L)) + F.pad(K[1].flip(-1), (L, 0))
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    u_f = torch.fft.rfft(u.transpose(1, 2).to(work), n=2 * L)
    k_f = torch.fft.rfft(k.to(work), n=2 * L)
    y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]
    return y.transpose(1, 2)


def direct_convolution(u: Tensor, K: Tensor) -> Tensor:
    """The same convolution as :func:`fft_convolution` with ``F.conv1d`` (exportable with a
    symbolic length: the kernel is as long as the input)."""
    L, H = u.shape[1], u.shape[2]
    x = u.transpose(1, 2)
    y = F.conv1d(F.pad(x, (L - 1, 0)), K[0].flip(-1).unsqueeze(1), groups=H)
    if K.shape[0] == 2:
        y = y + F.conv1d(F.pad(x, (0, L))[..., 1:], K[1].unsqueeze(1), groups=H)
    return y.transpose(1, 2)


@contextlib.contextmanager
def _full_precision(u: Tensor):
    """SSM kernels (exponentials, FFTs) run outside autocast."""
    if u.device.type in ("cuda", "cpu") and torch.is_autocast_enabled(u.device.type):
        with torch.autocast(device_type=u.device.type, enabled=False):
            yield
    else:
        yield


def _discretisation(ssm: nn.Module, compute: Callable[[], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """``compute()`` (``ssm``'s discretisation), reused by ``step`` and ``scan`` until one of
    ``ssm``'s own parameters changes (:func:`seqzoo.layers.cached_on_tensors`)."""
    return cached_on_tensors(ssm, tuple(ssm.parameters(recurse=False)), compute)


def _dt_init(d_model: int, dt_min: float, dt_max: float) -> Tensor:
    return torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


# ---------------------------------------------------------------------------------------
# S4D: diagonal A
# ---------------------------------------------------------------------------------------


class DiagonalSSM(nn.Module):
    """H channels of N/2 complex modes; complex numbers kept as (real, imag) pairs so every
    path but the chunked scan is real arithmetic (ONNX has no complex dtype)."""

    def __init__(self, d_model: int, d_state: int, *, directions: int, init: str, dt_min: float, dt_max: float,
                 impl: str = "auto") -> None:
        super().__init__()
        modes = d_state // 2
        n = torch.arange(modes, dtype=torch.float32)
        if init == "lin":  # S4D-Lin: A_n = -1/2 + iπn
            a_real, a_imag = torch.full((modes,), 0.5), math.pi * n
        else:  # S4D-Real: A_n = -(n + 1)
            a_real, a_imag = n + 1, torch.zeros(modes)
        self.impl = impl
        self.log_dt = nn.Parameter(_dt_init(d_model, dt_min, dt_max))
        self.log_A_real = nn.Parameter(torch.log(a_real).repeat(d_model, 1))
        self.A_imag = nn.Parameter(a_imag.repeat(d_model, 1))
        self.C = nn.Parameter(torch.view_as_real(torch.randn(directions, d_model, modes, dtype=torch.cfloat)))

    def ssm_parameters(self) -> list[nn.Parameter]:
        return [self.log_dt, self.log_A_real, self.A_imag]

    def discrete(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(Re ΔA, Im ΔA, Re Ā, Im Ā, Re C̄, Im C̄) with C̄ = C (Ā - 1)/A; shapes (H, N/2), C̄ (dir, H, N/2)."""
        dt = torch.exp(self.log_dt)[:, None]
        a_re, a_im = -torch.exp(self.log_A_real), self.A_imag
        dta_re, dta_im = a_re * dt, a_im * dt
        mag = torch.exp(dta_re)
        abar_re, abar_im = mag * torch.cos(dta_im), mag * torch.sin(dta_im)
        # B̄ = (Ā - 1) / A
        norm = a_re * a_re + a_im * a_im
        bbar_re = ((abar_re - 1) * a_re + abar_im * a_im) / norm
        bbar_im = (abar_im * a_re - (abar_re - 1) * a_im) / norm
        c_re, c_im = self.C[..., 0], self.C[..., 1]
        return dta_re, dta_im, abar_re, abar_im, c_re * bbar_re - c_im * bbar_im, c_re * bbar_im + c_im * bbar_re

    def kernel(self, L: int) -> Tensor:
        """K (dir, H, L): K_l = 2 Re Σ_n C̄_n Ā_n^l, Ā_n^l = exp(l ΔA_n) (Vandermonde), in
        chunks of the length with a backward that recomputes (no (H, N, L) tensors kept)."""
        dta_re, dta_im, _, _, cbar_re, cbar_im = self.discrete()
        return vandermonde_kernel(dta_re, dta_im, cbar_re, cbar_im, L)

    def export_kernel(self, L: int) -> Tensor:
        """The same K by the plain formula: real arithmetic with a symbolic length."""
        dta_re, dta_im, _, _, cbar_re, cbar_im = self.discrete()
        return vandermonde_kernel_ref(dta_re, dta_im, cbar_re, cbar_im, L)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return (torch.zeros(batch_size, *self.log_A_real.shape, 2, device=device, dtype=dtype),)

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        """x <- Ā x + u_t, y = 2 Re(C̄ x); state (B, H, N/2, 2) as (real, imag)."""
        _, _, abar_re, abar_im, cbar_re, cbar_im = _discretisation(self, self.discrete)
        (x,) = state
        x_re = abar_re * x[..., 0] - abar_im * x[..., 1] + u_t[..., None]
        x_im = abar_re * x[..., 1] + abar_im * x[..., 0]
        y = 2 * (cbar_re[0] * x_re - cbar_im[0] * x_im).sum(-1)
        return y, (torch.stack([x_re, x_im], dim=-1),)

    def scan(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        """A chunk u (B, L, H) from ``state`` through the diagonal complex recurrence kernel."""
        _, _, abar_re, abar_im, cbar_re, cbar_im = _discretisation(self, self.discrete)
        (x0,) = state
        modes = abar_re.shape[-1]
        drive = u[..., None].expand(*u.shape, modes)
        x, final = linear_recurrence(
            torch.complex(abar_re, abar_im),
            torch.complex(drive, torch.zeros_like(drive)),
            initial_state=torch.view_as_complex(x0.contiguous()),
            return_final_state=True,
            impl=self.impl,
        )
        y = 2 * (x * torch.complex(cbar_re[0], cbar_im[0])).real.sum(-1)
        return y.to(u.dtype), (torch.view_as_real(final).to(x0.dtype),)


# ---------------------------------------------------------------------------------------
# S4: normal plus low-rank A (HiPPO-LegS), bilinear discretisation
# ---------------------------------------------------------------------------------------


def hippo_legs_nplr(d_state: int, b_clip: float = 2.0) -> tuple[Tensor, Tensor, Tensor]:
    """HiPPO-LegS in normal-plus-low-rank form: A = V (diag Λ - P P*) V*.

    A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); B_n = sqrt(2n+1);
    P_n = sqrt(n + 1/2) makes A + P P^T = -I/2 + skew. Returns Λ, V*P, V*B (complex128, N/2
    modes: one of each conjugate pair; B's imaginary part clipped to ±b_clip as in S4).
    """
    N = d_state
    q = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    A = -(torch.tril(torch.outer(r, r), -1) + torch.diag(q + 1))
    P = torch.sqrt(q + 0.5)
    normal = A + torch.outer(P, P)
    real_part = torch.diagonal(normal).mean()
    skew = normal - real_part * torch.eye(N, dtype=torch.float64)
    freqs, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # skew = V diag(i·freqs) V*
    order = torch.argsort(freqs)[: N // 2]
    Lambda = real_part + 1j * freqs[order]
    V = V[:, order]
    Vh = V.conj().T
    B = Vh @ r.to(torch.complex128)
    B = torch.complex(B.real, B.imag.clamp(-b_clip, b_clip))
    return Lambda, Vh @ P.to(torch.complex128), B


class NPLRSSM(nn.Module):
    """H channels of S4's state (N/2 complex modes of Λ - P P*), bilinear discretisation.

    Real coordinates s = [Re x; Im x] (N numbers) make the conjugate-pair system a real one:
    A_r = [[Λr, -Λi], [Λi, Λr]] - 2 q q^T with q = [Re P; Im P], B_r = [Re B; Im B],
    C_r = [2 Re C, -2 Im C] (y = 2 Re(C x)). They serve step, chunks and export.
    """

    def __init__(self, d_model: int, d_state: int, *, directions: int, dt_min: float, dt_max: float) -> None:
        super().__init__()
        Lambda, P, B = hippo_legs_nplr(d_state)
        self.log_dt = nn.Parameter(_dt_init(d_model, dt_min, dt_max))
        self.log_A_real = nn.Parameter(torch.log(-Lambda.real).float().repeat(d_model, 1))
        self.A_imag = nn.Parameter(Lambda.imag.float().repeat(d_model, 1))
        self.P = nn.Parameter(torch.view_as_real(P.to(torch.cfloat)).repeat(d_model, 1, 1))
        self.B = nn.Parameter(torch.view_as_real(B.to(torch.cfloat)).repeat(d_model, 1, 1))
        self.C = nn.Parameter(torch.view_as_real(torch.randn(directions, d_model, d_state // 2, dtype=torch.cfloat)))

    def ssm_parameters(self) -> list[nn.Parameter]:
        """log_dt, A (Λ), P and B: the S4 code registers all four with the SSM learning rate
        and no weight decay."""
        return [self.log_dt, self.log_A_real, self.A_imag, self.P, self.B]

    # -- the dense real system -----------------------------------------------------------
    def continuous_real(self) -> tuple[Tensor, Tensor]:
        """A_r (H, N, N) and B_r (H, N) of the continuous system in real coordinates."""
        lam = _complex_block(-torch.exp(self.log_A_real), self.A_imag)
        q = torch.cat([self.P[..., 0], self.P[..., 1]], dim=-1)
        return lam - 2 * q[:, :, None] * q[:, None, :], torch.cat([self.B[..., 0], self.B[..., 1]], dim=-1)

    def discrete_real(self) -> tuple[Tensor, Tensor, Tensor]:
        """Ā (H, N, N), B̄ (H, N), C_r (dir, H, N): bilinear Ā = (I - Δ/2 A)^{-1}(I + Δ/2 A),
        B̄ = (I - Δ/2 A)^{-1} Δ B, with the inverse by Sherman-Morrison (real arithmetic only)."""
        dt = torch.exp(self.log_dt)
        lam_re, lam_im = -torch.exp(self.log_A_real), self.A_imag
        g_re, g_im = 1 - dt[:, None] / 2 * lam_re, -dt[:, None] / 2 * lam_im  # g = 1 - Δ/2 Λ per mode
        norm = g_re * g_re + g_im * g_im
        g_inv = _complex_block(g_re / norm, -g_im / norm)  # (I - Δ/2 Λ)^{-1}
        q = torch.cat([self.P[..., 0], self.P[..., 1]], dim=-1)
        left = (g_inv @ q[..., None]).squeeze(-1)
        right = (q[:, None, :] @ g_inv).squeeze(1)
        scale = dt / (1 + dt * (q * left).sum(-1))
        m_inv = g_inv - scale[:, None, None] * left[:, :, None] * right[:, None, :]
        eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
        b_r = torch.cat([self.B[..., 0], self.B[..., 1]], dim=-1)
        c_r = torch.cat([2 * self.C[..., 0], -2 * self.C[..., 1]], dim=-1)
        return 2 * m_inv - eye, dt[:, None] * (m_inv @ b_r[..., None]).squeeze(-1), c_r

    # -- kernels ---------------------------------------------------------------------------
    def kernel(self, L: int) -> Tensor:
        """K (dir, H, L) from the Cauchy kernel + Woodbury at the L-th roots of unity."""
        abar, _, c_r = self.discrete_real()
        modes = self.A_imag.shape[-1]
        w = c_r - (c_r[..., None, :] @ torch.linalg.matrix_power(abar, L)).squeeze(-2)  # C̃ = C (I - Ā^L)
        c_tilde = torch.complex(w[..., :modes] / 2, -w[..., modes:] / 2)
        lam = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        p, b = torch.view_as_complex(self.P.contiguous()), torch.view_as_complex(self.B.contiguous())
        k = torch.arange(L // 2 + 1, device=lam.device, dtype=self.log_dt.dtype)
        omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / L).to(c_tilde.dtype)
        left = torch.stack([b, p])  # B and P
        right = torch.cat([c_tilde, p.conj()[None]])  # C̃ (each direction) and Q = P*
        v = left[:, None] * right[None]  # (2, dir+1, H, modes)
        # Σ_n v R(λ) + conj(v) R(conj λ), R = the bilinear resolvent at ω: in chunks (layers/cauchy.py)
        r = cauchy_kernel(v, lam, torch.exp(self.log_dt), omega)
        h = (1 + omega) / 2
        directions = c_tilde.shape[0]
        k00, k01 = r[0, :directions], r[1, :directions]
        k10, k11 = r[0, directions:], r[1, directions:]
        return torch.fft.irfft(k00 - h * k01 * k10 / (1 + h * k11), n=L)

    def export_kernel(self, L: int) -> Tensor:
        """K (dir, H, L) as the Krylov sequence C Ā^l B̄ through the dense recurrence (real,
        loop-free under export)."""
        abar, bbar, c_r = self.discrete_real()
        impulse = torch.cat([bbar[None, None], bbar.new_zeros(1, L - 1, *bbar.shape)], dim=1)
        powers = lti_recurrence(abar, impulse)[0]  # (L, H, N): Ā^l B̄
        return torch.einsum("dhn,lhn->dhl", c_r, powers)

    # -- recurrence ------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        H, modes = self.A_imag.shape
        return (torch.zeros(batch_size, H, 2 * modes, device=device, dtype=dtype),)

    def step(self, u_t: Tensor, state: State) -> tuple[Tensor, State]:
        abar, bbar, c_r = _discretisation(self, self.discrete_real)
        (s,) = state
        s = (abar @ s[..., None]).squeeze(-1) + bbar * u_t[..., None]
        return (c_r[0] * s).sum(-1), (s,)

    def scan(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        abar, bbar, c_r = _discretisation(self, self.discrete_real)
        s, final = lti_recurrence(abar, u[..., None] * bbar, initial_state=state[0], return_final_state=True)
        return (s * c_r[0]).sum(-1), (final.to(state[0].dtype),)


def _complex_block(re: Tensor, im: Tensor) -> Tensor:
    """(…, n) complex diagonal as the real (…, 2n, 2n) matrix acting on [Re x; Im x]."""
    top = torch.cat([torch.diag_embed(re), torch.diag_embed(-im)], dim=-1)
    bottom = torch.cat([torch.diag_embed(im), torch.diag_embed(re)], dim=-1)
    return torch.cat([top, bottom], dim=-2)

"""Selective scan (Mamba S6) benchmark: ``run(ctx)`` for ``bench/kernels.py``.

Shape of PEERS.md: B = 4, E = 1536 channels, N = 16, input-dependent Δ/B/C, z gate, D skip,
softplus on Δ with a bias; T from 512 to 65,536; float32 and bfloat16; forward and
forward+backward (backward of a random projection of y). Implementations:

* ``triton``  -- seqzoo's kernels;
* ``chunked`` -- the loop-free torch path (relative decays in chunks of 16, torch's scan
  between chunks), where its (B, T, 16, E, N) intermediates fit in memory;
* ``reference`` -- the sequential torch loop, only at small T (about 350 ms forward at
  T = 4096 on an H100);
* ``mamba_ssm`` -- the CUDA ``selective_scan_fn`` of mamba_ssm when it imports (its layout is
  (B, E, T); the transposes are done outside the timed region). flash-linear-attention has
  no Mamba-1 selective scan (its ops take a per-head scalar or vector decay), so it is not
  a peer here.

Bandwidth uses a minimal-bytes model: the forward reads u, Δ, z, B, C once and writes y
once; forward+backward adds reading them and dy again and writing du, dΔ, dz, dB, dC.

On a CPU (no CUDA; ``python bench/kernels.py --ops selective_scan`` on this machine) the
rows are the CPU paths side by side at B = 1, E = 512 (seqzoo's Mamba at d_model 256),
N = 16, T = 1024 and 4096, float32, in one run:

* ``seqzoo`` -- ``selective_scan(impl="auto")``, i.e. what a CPU user gets: the
  sequential reference (:func:`~seqzoo.kernels.selective_scan.selective_scan_ref`);
* (seqzoo's loop-free ``chunked`` path, the export path, is left out on CPU: its pairwise
  in-chunk decays make it ~20x slower than the reference there -- 16 s forward at T = 1024);
* ``mambapy-pscan`` -- mambapy's ``selective_scan`` (its Blelloch ``pscan`` over
  (B, L, E, N) tensors), with the same softplus(Δ + bias) before and z gate after;
* ``mamba_ssm-ref`` -- mamba_ssm's pure-torch ``selective_scan_ref`` (layout (B, E, T),
  transposed outside the timing). mamba_ssm's module imports its CUDA extension
  unconditionally, so without CUDA the function is loaded from the installed module's
  source file alone (:func:`_mamba_ssm_ref`); nothing of it is copied into seqzoo. Its
  forward+backward only at T = 1024: autograd through its per-step slices of (B, E, T, N)
  tensors is quadratic in T (5 s at T = 256 already).

The note column gives each row's time relative to mambapy's (< 1: faster than mambapy).
``--smoke`` runs tiny shapes on CPU (Triton under the interpreter).
"""

from __future__ import annotations

import torch

from seqzoo.kernels.selective_scan import selective_scan, selective_scan_chunked, selective_scan_ref

OP = "selective_scan"
LENGTHS = (512, 1024, 4096, 16384, 65536)
REFERENCE_MAX_T = {"fwd": 4096, "fwd+bwd": 1024}
CHUNKED_MAX_BYTES = 24 << 30  # skip the loop-free path beyond this estimate of its intermediates


def run(ctx) -> None:
    if ctx.device.type == "cpu" and not ctx.smoke:
        return run_cpu(ctx)
    if ctx.smoke:
        batch, E, N, lengths, dtypes = 1, 2, 4, (24,), (torch.float32,)
    else:
        batch, E, N, lengths, dtypes = 4, 1536, 16, LENGTHS, (torch.float32, torch.bfloat16)
    peer = _mamba_ssm()
    for dtype in dtypes:
        for T in lengths:
            if not ctx.smoke and not ctx.wants(T, dtype):
                continue
            x = _inputs(batch, T, E, N, dtype, ctx.device)
            shape = f"B={batch} T={T} E={E} N={N}"
            for mode in ("fwd", "fwd+bwd"):
                nbytes = _min_bytes(batch, T, E, N, dtype, mode)
                impls = {"triton": (lambda x=x: _call(selective_scan, x, impl="triton"), x)}
                if ctx.smoke or _chunked_bytes(batch, T, E, N, mode) <= CHUNKED_MAX_BYTES:
                    impls["chunked"] = (lambda x=x: _call(selective_scan_chunked, x), x)
                if T <= REFERENCE_MAX_T[mode] or ctx.smoke:
                    impls["reference"] = (lambda x=x: _call(selective_scan_ref, x), x)
                if peer is not None and ctx.device.type == "cuda":
                    impls["mamba_ssm"] = _peer(peer, x)
                for impl, (fn, tensors) in impls.items():
                    step = _timed(fn, tensors, mode)
                    ms = ctx.time_ms(step, warmup=1 if ctx.smoke else 5, rep=3 if ctx.smoke else 20)
                    ctx.add(OP, impl, mode, dtype, batch, T, shape, ms, bytes_moved=nbytes)
            if not ctx.smoke and peer is None and dtype == dtypes[0] and T == lengths[0]:
                print("mamba_ssm is not installed: no peer row "
                      "(pip install mamba-ssm, or build it: bench/mamba_ssm_peer.py)")
            del x


CPU_SHAPE = dict(batch=1, E=512, N=16)
CPU_LENGTHS = (1024, 4096)
MAMBA_REF_BWD_MAX_T = 1024  # its backward slices (B, E, T, N) tensors per step: quadratic in T (5 s at T = 256)


def run_cpu(ctx) -> None:
    """The CPU paths side by side (see the module docstring); ratios to mambapy in the notes."""
    batch, E, N = CPU_SHAPE["batch"], CPU_SHAPE["E"], CPU_SHAPE["N"]
    peers = {"mambapy-pscan": _mambapy_scan(), "mamba_ssm-ref": _mamba_ssm_ref()}
    for name, fn in peers.items():
        if fn is None:
            print(f"{name}: not installed, no row (pip install mambapy / mamba-ssm, see docs/benchmarks.md)")
    for T in CPU_LENGTHS:
        x = _inputs(batch, T, E, N, torch.float32, ctx.device)
        shape = f"B={batch} T={T} E={E} N={N}"
        for mode in ("fwd", "fwd+bwd"):
            impls = {"seqzoo": (lambda x=x: _call(selective_scan, x), x)}
            if peers["mambapy-pscan"] is not None:
                impls["mambapy-pscan"] = (lambda x=x: peers["mambapy-pscan"](x), x)
            if peers["mamba_ssm-ref"] is not None and (mode == "fwd" or T <= MAMBA_REF_BWD_MAX_T):
                impls["mamba_ssm-ref"] = _peer(peers["mamba_ssm-ref"], x)
            times = {}
            for impl, (fn, tensors) in impls.items():
                times[impl] = ctx.time_ms(_timed(fn, tensors, mode), warmup=1, rep=15)
            base = times.get("mambapy-pscan")
            for impl, ms in times.items():
                note = f"{ms / base:.2f}x mambapy" if base else ""
                ctx.add(OP, impl, mode, torch.float32, batch, T, shape, ms, note=note)
        del x


def _mambapy_scan():
    """mambapy's selective scan (its ``MambaBlock.selective_scan`` arithmetic around ``pscan``),
    with the softplus(Δ + bias) and z gate that seqzoo's call includes."""
    try:
        from mambapy.pscan import pscan
    except Exception:
        return None

    def scan(x):
        delta = torch.nn.functional.softplus(x["delta"] + x["delta_bias"])
        delta_a = torch.exp(delta.unsqueeze(-1) * x["A"])  # (B, L, E, N)
        bx = (delta * x["u"]).unsqueeze(-1) * x["B"].unsqueeze(2)  # Δ B u: (B, L, E, N)
        hs = pscan(delta_a, bx)
        y = (hs @ x["C"].unsqueeze(-1)).squeeze(3) + x["D"] * x["u"]
        return y * torch.nn.functional.silu(x["z"])

    return scan


def _mamba_ssm_ref():
    """mamba_ssm's ``selective_scan_ref``. Its module imports the CUDA extension
    ``selective_scan_cuda`` unconditionally, so on a machine without it the function's own
    source is read from the installed file and run with the names it uses (torch, F,
    einops); None when mamba_ssm or einops is not installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
        return selective_scan_ref
    except ImportError:
        pass
    import ast
    import importlib.util

    try:
        import einops
    except ImportError:
        return None
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None or not spec.submodule_search_locations:
        return None
    from pathlib import Path

    path = Path(list(spec.submodule_search_locations)[0]) / "ops" / "selective_scan_interface.py"
    tree = ast.parse(path.read_text())
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "selective_scan_ref"), None)
    if fn is None:
        return None
    namespace = {"torch": torch, "F": torch.nn.functional, "rearrange": einops.rearrange, "repeat": einops.repeat}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["selective_scan_ref"]


def _inputs(batch, T, E, N, dtype, device) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(device=device, dtype=dtype)

    A_log = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1)
    return {
        "u": rand(batch, T, E), "delta": rand(batch, T, E, shift=-2.0), "z": rand(batch, T, E),
        "B": rand(batch, T, N), "C": rand(batch, T, N),
        "A": (-torch.exp(A_log)).to(device), "D": torch.ones(E, device=device),
        "delta_bias": (torch.rand(E, generator=g) * 0.5).to(device),
    }


def _call(fn, x, **kw):
    return fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], delta_bias=x["delta_bias"],
              delta_softplus=True, **kw)


def _timed(fn, tensors, mode):
    """A callable running one forward, or one forward and backward, of ``fn`` (whose inputs
    are ``tensors``): the backward of a random projection of y, to u, Δ, z, B and C."""
    if mode == "fwd":
        def forward():
            with torch.no_grad():
                fn()
        return forward
    leaves = [tensors[k] for k in ("u", "delta", "z", "B", "C")]
    with torch.no_grad():
        dy = torch.randn_like(fn())

    def forward_backward():
        for t in leaves:
            t.requires_grad_(True)
        y = fn()
        torch.autograd.grad(y, leaves, dy)
        for t in leaves:
            t.requires_grad_(False)

    return forward_backward


def _min_bytes(batch, T, E, N, dtype, mode) -> int:
    size = torch.tensor([], dtype=dtype).element_size()
    forward = (4 * batch * T * E + 2 * batch * T * N) * size  # read u, Δ, z, B, C; write y
    if mode == "fwd":
        return forward
    return forward + (7 * batch * T * E + 4 * batch * T * N) * size  # read u, Δ, z, dy, B, C; write du, dΔ, dz, dB, dC


def _chunked_bytes(batch, T, E, N, mode, chunk=16) -> int:
    pairwise = batch * T * chunk * E * N * 4  # (B, T/K, K, K, E, N) float32 decay weights
    return pairwise * (2 if mode == "fwd" else 6)


def _mamba_ssm():
    """mamba_ssm's CUDA ``selective_scan_fn``: installed, or built by bench/mamba_ssm_peer.py."""
    from mamba_ssm_peer import load_selective_scan_fn

    return load_selective_scan_fn()


def _peer(selective_scan_fn, x):
    """mamba_ssm's layout: u, Δ, z (B, E, T); B, C (B, N, T). Transposed once, outside the timing."""
    t = {k: x[k].transpose(1, 2).contiguous() for k in ("u", "delta", "z", "B", "C")}
    t.update({k: x[k] for k in ("A", "D", "delta_bias")})

    def call():
        return selective_scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
                                 delta_softplus=True)

    return call, t

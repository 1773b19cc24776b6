"""mamba_ssm's CUDA selective scan as a benchmark peer, built from its source release on the
GPU machine (no wheel matches every torch/CUDA pair, and the GPU machines cannot download).

    python bench/mamba_ssm_peer.py SDIST.tar.gz DIR     # build (about 3 minutes on 16 cores)

extracts the release into ``DIR/src``, compiles its ``selective_scan_cuda`` extension for this
GPU's architecture alone into ``DIR/build`` (torch's JIT extension builder with ninja, the
release's own nvcc flags) and writes ``DIR/ready``. ``bench/kernel_selective_scan.py`` then
finds the peer through ``MAMBA_SSM_PEER=DIR`` (:func:`load_selective_scan_fn`). Nothing of
mamba_ssm enters seqzoo: it is timed beside seqzoo's kernel, and only here.
"""

from __future__ import annotations

import os
import sys
import tarfile
import time
import types
from pathlib import Path

SOURCES = ["selective_scan.cpp"] + [f"selective_scan_fwd_{t}.cu" for t in ("fp32", "fp16", "bf16")] + [
    f"selective_scan_bwd_{t}_{k}.cu" for t in ("fp32", "fp16", "bf16") for k in ("real", "complex")]
# The release's setup.py flags (CUDA build), for one architecture.
NVCC_FLAGS = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo"]


def _package_root(src: Path) -> Path:
    """The extracted release's top folder (the one holding ``mamba_ssm/`` and ``csrc/``)."""
    roots = [p.parent for p in src.glob("*/csrc")]
    if not roots:
        raise FileNotFoundError(f"no mamba_ssm source release (a folder with csrc/) under {src}")
    return roots[0]


def build(sdist: str | Path, out: str | Path) -> Path:
    import torch
    from torch.utils.cpp_extension import load

    out = Path(out)
    (out / "build").mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(out / "src", filter="data")
    root = _package_root(out / "src")
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    start = time.perf_counter()
    csrc = root / "csrc" / "selective_scan"
    load(name="selective_scan_cuda", sources=[str(csrc / s) for s in SOURCES], build_directory=str(out / "build"),
         extra_cflags=["-O3", "-std=c++17"],
         extra_cuda_cflags=NVCC_FLAGS + [f"-gencode=arch=compute_{arch},code=sm_{arch}"],
         extra_include_paths=[str(csrc)], verbose=False)
    (out / "ready").write_text(f"sm_{arch} {time.perf_counter() - start:.0f} s\n")
    print(f"built selective_scan_cuda for sm_{arch} in {time.perf_counter() - start:.0f} s -> {out / 'build'}")
    return out


def load_selective_scan_fn(peer_dir: str | Path | None = None):
    """mamba_ssm's ``selective_scan_fn``: from an installed mamba_ssm, else from a folder built
    by :func:`build` (``MAMBA_SSM_PEER``); None when neither imports."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # not installed, or built for another GPU: a build of ours, if any
        return _built_selective_scan_fn(peer_dir or os.environ.get("MAMBA_SSM_PEER"))
    return selective_scan_fn


def _built_selective_scan_fn(peer_dir: str | Path | None):
    """``selective_scan_fn`` from the folder :func:`build` wrote; None when there is none."""
    if not peer_dir or not (Path(peer_dir) / "ready").is_file():
        return None
    peer_dir = Path(peer_dir)
    sys.path.insert(0, str(peer_dir / "build"))  # selective_scan_cuda.so
    # The package's __init__ imports every model (transformers, causal_conv1d, ...): register
    # the package by its path alone, so only the scan's interface module and its imports load.
    package = types.ModuleType("mamba_ssm")
    package.__path__ = [str(_package_root(peer_dir / "src") / "mamba_ssm")]
    sys.modules.setdefault("mamba_ssm", package)
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    return selective_scan_fn


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    build(sys.argv[1], sys.argv[2])

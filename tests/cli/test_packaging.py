"""The wheel: it carries the configs and the kernels, and an install of it (not the clone)
runs ``seqzoo --help`` and finds ``--config forecasting/weather.yaml`` from any directory.

The wheel is built offline (``--no-index --no-build-isolation``) from a copy of the files a
build reads, so the clone gets no ``build/`` or ``*.egg-info``. It is installed with
``--no-deps --no-index`` into a fresh ``venv --system-site-packages``; the dependencies
(torch, Lightning, ...) come from this interpreter's site-packages through a ``.pth`` line
written after the install (so pip never sees the clone's editable install), and the test
checks that ``seqzoo`` itself is imported from the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INPUT"] = "1"
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_wheel_ships_configs_and_kernels_and_runs_outside_the_clone(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "seqzoo", source / "seqzoo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, "."],
         cwd=source)
    (wheel,) = dist.glob("seqzoo-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "seqzoo/configs/forecasting/weather.yaml" in names
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "seqzoo" / "configs").rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
    kernels = {p.relative_to(REPO).as_posix() for p in (REPO / "seqzoo" / "kernels").rglob("*.py")}
    assert "seqzoo/kernels/dispatch.py" in kernels and kernels <= names, sorted(kernels - names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=tmp_path)
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    (Path(purelib.stdout.strip()) / "seqzoo_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    help_text = _run([python, "-m", "seqzoo.cli", "--help"], cwd=elsewhere).stdout
    assert "commands:" in help_text and "  reproduce " in help_text
    probe = _run([python, "-c", "import seqzoo; from seqzoo.run_config import resolve_config_path as r; "
                  "print(seqzoo.__file__); print(r('forecasting/weather.yaml')); "
                  "print(r('configs/forecasting/weather.yaml'))"], cwd=elsewhere).stdout.split()
    installed = Path(probe[0]).resolve()
    assert installed.is_relative_to(venv.resolve()), installed
    assert not installed.is_relative_to(REPO) and not installed.is_relative_to(Path(seqzoo_root()).parent)
    packaged = installed.parent / "configs" / "forecasting" / "weather.yaml"
    assert Path(probe[1]) == Path(probe[2]) == packaged and packaged.is_file()
    data_help = subprocess.run([python, "-m", "seqzoo.cli", "data", "synth", "--help"], cwd=elsewhere,
                               capture_output=True, text=True, timeout=600,
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert data_help.returncode == 0 and "forecasting" in data_help.stdout


def seqzoo_root() -> str:
    """The seqzoo this test process imports (the clone, or the main checkout's editable install)."""
    import seqzoo

    return str(Path(seqzoo.__file__).resolve().parent)


def test_all_extra_covers_every_runtime_extra():
    """``pip install 'seqzoo[all]'`` brings every shipped config's Python needs: every extra
    except the benchmark peers and the test tools."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (spec,) = extras["all"]
    included = set(spec.split("[", 1)[1].rstrip("]").split(","))
    assert included == set(extras) - {"all", "dev", "bench"}
    assert "seqzoo[all]" in extras["dev"]

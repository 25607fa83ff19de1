"""The plugins' CMake configuration (issue 10 items 2 and 5): the default CUDA architectures cover the GPUs a user
can own and survive a second configure in the same build folder; nvcc is found where CUDA installs it when it
is not on PATH (a stock JetPack shell), by CMake and by the build driver alike."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mmad.plugins.selective_scan import build as scan_build

CMAKE = shutil.which("cmake")
DEFAULT_ARCHS = "75-real;80-real;86-real;87-real;89-real;90"  # T4, A100, A10/RTX 30, Orin, L4/RTX 40, H100 + PTX


def _nvcc_outside_path() -> Path | None:
    """A CUDA toolkit's nvcc in one of the places the build looks when PATH has none."""
    found = [Path(d) / "nvcc" for d in scan_build.NVCC_DIRS if (Path(d) / "nvcc").is_file()]
    return found[0] if found else None


NVCC = _nvcc_outside_path()
needs_cuda = pytest.mark.skipif(
    CMAKE is None or NVCC is None, reason=f"needs cmake and nvcc in one of {scan_build.NVCC_DIRS}"
)


def _configure(build_dir: Path, *defines: str, path: str = "/usr/bin:/bin") -> str:
    """cmake -S plugins -B build_dir with PATH = `path` (no nvcc on it) and no CUDA variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDAARCHS", "CUDA_HOME")}
    env["PATH"] = path
    proc = subprocess.run(
        [CMAKE, "-S", str(scan_build.PLUGINS_DIR), "-B", str(build_dir), "-DMMAD_BUILD_TRT_PLUGIN=OFF", *defines],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _architectures(output: str) -> str:
    match = re.search(r"mmad plugins: CUDA \S+, architectures (\S+)", output)
    assert match, output
    return match.group(1)


@needs_cuda
def test_default_architectures_cover_every_gpu_and_survive_a_reconfigure(tmp_path):
    """Without -DCMAKE_CUDA_ARCHITECTURES: the list of DEFAULT_ARCHS, the first time and the second."""
    assert _architectures(_configure(tmp_path)) == DEFAULT_ARCHS
    assert _architectures(_configure(tmp_path)) == DEFAULT_ARCHS
    # A list the caller gives is kept, and kept on the next configure too.
    assert _architectures(_configure(tmp_path / "orin", "-DCMAKE_CUDA_ARCHITECTURES=87")) == "87"
    assert _architectures(_configure(tmp_path / "orin")) == "87"


@needs_cuda
def test_nvcc_off_path_is_found(tmp_path, monkeypatch):
    """PATH without nvcc, as in a stock JetPack shell: CMake still enables CUDA, and the build driver agrees."""
    output = _configure(tmp_path)
    assert "SKIPPED (no CUDA compiler" not in output and _architectures(output)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("CUDACXX", raising=False)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    assert scan_build.find_nvcc() == str(NVCC)
    assert "nvcc" not in (scan_build.tools_available() or "")


def test_build_driver_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(scan_build, "NVCC_DIRS", (str(tmp_path / "no-cuda"),))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDACXX", raising=False)
    assert scan_build.find_nvcc() is None
    missing = scan_build.tools_available()
    assert "cmake (not on PATH)" in missing and "nvcc (not on PATH, in $CUDA_HOME/bin" in missing
    fake = tmp_path / "bin" / "nvcc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert scan_build.find_nvcc() == str(fake)
    monkeypatch.setenv("CUDACXX", str(tmp_path / "missing-nvcc"))
    assert scan_build.find_nvcc() is None  # $CUDACXX wins, and a wrong one is not replaced by a guess

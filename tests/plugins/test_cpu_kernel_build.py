"""The C++ CPU kernel's one build: the CMake target mmad_selective_scan_cpu of plugins/CMakeLists.txt, which the
project configures on a machine without a CUDA compiler, and which mmad.plugins.selective_scan.cpu builds on
first use into its cache (atomically, with clear errors). The numerics of the library it loads are the subject
of test_scan_op.py; here the CMake-built library is checked against the reference directly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mmad.plugins.selective_scan import build as scan_build
from mmad.plugins.selective_scan import cpu, selective_scan_ref
from mmad.plugins.selective_scan.bench_cpu import make_inputs
from mmad.runtime.contract import SCAN_TOL_FP32

needs_cpp = pytest.mark.skipif(not cpu.is_available(), reason=f"C++ scan unavailable: {cpu.unavailable_reason()}")


def _small_problem() -> list[np.ndarray]:
    return [t.float().numpy() for t in make_inputs(2, 16, 33, nstate=16, groups=4, seed=5)]


def _words(text: str) -> str:
    """CMake wraps its messages: compare them with whitespace runs made single spaces."""
    return " ".join(text.split())


def _path_without_nvcc() -> str | None:
    """A PATH with cmake and the C++ compiler but no nvcc; None where they share a folder with nvcc."""
    tools = [shutil.which("cmake"), cpu.find_compiler()]
    if None in tools:
        return None
    folders = list(dict.fromkeys([str(Path(t).parent) for t in tools] + ["/usr/bin", "/bin"]))
    keep = [f for f in folders if not (Path(f) / "nvcc").exists()]
    return os.pathsep.join(keep) if all(str(Path(t).parent) in keep for t in tools) else None


# --- errors before and during the build -------------------------------------------------------------


def test_missing_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cpu.find_compiler() is None
    with pytest.raises(cpu.ScanBuildError, match="no C\\+\\+ compiler"):
        cpu.build_library()


@needs_cpp
def test_missing_cmake_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", cpu.find_compiler())  # an absolute path: found without PATH
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(cpu.ScanBuildError, match="CMake .* not found.*pip install cmake"):
        cpu.build_library()


@needs_cpp
def test_compile_failure_shows_the_compiler_output(monkeypatch, tmp_path):
    """A broken source fails with the tail of the build log, and leaves nothing in the cache."""
    source = tmp_path / "plugins"
    for path in cpu.build_inputs():
        copy = source / path.relative_to(scan_build.PLUGINS_DIR)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
    broken = source / "selective_scan" / cpu.SOURCE_IN_PACKAGE
    broken.write_text('#error "mmad: broken on purpose"\n' + broken.read_text())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(cpu.ScanBuildError, match="cmake build failed") as caught:
        cpu.build_library(source_dir=source)
    assert "mmad: broken on purpose" in str(caught.value)
    assert list((tmp_path / "cache" / "mmad").iterdir()) == []


# --- the build cpu.py runs on first use --------------------------------------------------------------


@needs_cpp
def test_first_use_builds_the_cmake_target_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    configs = []
    real_build = scan_build.build

    def recording_build(cfg):
        configs.append(cfg)
        return real_build(cfg)

    monkeypatch.setattr(scan_build, "build", recording_build)
    path = cpu.build_library()
    assert [(c.targets, c.cuda, c.source_dir) for c in configs] == [
        ((scan_build.CPU_LIBRARY,), "OFF", scan_build.PLUGINS_DIR)
    ]
    assert path.parent == tmp_path / "mmad" and cpu.open_library(path).mmad_scan_max_state() == 256
    assert cpu.build_library() == path and len(configs) == 1  # cached: not built again


@needs_cpp
def test_concurrent_builds_share_one_library(monkeypatch, tmp_path):
    """Two builds racing into an empty cache both succeed and leave one library, no temporaries."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    paths, errors = [], []

    def build():
        try:
            paths.append(cpu.build_library())
        except Exception as exc:  # collected and reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert paths[0] == paths[1] and paths[0].parent == tmp_path / "mmad"
    assert [p.name for p in (tmp_path / "mmad").iterdir()] == [paths[0].name]


# --- the CMake project itself ------------------------------------------------------------------------


def _cmake(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["cmake", *args], capture_output=True, text=True, env=env, check=False)


def test_cmake_builds_the_cpu_kernel_without_a_cuda_compiler(tmp_path):
    """AUTO with no nvcc: the CUDA parts are skipped, plainly said; the CPU target builds with the flags
    cpu.py always used, and is linked without -ffast-math (no crtfastmath.o)."""
    path = _path_without_nvcc()
    if path is None:
        pytest.skip("needs cmake and a C++ compiler in folders without nvcc")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDA_HOME", "CXXFLAGS", "LDFLAGS")}
    env["PATH"] = path
    source = str(scan_build.PLUGINS_DIR)
    # The project also looks for nvcc in CUDA's usual folders: hide them too.
    hidden = "-DCMAKE_IGNORE_PATH=/usr/local/cuda/bin;/opt/cuda/bin"
    compiler = f"-DCMAKE_CXX_COMPILER={cpu.find_compiler()}"
    configure = _cmake("-S", source, "-B", str(tmp_path), compiler, hidden, env=env)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    assert "are SKIPPED (no CUDA compiler" in _words(configure.stderr)
    makefile = (tmp_path / "Makefile").read_text()
    assert scan_build.CPU_LIBRARY in makefile and scan_build.HARNESS not in makefile
    built = _cmake("--build", str(tmp_path), "-v", "--target", scan_build.CPU_LIBRARY, env=env)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    compile_line = next(ln for ln in built.stdout.splitlines() if " -c " in ln and "selective_scan_cpu.cpp" in ln)
    link_line = next(ln for ln in built.stdout.splitlines() if " -shared " in ln)
    for flag in ("-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-std=c++17"):
        assert re.search(rf"(^|\s){re.escape(flag)}(\s|$)", compile_line), (flag, compile_line)
    assert "-fopenmp" in link_line and "fast-math" not in link_line, link_line
    assert scan_build.library_file(tmp_path / scan_build.OUTPUT_SUBDIR, scan_build.CPU_LIBRARY).is_file()

    forced = _cmake("-S", source, "-B", str(tmp_path / "on"), "-DMMAD_BUILD_CUDA=ON", hidden, env=env)
    assert forced.returncode != 0 and "MMAD_BUILD_CUDA=ON but no CUDA compiler" in _words(forced.stderr)


@needs_cpp
def test_cmake_built_library_matches_the_reference(tmp_path):
    """The library of a plain CMake build (as plugins/README.md shows) against the float64 reference."""
    cfg = scan_build.BuildConfig(
        tmp_path, cuda_archs=None, cuda="OFF", targets=(scan_build.CPU_LIBRARY,), cxx=cpu.find_compiler()
    )
    out, _ = scan_build.build(cfg)
    lib = cpu.open_library(scan_build.library_file(out, scan_build.CPU_LIBRARY))
    x = _small_problem()
    y = cpu.scan_forward(*x, library=lib)
    ref = selective_scan_ref(*(torch.from_numpy(a).double() for a in x)).numpy()
    assert np.abs(y - ref).max() / np.abs(ref).max() <= SCAN_TOL_FP32
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    for mine, loaded in zip(cpu.scan_backward(*x, dy, library=lib), cpu.scan_backward(*x, dy)):
        assert np.allclose(mine, loaded, rtol=1e-5, atol=1e-6)

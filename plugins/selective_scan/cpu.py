"""The fast CPU selective scan: native/cpu/selective_scan_cpu.cpp, built once with CMake and called through ctypes.

Torch-free (numpy in, numpy out) so that export checks and host tools can reuse it. Shapes are the
op contract's (README.md beside this file):
    u, delta      [B, D, L]      float16 / float32 / float64
    A             [D, N]
    B, C          [B, G, N, L]   channel d uses group g = d // (D // G)
    D, delta_bias [D]
    y             [B, D, L]      dtype of u
float16 is computed in float32 (the contract's state type) and cast back; float64 runs the double
instantiation, which the tests use for gradcheck.

On first use the library is built from the plugins' one CMake project (target mmad_selective_scan_cpu, its
flags in plugins/selective_scan/CMakeLists.txt; the CUDA parts are switched off) with the system C++ compiler,
and cached under $XDG_CACHE_HOME/mmad (default ~/.cache/mmad), keyed by a hash of the source, the CMake files,
the compiler and the CPU (the build uses -march=native, so a cache shared between machines must not mix them).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmad.plugins.selective_scan import build as scan_build
from mmad.runtime.contract import SCAN_INPUTS

SOURCE_IN_PACKAGE = Path("native", "cpu", "selective_scan_cpu.cpp")
SOURCE = Path(__file__).parent / SOURCE_IN_PACKAGE
COMPILERS = ("c++", "g++", "clang++")
_ABI_VERSION = 1  # must match mmad_scan_abi_version() in the .cpp
_BUILD_TIMEOUT_S = 600
_STATUS_MESSAGES = {
    1: "bad sizes (negative, or G not dividing D)",
    2: "N is larger than the kernel's maximum state size (mmad_scan_max_state())",
    3: "out of memory for the scan's work buffers",
}


class ScanBuildError(RuntimeError):
    """The C++ scan could not be built or loaded (no compiler or CMake, a failed build, a bad cache)."""


class ScanSizes(NamedTuple):
    batch: int
    dim: int
    length: int
    nstate: int
    groups: int


class ScanGrads(NamedTuple):
    """Gradients of the scan, each shaped and typed like its input."""

    du: np.ndarray
    ddelta: np.ndarray
    dA: np.ndarray
    dB: np.ndarray
    dC: np.ndarray
    dD: np.ndarray
    ddelta_bias: np.ndarray


# --- building and loading ------------------------------------------------------------------------


def find_compiler() -> str | None:
    """$CXX if set and found, else the first of c++, g++, clang++ on PATH."""
    candidates = ([os.environ["CXX"]] if os.environ.get("CXX") else []) + list(COMPILERS)
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "mmad"


def _compiler_version(cxx: str) -> str:
    try:
        done = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ScanBuildError(f"selective_scan: cannot run the C++ compiler {cxx}: {exc}") from exc
    return done.stdout


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    wanted = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    first = {ln.split(":")[0].strip(): ln for ln in reversed(wanted)}
    return platform.machine() + "|" + platform.processor() + "|" + "|".join(sorted(first.values()))


def build_inputs(source_dir: Path = scan_build.PLUGINS_DIR) -> list[Path]:
    """The files the CPU target's build reads: its source and every CMake file of the project (those the
    op's CMakeLists includes from native/ too, which configuring reads whatever is built)."""
    scan_dir = source_dir / "selective_scan"
    return [
        source_dir / "CMakeLists.txt",
        *sorted((source_dir / "cmake").glob("*.cmake")),
        scan_dir / "CMakeLists.txt",
        *sorted((scan_dir / "native").rglob("*.cmake")),
        scan_dir / SOURCE_IN_PACKAGE,
    ]


def library_path(cxx: str, source_dir: Path = scan_build.PLUGINS_DIR) -> Path:
    """Where the library built by `cxx` from the current sources lives in the cache."""
    key = hashlib.sha256()
    for path in build_inputs(source_dir):
        key.update(path.relative_to(source_dir).as_posix().encode() + b"\0" + path.read_bytes())
        key.update(b"\0")
    for part in (cxx, _compiler_version(cxx), _cpu_signature()):
        key.update(part.encode())
        key.update(b"\0")
    return cache_dir() / f"selective_scan_cpu-{key.hexdigest()[:20]}.so"


def _cpu_build_config(build_dir: Path, cxx: str, source_dir: Path) -> scan_build.BuildConfig:
    """The CPU target alone, with exactly the project's flags: CUDA off, none of $CXXFLAGS / $LDFLAGS."""
    return scan_build.BuildConfig(
        build_dir,
        cuda_archs=None,
        cuda="OFF",
        trt_plugin="OFF",
        targets=(scan_build.CPU_LIBRARY,),
        jobs=1,
        cxx=cxx,
        defines={"CMAKE_CXX_FLAGS": "", "CMAKE_SHARED_LINKER_FLAGS": ""},
        source_dir=source_dir,
        timeout=_BUILD_TIMEOUT_S,
    )


def build_library(cxx: str | None = None, source_dir: Path | None = None) -> Path:
    """Build the CMake target mmad_selective_scan_cpu unless the cache already holds it; returns the .so path.

    Concurrent builds are safe (scan_build.build_cached).
    """
    source_dir = Path(source_dir or scan_build.PLUGINS_DIR)
    cxx = cxx or find_compiler()
    if cxx is None:
        raise ScanBuildError(
            "selective_scan: no C++ compiler found (tried $CXX, " + ", ".join(COMPILERS) + "); install one "
            "(e.g. apt-get install g++) or use backend='reference'"
        )
    target = library_path(cxx, source_dir)
    if target.exists():
        return target
    if scan_build.find_cmake() is None:
        raise ScanBuildError(
            "selective_scan: CMake (>= 3.18) not found on PATH; the C++ CPU kernel is built with it: "
            f"{scan_build.CMAKE_INSTALL_HINT}, or use backend='reference'"
        )
    try:
        return scan_build.build_cached(
            target, scan_build.CPU_LIBRARY, lambda workdir: _cpu_build_config(workdir, cxx, source_dir)
        )
    except scan_build.CacheNotWritable as exc:
        raise ScanBuildError(f"selective_scan: {exc}") from exc
    except scan_build.BuildError as exc:
        raise ScanBuildError(f"selective_scan: building the C++ CPU kernel ({SOURCE.name}) failed: {exc}") from exc


def _declare(lib: ctypes.CDLL) -> None:
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    sizes = [i64] * 5 + [i32, i32]  # B, D, L, N, G, delta_softplus, n_threads
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"mmad_scan_fwd_{suffix}")
        fwd.argtypes = [ptr] * 8 + sizes
        fwd.restype = i32
        bwd = getattr(lib, f"mmad_scan_bwd_{suffix}")
        bwd.argtypes = [ptr] * 15 + sizes
        bwd.restype = i32
    lib.mmad_scan_abi_version.restype = i32
    lib.mmad_scan_max_state.restype = i32


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None


def open_library(path: Path | str) -> ctypes.CDLL:
    """Load a built mmad_selective_scan_cpu library and check its ABI; raises ScanBuildError."""
    try:
        lib = ctypes.CDLL(str(path))
        _declare(lib)
    except (OSError, AttributeError) as exc:
        raise ScanBuildError(f"selective_scan: cannot load the library: {exc}") from exc
    if lib.mmad_scan_abi_version() != _ABI_VERSION:
        raise ScanBuildError(
            f"selective_scan: {path} has ABI {lib.mmad_scan_abi_version()}, expected {_ABI_VERSION}; "
            "delete it to rebuild"
        )
    return lib


def load_library() -> ctypes.CDLL:
    """Build (once per source/CMake files/compiler/CPU) and load the library; raises ScanBuildError."""
    global _lib, _error
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:
            raise ScanBuildError(_error)
        try:
            lib = open_library(build_library())
        except (ScanBuildError, OSError) as exc:
            _error = str(exc) if isinstance(exc, ScanBuildError) else f"selective_scan: cannot build the library: {exc}"
            raise ScanBuildError(_error) from exc
        _lib = lib
        return lib


def is_available() -> bool:
    """True when the C++ path is built (building it now if needed) and loadable."""
    try:
        load_library()
    except ScanBuildError:
        return False
    return True


def unavailable_reason() -> str | None:
    """Why is_available() is False (None while it is True or not yet asked)."""
    return _error


def default_threads() -> int:
    """The CPUs this process may run on (os.cpu_count() where affinity is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --- numpy-level op -------------------------------------------------------------------------------


def scan_sizes(u, delta, A, B, C, D, delta_bias) -> ScanSizes:
    """Check the contract's shapes (on anything with .shape); returns (B, D, L, N, G)."""
    shape = {name: tuple(x.shape) for name, x in zip(SCAN_INPUTS, (u, delta, A, B, C, D, delta_bias))}
    if len(shape["u"]) != 3:
        raise ValueError(f"selective_scan: u must be [B, D, L], got {shape['u']}")
    b, d, length = shape["u"]
    if shape["delta"] != shape["u"]:
        raise ValueError(f"selective_scan: delta must match u {shape['u']}, got {shape['delta']}")
    if len(shape["A"]) != 2 or shape["A"][0] != d:
        raise ValueError(f"selective_scan: A must be [D={d}, N], got {shape['A']}")
    n = shape["A"][1]
    bs = shape["B"]
    if len(bs) != 4 or bs[0] != b or bs[2] != n or bs[3] != length:
        raise ValueError(f"selective_scan: B must be [B={b}, G, N={n}, L={length}], got {bs}")
    if shape["C"] != bs:
        raise ValueError(f"selective_scan: C must match B {bs}, got {shape['C']}")
    g = bs[1]
    if g == 0 or d % g:
        raise ValueError(f"selective_scan: groups G={g} (dim 1 of B) must divide D={d}")
    for name in ("D", "delta_bias"):
        if shape[name] != (d,):
            raise ValueError(f"selective_scan: {name} must be [D={d}], got {shape[name]}")
    return ScanSizes(b, d, length, n, g)


def _compute_dtype(u: np.ndarray) -> np.dtype:
    if u.dtype == np.float64:
        return np.dtype(np.float64)
    if u.dtype in (np.float32, np.float16):
        return np.dtype(np.float32)
    raise ValueError(f"selective_scan: u must be float16, float32 or float64, got {u.dtype}")


def _grad_dtype(x: np.ndarray, compute: np.dtype) -> np.dtype:
    return x.dtype if np.issubdtype(x.dtype, np.floating) else compute


def _contiguous(arrays, dtype) -> list[np.ndarray]:
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def _check_status(lib: ctypes.CDLL, status: int, what: str, sizes: ScanSizes) -> None:
    if status != 0:
        reason = _STATUS_MESSAGES.get(status, f"status {status}")
        reason = reason.replace("mmad_scan_max_state()", str(lib.mmad_scan_max_state()))
        raise ValueError(f"selective_scan: the C++ {what} refused sizes {sizes._asdict()}: {reason}")


def scan_forward(
    u,
    delta,
    A,
    B,
    C,
    D,
    delta_bias,
    delta_softplus: bool = True,
    n_threads: int | None = None,
    library: ctypes.CDLL | None = None,
) -> np.ndarray:
    """y [B, D, L] (dtype of u) of the selective scan; see the module docstring for shapes.

    library: a library from open_library() to run instead of the one built on first use (load_library()).
    """
    u = np.asarray(u)
    sizes = scan_sizes(u, delta, A, B, C, D, delta_bias)
    dtype = _compute_dtype(u)
    arrays = _contiguous((u, delta, A, B, C, D, delta_bias), dtype)
    y = np.empty(u.shape, dtype=dtype)
    lib = library or load_library()
    fn = lib.mmad_scan_fwd_f64 if dtype == np.float64 else lib.mmad_scan_fwd_f32
    status = fn(
        *(_ptr(a) for a in arrays), _ptr(y), *sizes, int(bool(delta_softplus)), int(n_threads or default_threads())
    )
    _check_status(lib, status, "forward", sizes)
    return y.astype(u.dtype, copy=False)


def scan_backward(
    u,
    delta,
    A,
    B,
    C,
    D,
    delta_bias,
    dy,
    delta_softplus: bool = True,
    n_threads: int | None = None,
    library: ctypes.CDLL | None = None,
) -> ScanGrads:
    """Gradients of sum(y * dy) with respect to the seven inputs; dy is [B, D, L]; library as in scan_forward."""
    inputs = [np.asarray(x) for x in (u, delta, A, B, C, D, delta_bias)]
    sizes = scan_sizes(*inputs)
    if tuple(np.shape(dy)) != inputs[0].shape:
        raise ValueError(f"selective_scan: dy must match u {inputs[0].shape}, got {tuple(np.shape(dy))}")
    dtype = _compute_dtype(inputs[0])
    arrays = _contiguous((*inputs, dy), dtype)
    grads = [np.empty(x.shape, dtype=dtype) for x in inputs]
    lib = library or load_library()
    fn = lib.mmad_scan_bwd_f64 if dtype == np.float64 else lib.mmad_scan_bwd_f32
    status = fn(
        *(_ptr(a) for a in arrays),
        *(_ptr(g) for g in grads),
        *sizes,
        int(bool(delta_softplus)),
        int(n_threads or default_threads()),
    )
    _check_status(lib, status, "backward", sizes)
    return ScanGrads(*(g.astype(_grad_dtype(x, dtype), copy=False) for g, x in zip(grads, inputs)))

"""The fast CPU selective scan: selective_scan_cpu.cpp, compiled once and called through ctypes.

Torch-free (numpy in, numpy out) so that export checks and host tools can reuse it. Shapes are the
contract's (shared/docs/SELECTIVE_SCAN_OP.md):
    u, delta      [B, D, L]      float16 / float32 / float64
    A             [D, N]
    B, C          [B, G, N, L]   channel d uses group g = d // (D // G)
    D, delta_bias [D]
    y             [B, D, L]      dtype of u
float16 is computed in float32 (the contract's state type) and cast back; float64 runs the double
instantiation, which the tests use for gradcheck.

The library is built with the system C++ compiler on first use and cached under
$XDG_CACHE_HOME/mmad (default ~/.cache/mmad), keyed by a hash of the source, the flags, the compiler
and the CPU (the build uses -march=native, so a cache shared between machines must not mix them).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

SOURCE = Path(__file__).with_name("selective_scan_cpu.cpp")
CXX_FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-std=c++17")
# Linked separately, without -ffast-math: gcc < 13 would otherwise add crtfastmath.o, whose load-time
# constructor turns on flush-to-zero for the whole Python process.
LINK_FLAGS = ("-shared", "-fopenmp")
COMPILERS = ("c++", "g++", "clang++")
_ABI_VERSION = 1  # must match mmad_scan_abi_version() in the .cpp
_STATUS_MESSAGES = {
    1: "bad sizes (negative, or G not dividing D)",
    2: "N is larger than the kernel's maximum state size (mmad_scan_max_state())",
    3: "out of memory for the scan's work buffers",
}


class ScanBuildError(RuntimeError):
    """The C++ scan could not be compiled or loaded (no compiler, a failed build, a bad cache)."""


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


def library_path(cxx: str) -> Path:
    """Where the library built by `cxx` from the current source lives in the cache."""
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(CXX_FLAGS + LINK_FLAGS).encode(),
        cxx.encode(),
        _compiler_version(cxx).encode(),
        _cpu_signature().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"selective_scan_cpu-{key.hexdigest()[:20]}.so"


def build_library(cxx: str | None = None) -> Path:
    """Compile the .cpp unless the cache already holds it; returns the .so path.

    Two processes may compile at once: each writes its own temporary file and renames it into place
    (atomic on POSIX), so a reader never sees a half-written library.
    """
    cxx = cxx or find_compiler()
    if cxx is None:
        raise ScanBuildError(
            "selective_scan: no C++ compiler found (tried $CXX, " + ", ".join(COMPILERS) + "); install one "
            "(e.g. apt-get install g++) or use backend='reference'"
        )
    target = library_path(cxx)
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise ScanBuildError(
            f"selective_scan: cannot write the build cache {target.parent}: {exc} "
            "(set XDG_CACHE_HOME to a writable folder)"
        ) from exc
    obj = tmp[: -len(".tmp")] + ".o"
    try:
        _run_compiler([cxx, *CXX_FLAGS, "-c", str(SOURCE), "-o", obj])
        _run_compiler([cxx, *LINK_FLAGS, obj, "-o", tmp])
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, obj):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return target


def _run_compiler(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ScanBuildError(f"selective_scan: running {' '.join(command)} failed: {exc}") from exc
    if done.returncode != 0:
        raise ScanBuildError(
            f"selective_scan: building {SOURCE.name} failed (exit {done.returncode}):\n"
            f"$ {' '.join(command)}\n{done.stderr[-4000:]}"
        )


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


def load_library() -> ctypes.CDLL:
    """Build (once per source/flags/compiler/CPU) and load the library; raises ScanBuildError."""
    global _lib, _error
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:
            raise ScanBuildError(_error)
        try:
            path = build_library()
            lib = ctypes.CDLL(str(path))
            _declare(lib)
            if lib.mmad_scan_abi_version() != _ABI_VERSION:
                raise ScanBuildError(
                    f"selective_scan: {path} has ABI {lib.mmad_scan_abi_version()}, "
                    f"expected {_ABI_VERSION}; delete it to rebuild"
                )
        except (ScanBuildError, OSError, AttributeError) as exc:
            _error = str(exc) if isinstance(exc, ScanBuildError) else f"selective_scan: cannot load the library: {exc}"
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
    shape = {
        name: tuple(x.shape)
        for name, x in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), (u, delta, A, B, C, D, delta_bias))
    }
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


def _check_status(status: int, what: str, sizes: ScanSizes) -> None:
    if status != 0:
        reason = _STATUS_MESSAGES.get(status, f"status {status}")
        reason = reason.replace("mmad_scan_max_state()", str(load_library().mmad_scan_max_state()))
        raise ValueError(f"selective_scan: the C++ {what} refused sizes {sizes._asdict()}: {reason}")


def scan_forward(
    u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True, n_threads: int | None = None
) -> np.ndarray:
    """y [B, D, L] (dtype of u) of the selective scan; see the module docstring for shapes."""
    u = np.asarray(u)
    sizes = scan_sizes(u, delta, A, B, C, D, delta_bias)
    dtype = _compute_dtype(u)
    arrays = _contiguous((u, delta, A, B, C, D, delta_bias), dtype)
    y = np.empty(u.shape, dtype=dtype)
    lib = load_library()
    fn = lib.mmad_scan_fwd_f64 if dtype == np.float64 else lib.mmad_scan_fwd_f32
    status = fn(
        *(_ptr(a) for a in arrays), _ptr(y), *sizes, int(bool(delta_softplus)), int(n_threads or default_threads())
    )
    _check_status(status, "forward", sizes)
    return y.astype(u.dtype, copy=False)


def scan_backward(
    u, delta, A, B, C, D, delta_bias, dy, delta_softplus: bool = True, n_threads: int | None = None
) -> ScanGrads:
    """Gradients of sum(y * dy) with respect to the seven inputs; dy is [B, D, L]."""
    inputs = [np.asarray(x) for x in (u, delta, A, B, C, D, delta_bias)]
    sizes = scan_sizes(*inputs)
    if tuple(np.shape(dy)) != inputs[0].shape:
        raise ValueError(f"selective_scan: dy must match u {inputs[0].shape}, got {tuple(np.shape(dy))}")
    dtype = _compute_dtype(inputs[0])
    arrays = _contiguous((*inputs, dy), dtype)
    grads = [np.empty(x.shape, dtype=dtype) for x in inputs]
    lib = load_library()
    fn = lib.mmad_scan_bwd_f64 if dtype == np.float64 else lib.mmad_scan_bwd_f32
    status = fn(
        *(_ptr(a) for a in arrays),
        *(_ptr(g) for g in grads),
        *sizes,
        int(bool(delta_softplus)),
        int(n_threads or default_threads()),
    )
    _check_status(status, "backward", sizes)
    return ScanGrads(*(g.astype(_grad_dtype(x, dtype), copy=False) for g, x in zip(grads, inputs)))

"""The SelectiveScan op's OpenVINO extension (native/openvino/): built with CMake on first use, then located.

    from mmad.plugins.selective_scan import openvino_ext
    core.add_extension(str(openvino_ext.extension_library()))   # then core.read_model("model.onnx") reads the op

    python -m mmad.plugins.selective_scan.openvino_ext           # build (if needed) and print the library's path

Torch-free. The extension is the CMake target mmad_openvino_extension of the plugins' one project
(native/openvino/openvino_extension.cmake): the op's shape and type checks and an evaluate() that runs the C++ CPU
kernel (native/cpu/selective_scan_cpu.cpp, compiled in) on OpenVINO's own threads. It builds against the C++ headers
and the CMake package that the openvino wheel ships (<site-packages>/openvino/cmake), with the system C++ compiler,
and is cached under $XDG_CACHE_HOME/mmad (default ~/.cache/mmad) like the CPU kernel (cpu.py), keyed by a hash of
the sources, the CMake files, the compiler, the CPU (-march=native) and the OpenVINO version it was built for (an
extension only loads into the OpenVINO release whose headers it was compiled with).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from mmad.plugins.selective_scan import build as scan_build
from mmad.plugins.selective_scan import cpu

TARGET = "mmad_openvino_extension"
SOURCES_IN_PACKAGE = Path("native", "openvino")
INSTALL_HINT = "pip install openvino"
_BUILD_TIMEOUT_S = 900


class ExtensionUnavailable(RuntimeError):
    """The OpenVINO extension cannot be built or found: no openvino package, CMake, compiler, or a failed build."""


def openvino_version() -> str:
    """The installed OpenVINO's version; ExtensionUnavailable naming the fix when it is not installed."""
    try:
        import openvino
    except ImportError:
        raise ExtensionUnavailable(
            f"the SelectiveScan OpenVINO extension needs the openvino package: {INSTALL_HINT}"
        ) from None
    return openvino.__version__


def openvino_cmake_dir() -> Path:
    """OpenVINO's CMake package (OpenVINOConfig.cmake): $OpenVINO_DIR, else the one in the openvino wheel."""
    version = openvino_version()
    given = os.environ.get("OpenVINO_DIR")
    if given:
        folder = Path(given)
    else:
        import openvino

        folder = Path(openvino.__file__).parent / "cmake"
    if not (folder / "OpenVINOConfig.cmake").is_file():
        raise ExtensionUnavailable(
            f"OpenVINO {version} has no CMake package at {folder} (no OpenVINOConfig.cmake), which building the "
            f"SelectiveScan extension needs: install OpenVINO from PyPI ({INSTALL_HINT}) or set OpenVINO_DIR to the "
            "folder of OpenVINOConfig.cmake of this OpenVINO"
        )
    return folder


def build_inputs(source_dir: Path = scan_build.PLUGINS_DIR) -> list[Path]:
    """The files the extension's build reads: the CPU kernel's (its source and every CMake file) and native/openvino."""
    native = source_dir / "selective_scan" / SOURCES_IN_PACKAGE
    return cpu.build_inputs(source_dir) + sorted(p for p in native.iterdir() if p.is_file())


def library_path(cxx: str, source_dir: Path = scan_build.PLUGINS_DIR) -> Path:
    """Where the extension built by `cxx` from the current sources, for the installed OpenVINO, lives in the cache."""
    key = hashlib.sha256()
    for path in build_inputs(source_dir):
        key.update(path.relative_to(source_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    # The compiler and CPU as the CPU kernel's cache key has them (-march=native), and the OpenVINO release.
    for part in (cxx, cpu._compiler_version(cxx), cpu._cpu_signature(), openvino_version()):
        key.update(part.encode() + b"\0")
    return cpu.cache_dir() / f"openvino_extension-{key.hexdigest()[:20]}.so"


def _build_config(build_dir: Path, cxx: str, source_dir: Path, cmake_dir: Path) -> scan_build.BuildConfig:
    """The extension's target alone, with exactly the project's flags: CUDA off, none of $CXXFLAGS / $LDFLAGS."""
    return scan_build.BuildConfig(
        build_dir,
        cuda_archs=None,
        cuda="OFF",
        trt_plugin="OFF",
        targets=(TARGET,),
        jobs=2,
        cxx=cxx,
        defines={
            "CMAKE_CXX_FLAGS": "",
            "CMAKE_SHARED_LINKER_FLAGS": "",
            "MMAD_BUILD_OPENVINO_EXT": "ON",
            "OpenVINO_DIR": str(cmake_dir),
        },
        source_dir=source_dir,
        timeout=_BUILD_TIMEOUT_S,
    )


def _tools(source_dir: Path) -> tuple[str, Path]:
    """(the C++ compiler, OpenVINO's CMake folder), or ExtensionUnavailable naming what to install."""
    cmake_dir = openvino_cmake_dir()
    cxx = cpu.find_compiler()
    if cxx is None:
        raise ExtensionUnavailable(
            "building the SelectiveScan OpenVINO extension needs a C++ compiler (tried $CXX, "
            + ", ".join(cpu.COMPILERS)
            + "): install one (e.g. apt-get install g++), or use the portable graph"
        )
    if scan_build.find_cmake() is None:
        raise ExtensionUnavailable(
            "building the SelectiveScan OpenVINO extension needs CMake (>= 3.18) on PATH: "
            f"{scan_build.CMAKE_INSTALL_HINT}, or use the portable graph"
        )
    return cxx, cmake_dir


def build_extension(source_dir: Path | None = None) -> Path:
    """Build the extension unless the cache already holds it; returns the .so path (ExtensionUnavailable if not).

    Concurrent builds are safe (scan_build.build_cached).
    """
    source_dir = Path(source_dir or scan_build.PLUGINS_DIR)
    cxx, cmake_dir = _tools(source_dir)
    target = library_path(cxx, source_dir)
    try:
        return scan_build.build_cached(
            target, TARGET, lambda workdir: _build_config(workdir, cxx, source_dir, cmake_dir)
        )
    except scan_build.CacheNotWritable as exc:
        raise ExtensionUnavailable(str(exc)) from exc
    except scan_build.BuildError as exc:
        raise ExtensionUnavailable(f"building the SelectiveScan OpenVINO extension failed: {exc}") from exc


_lock = threading.Lock()
_built: Path | None = None


def extension_library() -> Path:
    """The extension for this OpenVINO, built once per process (and once per source/compiler/CPU/OpenVINO on disk)."""
    global _built
    with _lock:
        if _built is None or not _built.exists():
            _built = build_extension()
        return _built


def main() -> None:
    print(extension_library())


if __name__ == "__main__":
    main()

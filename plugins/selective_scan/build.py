"""Configure and build plugins/ with CMake, the op's one native build: used by the C++ CPU kernel's first-use
build (cpu.py), the tests, the GPU check and the benchmark.

    python -m mmad.plugins.selective_scan.build --build-dir plugins/build --archs 90
    python -m mmad.plugins.selective_scan.build --build-dir plugins/build --cuda OFF --targets mmad_selective_scan_cpu

Torch-free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PLUGINS_DIR = Path(__file__).resolve().parents[1]
OUTPUT_SUBDIR = "selective_scan"  # where every target lands inside the build folder
CPU_LIBRARY = "mmad_selective_scan_cpu"
HARNESS = "selective_scan_host_harness"
CUDA_LIBRARY = "mmad_selective_scan"
TRT_LIBRARY = "mmad_trt_plugins"
PROBE = "mmad_plugin_probe"
FAKE_NVINFER = "mmad_fake_nvinfer"
CMAKE_INSTALL_HINT = "install it (pip install cmake, or apt-get install cmake)"


class BuildError(RuntimeError):
    """CMake or the compiler failed; the message ends with the tail of their output."""


@dataclass
class BuildConfig:
    build_dir: Path
    cuda_archs: str | None = "87"  # CMAKE_CUDA_ARCHITECTURES; one arch keeps CI builds short; None: the default
    trt_plugin: str = "OFF"  # MMAD_BUILD_TRT_PLUGIN: AUTO, ON or OFF
    tensorrt_root: Path | None = None
    targets: tuple[str, ...] = (HARNESS,)
    jobs: int = field(default_factory=lambda: os.cpu_count() or 2)
    build_type: str = "Release"
    cuda: str = "AUTO"  # MMAD_BUILD_CUDA: AUTO, ON or OFF
    cxx: str | None = None  # CMAKE_CXX_COMPILER; None: CMake's choice
    defines: dict[str, str] = field(default_factory=dict)  # further -D cache entries
    source_dir: Path = PLUGINS_DIR
    timeout: float | None = None  # seconds for each CMake step

    def output_dir(self) -> Path:
        return Path(self.build_dir) / OUTPUT_SUBDIR


def library_file(folder: Path, target: str) -> Path:
    """The shared library file CMake makes for `target` in `folder`."""
    return Path(folder) / f"lib{target}.so"


class CacheNotWritable(BuildError):
    """The folder of a build cache entry cannot be made or written."""


def build_cached(target: Path, library: str, config_for: Callable[[Path], BuildConfig]) -> Path:
    """Build the CMake `library` into the cache file `target` unless it is there already; returns `target`.

    Two processes (or threads) may build at once: each builds in its own temporary folder beside the cache entry
    (config_for(that folder)) and renames the library into place (atomic on POSIX), so a reader never sees a
    half-written one. CacheNotWritable when the cache folder cannot be written, BuildError when the build fails.
    """
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=target.stem + ".", suffix=".build", dir=target.parent))
    except OSError as exc:
        raise CacheNotWritable(
            f"cannot write the build cache {target.parent}: {exc} (set XDG_CACHE_HOME to a writable folder)"
        ) from exc
    try:
        out, _ = build(config_for(workdir))
        os.replace(library_file(out, library), target)
    except OSError as exc:
        raise BuildError(str(exc)) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target


def find_cmake() -> str | None:
    return shutil.which("cmake")


# Where a CUDA toolkit's nvcc lives when it is not on PATH (a stock JetPack shell); CMakeLists.txt looks in the
# same places.
NVCC_DIRS = ("/usr/local/cuda/bin", "/opt/cuda/bin")


def find_nvcc() -> str | None:
    """The CUDA compiler the plugins' CMake build will use: $CUDACXX, else nvcc on PATH, else $CUDA_HOME/bin,
    /usr/local/cuda/bin or /opt/cuda/bin; None when there is none."""
    if os.environ.get("CUDACXX"):
        return os.environ["CUDACXX"] if os.access(os.environ["CUDACXX"], os.X_OK) else None
    dirs = [f"{os.environ['CUDA_HOME']}/bin"] if os.environ.get("CUDA_HOME") else []
    return shutil.which("nvcc") or shutil.which("nvcc", path=os.pathsep.join(dirs + list(NVCC_DIRS)))


def tools_available(cuda: bool = True) -> str | None:
    """None when cmake (and, with cuda, a CUDA compiler: find_nvcc()) are found, else what is missing."""
    missing = [] if shutil.which("cmake") else ["cmake (not on PATH)"]
    if cuda and find_nvcc() is None:
        missing.append("nvcc (not on PATH, in $CUDA_HOME/bin, " + ", ".join(NVCC_DIRS) + ", and $CUDACXX unset)")
    return ", ".join(missing) + " not found" if missing else None


def _run(cmd: list[str], what: str, timeout: float | None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"{what} failed ({' '.join(cmd)}): {exc}") from exc
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BuildError(f"{what} failed ({' '.join(cmd)}):\n{output[-4000:]}")
    return output


def configure_command(cfg: BuildConfig) -> list[str]:
    """The `cmake -S ... -B ...` line for cfg."""
    defines = {
        "CMAKE_BUILD_TYPE": cfg.build_type,
        "MMAD_BUILD_CUDA": cfg.cuda,
        "MMAD_BUILD_TRT_PLUGIN": cfg.trt_plugin,
    }
    if cfg.cuda_archs is not None:
        defines["CMAKE_CUDA_ARCHITECTURES"] = cfg.cuda_archs
    if cfg.tensorrt_root is not None:
        defines["TensorRT_ROOT"] = str(cfg.tensorrt_root)
    if cfg.cxx is not None:
        defines["CMAKE_CXX_COMPILER"] = cfg.cxx
    defines.update(cfg.defines)
    return ["cmake", "-S", str(cfg.source_dir), "-B", str(cfg.build_dir), *(f"-D{k}={v}" for k, v in defines.items())]


def build(cfg: BuildConfig) -> tuple[Path, float]:
    """Configure and build cfg.targets; returns (folder of the built files, seconds taken)."""
    start = time.perf_counter()
    _run(configure_command(cfg), "cmake configure", cfg.timeout)
    _run(
        ["cmake", "--build", str(cfg.build_dir), "-j", str(cfg.jobs), "--target", *cfg.targets],
        "cmake build",
        cfg.timeout,
    )
    return cfg.output_dir(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=PLUGINS_DIR / "build", help="CMake build folder")
    parser.add_argument(
        "--archs", default=None, help="CMAKE_CUDA_ARCHITECTURES (default: the project's list, plugins/CMakeLists.txt)"
    )
    parser.add_argument("--cuda", default="AUTO", choices=("AUTO", "ON", "OFF"), help="MMAD_BUILD_CUDA")
    parser.add_argument("--trt-plugin", default="AUTO", choices=("AUTO", "ON", "OFF"), help="MMAD_BUILD_TRT_PLUGIN")
    parser.add_argument("--tensorrt-root", type=Path, default=None, help="TensorRT_ROOT (include/NvInferRuntime.h)")
    parser.add_argument("--targets", nargs="+", default=[HARNESS, CUDA_LIBRARY], help="CMake targets to build")
    args = parser.parse_args()
    cfg = BuildConfig(
        args.build_dir, args.archs, args.trt_plugin, args.tensorrt_root, tuple(args.targets), cuda=args.cuda
    )
    out, seconds = build(cfg)
    print(f"built {', '.join(cfg.targets)} in {out} ({seconds:.1f} s)")


if __name__ == "__main__":
    main()

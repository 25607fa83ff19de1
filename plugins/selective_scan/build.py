"""Configure and build plugins/ with CMake: used by the tests, the GPU path and the benchmark.

    python -m mmad.plugins.selective_scan.build --build-dir plugins/build --archs 90

Torch-free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PLUGINS_DIR = Path(__file__).resolve().parents[1]
HARNESS = "selective_scan_host_harness"
CUDA_LIBRARY = "mmad_selective_scan"
TRT_LIBRARY = "mmad_trt_plugins"
PROBE = "mmad_plugin_probe"
FAKE_NVINFER = "mmad_fake_nvinfer"


class BuildError(RuntimeError):
    """CMake or the compiler failed; the message ends with the tail of their output."""


@dataclass
class BuildConfig:
    build_dir: Path
    cuda_archs: str = "87"  # CMAKE_CUDA_ARCHITECTURES; one arch keeps CI builds short
    trt_plugin: str = "OFF"  # MMAD_BUILD_TRT_PLUGIN: AUTO, ON or OFF
    tensorrt_root: Path | None = None
    targets: tuple[str, ...] = (HARNESS,)
    jobs: int = field(default_factory=lambda: os.cpu_count() or 2)
    build_type: str = "Release"


def tools_available() -> str | None:
    """None when cmake and nvcc are on PATH, else what is missing."""
    missing = [tool for tool in ("cmake", "nvcc") if shutil.which(tool) is None]
    return ", ".join(missing) + " not found on PATH" if missing else None


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BuildError(f"{what} failed ({' '.join(cmd)}):\n{output[-4000:]}")
    return output


def build(cfg: BuildConfig) -> tuple[Path, float]:
    """Configure and build cfg.targets; returns (folder of the built files, seconds taken)."""
    start = time.perf_counter()
    configure = [
        "cmake",
        "-S",
        str(PLUGINS_DIR),
        "-B",
        str(cfg.build_dir),
        f"-DCMAKE_BUILD_TYPE={cfg.build_type}",
        f"-DCMAKE_CUDA_ARCHITECTURES={cfg.cuda_archs}",
        f"-DMMAD_BUILD_TRT_PLUGIN={cfg.trt_plugin}",
    ]
    if cfg.tensorrt_root is not None:
        configure.append(f"-DTensorRT_ROOT={cfg.tensorrt_root}")
    _run(configure, "cmake configure")
    _run(["cmake", "--build", str(cfg.build_dir), "-j", str(cfg.jobs), "--target", *cfg.targets], "cmake build")
    return Path(cfg.build_dir) / "selective_scan", time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=PLUGINS_DIR / "build")
    parser.add_argument("--archs", default="87;90", help="CMAKE_CUDA_ARCHITECTURES")
    parser.add_argument("--trt-plugin", default="AUTO", choices=("AUTO", "ON", "OFF"))
    parser.add_argument("--tensorrt-root", type=Path, default=None)
    parser.add_argument("--targets", nargs="+", default=[HARNESS, CUDA_LIBRARY])
    args = parser.parse_args()
    cfg = BuildConfig(args.build_dir, args.archs, args.trt_plugin, args.tensorrt_root, tuple(args.targets))
    out, seconds = build(cfg)
    print(f"built {', '.join(cfg.targets)} in {out} ({seconds:.1f} s)")


if __name__ == "__main__":
    main()

"""What `mmad bench` measures: BenchConfig, whose fields are the command's options, and the parsing
of their values ("1,4" batch sizes, "1280x720" frame sizes, "pytorch,tensorrt" backends).

    config = BenchConfig(models=["runs/bottle"], report_dir=Path("bench"), batches=(1, 4))
    config.check()                  # ConfigError naming the option that is out of range
    command_line(config)            # the `mmad bench ...` that repeats the run, for the report
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from mmad.runtime.contract import PLUGIN_ENV
from mmad.runtime.errors import ConfigError
from mmad.runtime.options import (
    calib_data_option,
    op_library_option,
    option,
    plugin_library_option,
    threads_option,
)

BACKEND_FAMILIES = ("pytorch", "onnxruntime", "openvino", "tensorrt")
DEFAULT_FRAME_SIZE = (640, 480)  # generated frames when no --images: the stream benchmark's size


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,4' -> (1, 4); ConfigError for anything but positive integers."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(f"--batch {text!r}: expected positive integers separated by commas, e.g. 1,4")
    return values


def parse_frame_size(text: str, flag: str = "--frame-size") -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (width, height); ConfigError naming `flag` for anything else."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    if width < 16 or height < 16:
        raise ConfigError(f"{flag} {text!r}: expected at least 16x16")
    return width, height


def parse_backends(text: str) -> list[str] | None:
    """'pytorch, tensorrt' -> ["pytorch", "tensorrt"]; nothing named: None (every backend available)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names or None


@dataclass
class BenchConfig:
    """What `mmad bench` measures (runtime/bench/__init__.py); each field is the option of that name."""

    models: list[str] = option(
        flag="--model", metavar="MODEL", help="a checkpoint folder and/or exported .onnx / .engine files"
    )
    report_dir: Path = option(
        flag="--report", metavar="DIR", help="folder for report.json, report.md, the plots (and exported models)"
    )
    backends: list[str] | None = option(
        None,
        parse=parse_backends,
        metavar="NAMES",
        help="comma-separated backends or families to run (default: every one available)",
    )
    batches: tuple[int, ...] = option(
        (1,), flag="--batch", parse=parse_batches, metavar="SIZES", help="batch sizes, comma-separated (e.g. 1,4)"
    )
    iters: int = option(30, help="timed iterations per backend and batch size")
    warmup: int = option(5, help="untimed warm-up iterations before them")
    images: str | None = option(
        None,
        metavar="DIR",
        help="a folder of images or a dataset root (MVTec layout; masks are skipped); default: generated frames",
    )
    max_images: int = option(8, help="images used, spread over the folder")
    frame_size: tuple[int, int] | None = option(
        None, parse=parse_frame_size, metavar="WxH", help="resize the images to this camera frame size before timing"
    )
    threads: int | None = threads_option()  # None: the CPUs this process may use
    torch_device: str = option("cpu", help="device of the PyTorch backend: cpu, cuda or auto")
    op_library: str | None = op_library_option()
    plugin_library: str | None = plugin_library_option()
    calib_data: list[str] = calib_data_option()  # `mmad bench` passes --images when none are given
    plots: bool = option(True, help="write the PNG plots (latency_distribution.png, stage_breakdown.png)")
    profile: bool = option(
        False,
        help="also profile each backend (onnxruntime's profiler, OpenVINO's performance counters, PyTorch's "
        "profiler) at the smallest batch: the share of inference time by op type, in the report",
    )
    profile_runs: int = option(5, help="runs profiled per backend with --profile, after one untimed run")

    def check(self) -> None:
        """ConfigError naming the option that is out of range."""
        if not self.models:
            raise ConfigError("--model: give a checkpoint folder or ONNX / engine files")
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"--batch {','.join(map(str, self.batches))}: expected positive integers")
        if self.iters < 1 or self.warmup < 0:
            raise ConfigError(f"--iters {self.iters} / --warmup {self.warmup}: expected iters >= 1, warmup >= 0")
        if self.profile_runs < 1:
            raise ConfigError(f"--profile-runs {self.profile_runs}: expected at least 1")
        if self.max_images < 1:
            raise ConfigError(f"--max-images {self.max_images}: expected at least 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: expected at least 1")
        for name in self.backends or ():
            if name.split("-")[0] not in BACKEND_FAMILIES:
                raise ConfigError(f"--backends {name!r}: expected names starting with {', '.join(BACKEND_FAMILIES)}")

    @property
    def cpu_threads(self) -> int:
        if self.threads:
            return self.threads
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    @property
    def trt_plugin(self) -> str | None:
        """The SelectiveScan TensorRT plugin library: --plugin-library, else $MMAD_TRT_PLUGIN."""
        return self.plugin_library or os.environ.get(PLUGIN_ENV)


def command_line(config: BenchConfig) -> str:
    """The `mmad bench` command that repeats this run, for the report."""
    parts = ["mmad", "bench", "--model", *config.models, "--report", str(config.report_dir)]
    parts += ["--batch", ",".join(map(str, config.batches)), "--iters", str(config.iters)]
    parts += ["--warmup", str(config.warmup)]
    options = {
        "--backends": ",".join(config.backends) if config.backends else None,
        "--images": config.images,
        "--max-images": str(config.max_images),
        "--frame-size": "x".join(map(str, config.frame_size)) if config.frame_size else None,
        "--threads": str(config.threads) if config.threads else None,
        "--torch-device": config.torch_device if config.torch_device != "cpu" else None,
        "--op-library": config.op_library,
        "--plugin-library": config.plugin_library,
        "--profile-runs": str(config.profile_runs) if config.profile else None,
    }
    parts += [item for key, value in options.items() if value for item in (key, value)]
    parts += ["--profile"] if config.profile else []
    return shlex.join(parts)

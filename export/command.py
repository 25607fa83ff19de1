"""What the export commands share, light at import (argparse and the runtime's options; no onnx, no
torch), so `mmad --help` and the scripts' parsers load anywhere, a Jetson without PyTorch included.

    ExportError                 an input to export that cannot be used (a ConfigError: exit code 2)
    PRECISIONS, DEFAULT_*       the export's choices and defaults, defined once
    *_option()                  options several export commands take: one flag, one help text
    EngineRequest               what `mmad export trt` (python export/to_trt.py) is asked to build
    Script                      a typed config + its work = a script's main() and a `mmad export` subcommand
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmad.runtime.errors import ConfigError
from mmad.runtime.options import add_options, calib_data_option, config_from_args, option, plugin_library_option

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # onnxruntime's calibration methods
DEFAULT_CALIBRATION_IMAGES = 32
DEFAULT_OPSET = 17  # LayerNormalization is native from 17; TensorRT 10.3's parser reads it
DEFAULT_BATCH = (1, 1, 8)  # an engine's dynamic batch range: min, opt, max
DEFAULT_WORKSPACE_MB = 2048


class ExportError(ConfigError):
    """An input to export that cannot be used: names the file or option and what was expected."""


def parse_batch(text: str) -> tuple[int, int, int]:
    """ "MIN,OPT,MAX" -> (min, opt, max) with 1 <= min <= opt <= max; ExportError otherwise."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise ExportError(f"--batch {text!r}: expected MIN,OPT,MAX integers with 1 <= MIN <= OPT <= MAX, e.g. 1,1,8")
    return values  # type: ignore[return-value]


# --- Options several export commands take ------------------------------------------------------------
def checkpoint_option() -> Any:
    return option(metavar="DIR", help="checkpoint folder written by mmad train")


def data_option() -> Any:
    return option(metavar="ROOT", help="dataset roots with test images and masks (MVTec layout)")


def max_images_option() -> Any:
    return option(None, metavar="N", help="use this many test images, evenly spread (default: all)")


def calib_images_option() -> Any:
    return option(DEFAULT_CALIBRATION_IMAGES, metavar="N", help="INT8: how many normal images calibrate")


def calib_method_option() -> Any:
    return option("minmax", choices=CALIBRATION_METHODS, help="INT8: how activation ranges are chosen")


# --- python export/to_trt.py, mmad export trt ---------------------------------------------------------
@dataclass
class EngineRequest:
    """What to build; each field is the option of that name. check_request validates it without TensorRT."""

    onnx: Path = option(metavar="ONNX", help="graph from python export/to_onnx.py")
    out: Path = option(metavar="ENGINE", help="engine file to write (its sidecar goes to <out>.json)")
    precision: str | None = option(
        None,
        choices=PRECISIONS,
        help="engine precision (default: the ONNX's); int8 needs a Q/DQ ONNX or --calib-data",
    )
    plugin_library: Path | None = plugin_library_option()  # None: $MMAD_TRT_PLUGIN
    calib_data: list[Path] = calib_data_option()
    calib_images: int = calib_images_option()
    batch: tuple[int, int, int] = option(
        DEFAULT_BATCH, parse=parse_batch, metavar="MIN,OPT,MAX", help="the engine's dynamic batch range"
    )
    workspace_mb: int = option(DEFAULT_WORKSPACE_MB, flag="--workspace", metavar="MB", help="builder workspace in MB")
    timing_cache: Path | None = option(
        None,
        metavar="FILE",
        help="TensorRT timing cache, read before and written after the build so that rebuilds skip the kernel "
        "timing (default: tensorrt_timing.cache beside the engine)",
    )


# --- The scripts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Script:
    """An export script: its options are the `option(...)` fields of `config`, its work is `run(config)`.

    main() is `python export/<name>.py`; add_arguments / run_command mount it under `mmad export`.
    Either way a bad input (a ValueError: ExportError, CheckpointError, DataError ...) or a missing
    package is one line on stderr and exit code 2, never a traceback.
    """

    name: str  # the file's stem: the program name and the prefix of its error messages
    doc: str  # the module docstring; its first paragraph describes the command
    config: type
    run: Callable[[Any], int]  # config -> exit code

    @property
    def description(self) -> str:
        return self.doc.split("\n\n")[0]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_options(parser, self.config)

    def run_command(self, args: argparse.Namespace) -> int:
        try:
            return self.run(config_from_args(self.config, args))
        except (ValueError, ImportError) as err:
            print(f"{self.name}: error: {err}", file=sys.stderr)
            return 2

    def main(self, argv: Sequence[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=f"python export/{self.name}.py", description=self.description)
        self.add_arguments(parser)
        return self.run_command(parser.parse_args(argv))

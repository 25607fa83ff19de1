"""What `mmad calibrate` takes: CalibrateConfig, whose option fields are the command's flags
(mmad.runtime.options), and CalibrationRefused, how it says no.

    config = CalibrateConfig(model="model.onnx", source="rtsp://cam/live", seconds=60)

The fields without `option(...)` are knobs for code that calls it (tests); they have no flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmad.runtime.backends import BACKEND_CHOICES
from mmad.runtime.contract import DEFAULT_FALSE_ALARM_RATE, MIN_NORMAL_SCORES
from mmad.runtime.errors import ConfigError
from mmad.runtime.options import op_library_option, option, plugin_library_option, threads_option

# Frames scored when neither --frames nor --seconds is given: five times the fewest a fit accepts, so the
# Gumbel fit's scale is known to about 10 % (its standard error is about 1.05 / sqrt(frames)), in seconds
# on a file and a few seconds to minutes on a camera.
DEFAULT_FRAMES = 100


class CalibrationRefused(ConfigError):
    """A calibration that would be meaningless: too few frames, a failing or silent source, scores that
    cannot be fitted. `mmad calibrate` prints the reason on one line and exits with code 2."""


@dataclass
class CalibrateConfig:
    """Everything `mmad calibrate` takes; each option field is the flag of that name."""

    model: str = option(help="the deployed model to calibrate: .onnx or .engine/.plan (the file mmad stream runs)")
    source: str = option(
        metavar="SRC",
        help="known-good frames only: a video file, camera or RTSP stream as mmad stream --source takes it "
        "(same decoding), or a folder of images (not its sub-folders)",
    )
    frames: int | None = option(
        None, metavar="N", help=f"score this many frames (default: {DEFAULT_FRAMES}; with --seconds: no limit)"
    )
    seconds: float | None = option(
        None,
        metavar="T",
        help="score frames for this many seconds from the first one (with --frames: whichever ends first)",
    )
    category: str | None = option(
        None,
        metavar="NAME",
        help="the product category this camera sees: recorded, and the file is MODEL.NAME.calibration.json, "
        "which mmad stream --category NAME reads",
    )
    target_false_alarm_rate: float = option(
        DEFAULT_FALSE_ALARM_RATE, metavar="RATE", help="the fraction of good frames the image threshold may flag"
    )
    name: str | None = option(
        None,
        metavar="NAME",
        help="one calibration per camera: write MODEL.NAME.calibration.json (mmad stream --calibration reads it)",
    )
    out: str | None = option(None, metavar="FILE", help="write the calibration here instead (and FILE's .png)")
    roi: str | None = option(
        None, metavar="x,y,w,h", help="inspect only this region of the frame (pixels): the --roi mmad stream runs with"
    )
    backend: str = option("auto", metavar="NAME", help=f"inference backend, one of {', '.join(BACKEND_CHOICES)}")
    op_library: str | None = op_library_option()
    plugin_library: str | None = plugin_library_option()
    threads: int | None = threads_option()
    allow_foreign_engine: bool = option(False, help="try a TensorRT engine built for another TensorRT version or GPU")
    timeout: float = option(
        20.0, metavar="SECONDS", help="refuse a source that gives no frame for this long (connecting included)"
    )
    # No flag: seconds between progress lines on stderr (0: none).
    progress_interval: float = 2.0

    def frame_limit(self) -> int | None:
        """How many frames to score: --frames, else DEFAULT_FRAMES unless --seconds bounds the run."""
        return self.frames if self.frames is not None else (None if self.seconds else DEFAULT_FRAMES)

    def check(self) -> None:
        """ConfigError for options that cannot make a calibration (before any frame is read)."""
        if self.frames is not None and self.frames < MIN_NORMAL_SCORES:
            raise ConfigError(f"--frames {self.frames}: a calibration needs at least {MIN_NORMAL_SCORES} frames")
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(f"--seconds {self.seconds}: expected a positive number")
        if not 0.0 < self.target_false_alarm_rate < 1.0:
            raise ConfigError(f"--target-false-alarm-rate {self.target_false_alarm_rate}: expected 0 < rate < 1")
        if not self.timeout > 0:
            raise ConfigError(f"--timeout {self.timeout}: expected a positive number of seconds")
        if self.name and self.out:
            raise ConfigError("--name and --out both say where to write the calibration: give one")
        for flag, value in (("--name", self.name), ("--category", self.category)):
            if value is not None and (not value or "/" in value or "\\" in value or value.startswith(".")):
                raise ConfigError(f"{flag} {value!r}: expected a plain name (it becomes part of a file name)")

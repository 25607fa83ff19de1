"""`mmad calibrate`: its options, made from CalibrateConfig's fields (config.py), and the call into run.py.

mmad calibrate --model M --source S [--frames N | --seconds T] [--category C] [--target-false-alarm-rate r]
               [--name NAME | --out PATH] [--roi x,y,w,h] [--backend ...]
"""

from __future__ import annotations

import argparse
import sys

from mmad.runtime.calibrate.config import DEFAULT_FRAMES, CalibrateConfig
from mmad.runtime.contract import PIXEL_THRESHOLD_QUANTILE
from mmad.runtime.options import add_command, config_from_args, log_to_stderr

CALIBRATE_EPILOG = f"""Point it at the real source (the camera, its RTSP stream, a clip it recorded) while it shows
known-good parts only: every frame is taken to be good.

rule: the image threshold is the (1 - RATE) quantile of a Gumbel distribution fitted to the good frames'
scores (by moments), never below the highest of them; the pixel threshold that draws regions is the
{PIXEL_THRESHOLD_QUANTILE} quantile of the good frames' anomaly-map pixels. Training sets a model's default
thresholds by the same rule.

output: MODEL.calibration.json (or MODEL.NAME.calibration.json, or --out) and a .png beside it: the
score histogram, the threshold and the expected false-alarm rate. mmad stream and mmadinfer read
MODEL.calibration.json automatically (with --category C: MODEL.C.calibration.json); other files with
--calibration FILE. A calibration only fits the model file it was made with: re-export, recalibrate.

frames: {DEFAULT_FRAMES} by default; --seconds T scores for T seconds (a camera: spread over more parts).

exit codes: 0 written, 2 refused (too few frames, a failing or silent source, scores all equal or not
finite) or a bad model or option, with the reason on one line."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `calibrate` to the `mmad` command."""
    add_command(
        subparsers,
        "calibrate",
        CalibrateConfig,
        run_calibrate_command,
        help="set the thresholds from known-good frames of the real camera or video",
        description="Run the deployed model over known-good frames from the real source, through the same "
        "decoding and pre-processing as mmad stream, and write the image and pixel thresholds beside the "
        "model, where mmad stream and mmadinfer read them.",
        epilog=CALIBRATE_EPILOG,
    )


def run_calibrate_command(args: argparse.Namespace) -> int:
    """Run `mmad calibrate`: 0 written, 2 refused (one line on stderr) or a bad option (the `mmad` command)."""
    log_to_stderr("calibrate", args.verbose)
    from mmad.runtime.calibrate.config import CalibrationRefused
    from mmad.runtime.calibrate.run import run_calibrate

    config = config_from_args(CalibrateConfig, args)
    try:
        result = run_calibrate(config)
    except CalibrationRefused as err:
        print(f"mmad calibrate: refused: {err}", file=sys.stderr)
        return 2
    for line in summary_lines(result, config):
        print(f"mmad calibrate: {line}")
    return 0


def summary_lines(result, config: CalibrateConfig) -> list[str]:
    """What the user reads: the thresholds, what they came from, the old threshold's verdicts, where to find them."""
    fit, cal, previous = result.fit, result.calibration, result.previous
    lines = [
        f"image threshold {fit.threshold:.6g} from {cal.frames} known-good frames "
        f"({fit.rule} fit; expected false-alarm rate {100 * fit.expected_false_alarm_rate:.3g} %, "
        f"target {100 * fit.target_false_alarm_rate:.3g} %); regions above {cal.pixel_threshold:.6g}",
    ]
    if previous.threshold is not None:
        flagged = int((result.scores > previous.threshold).sum())
        lines.append(
            f"the previous threshold {previous.threshold:.6g} ({previous.threshold_source}) flags {flagged} "
            f"of these {cal.frames} good frames"
        )
    lines.append(f"wrote {result.path}" + (f" and {result.plot}" if result.plot else ""))
    if config.out or (config.name and config.name != config.category):
        lines.append(f"use it with: mmad stream --model {config.model} --calibration {result.path} ...")
    elif config.category:
        lines.append(f"use it with: mmad stream --model {config.model} --category {config.category} ...")
    else:
        lines.append(f"mmad stream --model {config.model} reads it automatically")
    return lines

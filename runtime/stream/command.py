"""`mmad stream`: its options, made from StreamConfig's fields (config.py), and the call into the runner.

mmad stream --model M --source SRC [--out annotated.mp4] [--events events.jsonl]
            [--save-anomalies DIR] [--roi x,y,w,h] [--calibration FILE] [--category C]
            [--threshold T] [--overlay-style regions|heat] [--display]
"""

from __future__ import annotations

import argparse

from mmad.runtime.options import add_command, config_from_args, log_to_stderr
from mmad.runtime.stream.config import StreamConfig

SOURCES_HELP = """sources:
  test, test://PATTERN       GStreamer test pattern (live)
  PATH, file:///PATH         a video file (mp4/H.264, mkv, avi/MJPEG, ...)
  http(s)://URL              a video over HTTP
  rtsp://HOST[:PORT]/PATH    an RTSP camera (reconnects with back-off when lost)
  /dev/videoN, v4l2://N      a V4L2 camera
  csi://N                    a Jetson CSI camera (nvarguscamerasrc)

exit codes:
  0  done or stopped (Ctrl-C / SIGTERM finish the output file), every frame inspected and recorded
  1  the run failed: a pipeline or source error, no frame within --start-timeout / --frame-timeout,
     nothing inferred, a full disk (--on-disk-full stop)
  2  a bad model, source or option, found before the first frame (outputs are checked before the model loads)
  3  finished but not whole: frames with a non-finite score (flagged anomalous, "error" in their events),
     or an output given up on a full disk (--on-disk-full continue)

reliability: --out is written in 1 s fragments (a killed run's file plays all but its last second) and
locked (a second run writing it is refused); event lines are whole JSON, fsync'ed, and a line cut off by a
kill or a full disk is ended on the next open. The default --on-disk-full is stop: a run that can no
longer keep its record says so and ends rather than inspecting on without one."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `stream` to the `mmad` command."""
    add_command(
        subparsers,
        "stream",
        StreamConfig,
        run_stream_command,
        help="run the anomaly model on a video, camera or RTSP stream",
        description="Frames in, anomaly scores, defect regions, overlays and events out, in real time. The "
        "thresholds come from --calibration (by default MODEL.calibration.json, written by mmad calibrate, when it "
        "exists), else from the model's metadata; the first log line says which.",
        epilog=SOURCES_HELP,
        verbose_help="also log the pipelines",
    )


def run_stream_command(args: argparse.Namespace) -> int:
    """Run `mmad stream` (a ConfigError becomes a message and exit code 2 in the `mmad` command)."""
    log_to_stderr("stream", args.verbose)
    from mmad.runtime.stream.runner import StreamRunner

    return StreamRunner(config_from_args(StreamConfig, args)).run()

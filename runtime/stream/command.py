"""`mmad stream`: its options, made from StreamConfig's fields (config.py), and the call into the runner.

mmad stream --model M --source SRC [--out annotated.mp4] [--events events.jsonl]
            [--save-anomalies DIR] [--roi x,y,w,h] [--threshold T] [--display]
"""

from __future__ import annotations

import argparse
import logging
import sys

from mmad.runtime.options import add_options, config_from_args
from mmad.runtime.stream.config import StreamConfig

SOURCES_HELP = """sources:
  test, test://PATTERN       GStreamer test pattern (live)
  PATH, file:///PATH         a video file (mp4/H.264, mkv, avi/MJPEG, ...)
  http(s)://URL              a video over HTTP
  rtsp://HOST[:PORT]/PATH    an RTSP camera (reconnects with back-off when lost)
  /dev/videoN, v4l2://N      a V4L2 camera
  csi://N                    a Jetson CSI camera (nvarguscamerasrc)

exit codes: 0 done or stopped (Ctrl-C / SIGTERM finish the output file), 1 pipeline error,
2 bad model, source or option."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `stream` to the `mmad` command."""
    p = subparsers.add_parser(
        "stream",
        help="run the anomaly model on a video, camera or RTSP stream",
        description="Frames in, anomaly scores, heat-map overlays and events out, in real time.",
        epilog=SOURCES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, StreamConfig)
    # How much is logged is not part of what the stream does: an option of the command, not of StreamConfig.
    p.add_argument("-v", "--verbose", action="store_true", help="also log the pipelines")
    p.set_defaults(func=run_stream_command)


def run_stream_command(args: argparse.Namespace) -> int:
    """Run `mmad stream`; ConfigError -> message and exit code 2."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="mmad stream: %(message)s", stream=sys.stderr
    )
    from mmad.runtime.errors import ConfigError

    try:
        from mmad.runtime.stream.runner import StreamRunner

        runner = StreamRunner(config_from_args(StreamConfig, args))
    except ConfigError as err:
        print(f"mmad stream: error: {err}", file=sys.stderr)
        return 2
    return runner.run()

"""`mmad stream`: its options and the call into the runner (argparse only at import time).

mmad stream --model M --source SRC [--out annotated.mp4] [--events events.jsonl]
            [--save-anomalies DIR] [--roi x,y,w,h] [--threshold T] [--display]
"""

from __future__ import annotations

import argparse
import logging
import sys

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
    p.add_argument("--model", required=True, help="exported model: .onnx (onnxruntime) or .engine/.plan (TensorRT)")
    p.add_argument("--source", required=True, help="where frames come from (see below)")
    p.add_argument("--out", help="write the annotated video here (.mp4, .mkv, .mov)")
    p.add_argument("--events", help="append events as JSON lines here")
    p.add_argument(
        "--events-mode",
        choices=("anomaly", "frame"),
        default="anomaly",
        help="a line per anomalous frame (default) or per inferred frame",
    )
    p.add_argument("--save-anomalies", metavar="DIR", help="save anomalous frames (raw and annotated JPEG) here")
    p.add_argument("--roi", metavar="x,y,w,h", help="inspect only this region of the frame (pixels)")
    p.add_argument("--threshold", type=float, help="anomaly threshold (default: the model's metadata)")
    p.add_argument("--display", action="store_true", help="show the annotated stream in a window")
    p.add_argument(
        "--backend",
        default="auto",
        help="auto (default), tensorrt, onnxruntime, onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt",
    )
    p.add_argument("--op-library", help="onnxruntime custom-op library for a graph with the SelectiveScan op")
    p.add_argument(
        "--plugin-library", help="TensorRT plugin library (default: from the engine's sidecar or $MMAD_TRT_PLUGIN)"
    )
    p.add_argument(
        "--allow-foreign-engine",
        action="store_true",
        help="try a TensorRT engine built for another TensorRT version or GPU",
    )
    p.add_argument("--max-frames", type=int, help="stop after this many inferred frames")
    p.add_argument("--stats-interval", type=float, default=5.0, help="seconds between stats lines (0: only at the end)")
    p.add_argument("--stats-json", help="write the final stats (counts, FPS, latency, time shares) here")
    p.add_argument(
        "--reconnect-attempts", type=int, default=-1, help="give up after this many consecutive reconnects (-1: never)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also log the pipelines")
    p.set_defaults(func=run_stream_command)


def run_stream_command(args: argparse.Namespace) -> int:
    """Run `mmad stream`; ConfigError -> message and exit code 2."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="mmad stream: %(message)s", stream=sys.stderr
    )
    from mmad.runtime.errors import ConfigError

    try:
        from mmad.runtime.stream import StreamConfig, StreamRunner

        config = StreamConfig(
            model=args.model,
            source=args.source,
            out=args.out,
            events=args.events,
            events_mode=args.events_mode,
            save_anomalies=args.save_anomalies,
            roi=args.roi,
            threshold=args.threshold,
            display=args.display,
            backend=args.backend,
            op_library=args.op_library,
            plugin_library=args.plugin_library,
            allow_foreign_engine=args.allow_foreign_engine,
            max_frames=args.max_frames,
            stats_interval=args.stats_interval,
            stats_json=args.stats_json,
            reconnect_attempts=args.reconnect_attempts,
        )
        runner = StreamRunner(config)
    except ConfigError as err:
        print(f"mmad stream: error: {err}", file=sys.stderr)
        return 2
    return runner.run()

"""A sample inspection video with defects in known frames, and its ground truth: the command line.

    python -m mmad.samples.make_video sample.mp4 --frames 60 --fps 15 --size 320x240 --defects 12,30,47

writes sample.mp4 (H.264 through GStreamer; .avi: MJPEG through OpenCV) and sample.json, the ground
truth. The frames are drawn by mmad.runtime.synthetic_video (the benchmarks use the same
scene); make_video and render_frames are re-exported here for scripts that import them from the
samples.
"""

from __future__ import annotations

import argparse

from mmad.runtime.synthetic_video import Defect, make_video, render_frames

__all__ = ["Defect", "main", "make_video", "render_frames"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write a sample inspection video with defects in known frames (+ ground truth JSON)."
    )
    parser.add_argument("path", help="output video: .mp4/.mkv (H.264, GStreamer) or .avi (MJPEG, OpenCV)")
    parser.add_argument("--frames", type=int, default=60, help="number of frames (default 60)")
    parser.add_argument("--fps", type=int, default=15, help="frames per second (default 15)")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT, even numbers (default 320x240)")
    parser.add_argument("--defects", default=None, help="comma-separated frame indices (default: one frame in ten)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scene and the defects (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected WIDTHxHEIGHT")
    defects = [int(v) for v in args.defects.split(",")] if args.defects else None
    frames = make_video(args.path, args.frames, args.fps, (width, height), defects, args.seed)
    print(f"{args.path}: {args.frames} frames, defects in {frames}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

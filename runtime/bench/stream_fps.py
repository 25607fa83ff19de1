"""Frames per second of `mmad stream` on this machine, and where the time goes.

    python -m mmad.runtime.bench.stream_fps --model model.onnx [--video clip.mp4] [--repeats 3]

Streams a video file (default: a generated 640x480 H.264 sample) through the full pipeline —
decode, RGB, inference, overlay, H.264 encode — several times and prints the medians: FPS, latency,
the share of wall time in inference and in the rest, next to the model's inference-only FPS on
the same frames. Without --model it uses the synthetic model (runtime/synthetic.py), which
measures the pipeline's own ceiling.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def inference_only_fps(model: str, backend: str, n: int = 30) -> float:
    """Frames per second of backend.infer alone on batch-1 frames (median of n timed calls)."""
    from mmad.runtime.backends import load_backend

    with load_backend(model, backend) as b:
        frame = np.random.default_rng(0).integers(0, 256, (1, b.info.height, b.info.width, 3), dtype=np.uint8)
        b.infer(frame)  # warm-up: session initialisation, allocations
        times = []
        for _ in range(n):
            t = time.perf_counter()
            b.infer(frame)
            times.append(time.perf_counter() - t)
    return 1.0 / statistics.median(times)


def bench_stream(
    model: str, video: str, repeats: int = 3, backend: str = "auto", encode: bool = True, workdir: Path | None = None
) -> dict[str, object]:
    """Run the stream `repeats` times; return the per-run summaries and the medians of the main figures."""
    from mmad.runtime.stream import StreamConfig, run_stream

    workdir = workdir or Path(tempfile.mkdtemp(prefix="mmad-bench-"))
    runs = []
    for i in range(repeats):
        out = str(workdir / f"bench_{i}.mp4") if encode else None
        code, stats = run_stream(StreamConfig(model=model, source=video, out=out, backend=backend, stats_interval=0))
        if code != 0:
            raise RuntimeError(f"the stream failed (exit code {code})")
        runs.append(stats.summary())
    keys = (
        "fps",
        "latency_ms_median",
        "share_inference",
        "share_pre",
        "share_post",
        "share_overlay",
        "share_encoder_push",
        "share_pipeline_wait",
    )
    medians = {k: statistics.median(float(r[k]) for r in runs) for k in keys}
    return {"runs": runs, "median": medians, "frames": runs[0]["frames_inferred"], "backend": runs[0]["backend"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="ONNX or engine (default: the synthetic model)")
    parser.add_argument("--video", help="video file (default: a generated 640x480 H.264 sample)")
    parser.add_argument("--frames", type=int, default=150, help="frames of the generated video")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated video")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--no-encode", action="store_true", help="no annotated output: decode + inference only")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="mmad-bench-"))
    model = args.model
    if model is None:
        from mmad.runtime.synthetic import synthetic_model

        model = str(synthetic_model(workdir / "synthetic.onnx"))
    video = args.video
    if video is None:
        from mmad.samples.make_video import make_video

        width, height = (int(v) for v in args.size.lower().split("x"))
        video = str(workdir / "bench.mp4")
        make_video(video, n_frames=args.frames, fps=30, size=(width, height), seed=0)

    only = inference_only_fps(model, args.backend)
    result = bench_stream(model, video, args.repeats, args.backend, not args.no_encode, workdir)
    m = result["median"]
    result["inference_only_fps"] = only
    print(
        f"model {Path(model).name}, {result['backend']}, {result['frames']} frames of {Path(video).name}, median of {args.repeats} runs"
    )
    print(f"  mmad stream:       {m['fps']:.1f} fps, latency {m['latency_ms_median']:.0f} ms (median)")
    print(f"  inference only:    {only:.1f} fps  (stream / inference-only = {m['fps'] / only:.2f})")
    print(
        f"  share of wall time: inference {m['share_inference']:.0%}, pre-processing {m['share_pre']:.0%}, "
        f"post {m['share_post']:.0%}, overlay {m['share_overlay']:.0%}, encoder hand-off {m['share_encoder_push']:.0%}, "
        f"waiting for decoded frames {m['share_pipeline_wait']:.0%}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

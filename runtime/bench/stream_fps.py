"""Frames per second of `mmad stream` on this machine, and where the time goes.

    python -m mmad.runtime.bench.stream_fps --model model.onnx [--video clip.mp4] [--repeats 3]

Streams a video file (default: a generated 640x480 H.264 sample, synthetic_video.py) through the
full pipeline — decode, RGB, inference, overlay, H.264 encode — several times and prints the
medians: FPS, latency, the share of wall time in inference and in the rest, next to the model's
inference-only FPS on the same frames. Without --model it uses the synthetic model
(runtime/synthetic.py), which measures the pipeline's own ceiling.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mmad.runtime.backends import BACKEND_CHOICES
from mmad.runtime.bench.config import parse_frame_size
from mmad.runtime.options import add_options, config_from_args, option

GENERATED_FPS = 30
SHARES = ("share_inference", "share_pre", "share_post", "share_overlay", "share_encoder_push", "share_pipeline_wait")


@dataclass
class StreamFpsConfig:
    """What the stream benchmark runs; each field is the option of that name."""

    model: str | None = option(None, help="ONNX or engine (default: the synthetic model)")
    video: str | None = option(None, help="video file (default: a generated H.264 sample of --frames and --size)")
    frames: int = option(150, help="frames of the generated video")
    size: tuple[int, int] = option(
        (640, 480),
        parse=partial(parse_frame_size, flag="--size"),
        metavar="WxH",
        help="frame size of the generated video (default: 640x480)",
    )
    repeats: int = option(3, help="stream runs; the medians of their figures are printed")
    backend: str = option("auto", choices=BACKEND_CHOICES, help="backend that runs the model")
    encode: bool = option(True, help="encode the annotated output (--no-encode: decode and inference only)")
    json_out: str | None = option(None, flag="--json", metavar="PATH", help="also write the results here as JSON")


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
    keys = ("fps", "latency_ms_median", *SHARES)
    medians = {k: statistics.median(float(r[k]) for r in runs) for k in keys}
    return {"runs": runs, "median": medians, "frames": runs[0]["frames_inferred"], "backend": runs[0]["backend"]}


def model_and_video(config: StreamFpsConfig, workdir: Path) -> tuple[str, str]:
    """The model and video to stream: those given, else the synthetic model and a generated video."""
    model, video = config.model, config.video
    if model is None:
        from mmad.runtime.synthetic import synthetic_model

        model = str(synthetic_model(workdir / "synthetic.onnx"))
    if video is None:
        from mmad.runtime.synthetic_video import make_video

        video = str(workdir / "bench.mp4")
        make_video(video, n_frames=config.frames, fps=GENERATED_FPS, size=config.size, seed=0)
    return model, video


def print_result(result: dict[str, object], model: str, video: str, repeats: int) -> None:
    m, only = result["median"], result["inference_only_fps"]
    print(
        f"model {Path(model).name}, {result['backend']}, {result['frames']} frames of {Path(video).name}, "
        f"median of {repeats} runs"
    )
    print(f"  mmad stream:       {m['fps']:.1f} fps, latency {m['latency_ms_median']:.0f} ms (median)")
    print(f"  inference only:    {only:.1f} fps  (stream / inference-only = {m['fps'] / only:.2f})")
    print(
        f"  share of wall time: inference {m['share_inference']:.0%}, pre-processing {m['share_pre']:.0%}, "
        f"post {m['share_post']:.0%}, overlay {m['share_overlay']:.0%}, "
        f"encoder hand-off {m['share_encoder_push']:.0%}, waiting for decoded frames {m['share_pipeline_wait']:.0%}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmad.runtime.bench.stream_fps", description=__doc__.split("\n\n")[0]
    )
    add_options(parser, StreamFpsConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(StreamFpsConfig, build_parser().parse_args(argv))
    workdir = Path(tempfile.mkdtemp(prefix="mmad-bench-"))
    model, video = model_and_video(config, workdir)
    only = inference_only_fps(model, config.backend)
    result = bench_stream(model, video, config.repeats, config.backend, config.encode, workdir)
    result["inference_only_fps"] = only
    print_result(result, model, video, config.repeats)
    if config.json_out:
        Path(config.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

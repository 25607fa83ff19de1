"""The whole job end to end on generated data, in one command, in an installed environment:

    samples/quickstart.sh [--out runs/quickstart]        # = python -m mmad.samples.quickstart

  1 data    python -m mmad.samples.make_dataset --out OUT/data --categories object
  2 train   mmad train --preset fast --data OUT/data/object --out OUT/checkpoint --max-minutes 9 [--epochs E]
  3 eval    mmad eval --checkpoint OUT/checkpoint --data OUT/data/object --out OUT/eval
  4 export  mmad export onnx --checkpoint OUT/checkpoint --out OUT/model.onnx --portable
  5 video   the test images as an inspection video, one frame each: OUT/inspection.avi
            (+ inspection.json, which frames show a defect)
  6 stream  mmad stream --model OUT/model.onnx --source OUT/inspection.avi --out OUT/annotated.mp4
            --events OUT/events.jsonl --events-mode frame --stats-json OUT/stream_stats.json
  7 bench   mmad bench --model OUT/checkpoint OUT/model.onnx --report OUT/bench --images OUT/data/object

Each step runs as its own process, exactly as a user would type it (the runtime steps never import
torch). OUT/quickstart.md lists every command with its time and outcome: the metrics, how many of
the video's defect frames the stream flagged, and the bench's speed ratios.

The video is made of the generated test images rather than mmad.samples.make_video's scene: the
model has only seen this dataset's kind of part, so only its test images make the stream's verdicts
meaningful. Sized for a 2-core CPU in under 20 minutes; --epochs and --train-minutes trade time
for accuracy (the schedule is cut short at --train-minutes; the threshold is still computed).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2

CATEGORY = "object"
VIDEO_FPS = 5
EXIT_STEP_FAILED = 1


@dataclass
class QuickstartConfig:
    """Sizes of the run; the defaults fit 20 minutes on 2 CPU cores."""

    out: Path = Path("runs/quickstart")
    preset: str = "fast"
    epochs: int | None = None  # None: the preset's
    train_minutes: float = 9.0
    batch_size: int | None = None  # None: the preset's
    n_train: int = 60
    n_test_good: int = 10
    n_test_defect_per_type: int = 5
    hold_frames: int = 1  # video frames per test image (inference is most of the stream's time on a CPU)
    bench_iters: int = 10
    bench_warmup: int = 2
    bench_images: int = 4
    random_encoder: bool = False  # tests only: no encoder weights needed

    @property
    def data(self) -> Path:
        return self.out / "data" / CATEGORY

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint"

    @property
    def model(self) -> Path:
        return self.out / "model.onnx"

    @property
    def video(self) -> Path:
        return self.out / "inspection.avi"


@dataclass
class Step:
    name: str
    command: list[str]  # as a user types it: "mmad ..." or "python -m ..."
    seconds: float = 0.0
    result: str = ""
    extra: dict = field(default_factory=dict)


def mmad_command(*args: str) -> list[str]:
    return ["mmad", *args]


def data_command(cfg: QuickstartConfig) -> list[str]:
    return [
        "python", "-m", "mmad.samples.make_dataset", "--out", str(cfg.out / "data"), "--categories", CATEGORY,
        "--n-train", str(cfg.n_train), "--n-test-good", str(cfg.n_test_good),
        "--n-test-defect-per-type", str(cfg.n_test_defect_per_type), "--overwrite",
    ]  # fmt: skip


def train_command(cfg: QuickstartConfig) -> list[str]:
    train = ["train", "--preset", cfg.preset, "--data", str(cfg.data), "--out", str(cfg.checkpoint)]
    train += ["--max-minutes", str(cfg.train_minutes)]
    if cfg.epochs:
        train += ["--epochs", str(cfg.epochs)]
    if cfg.batch_size:
        train += ["--batch-size", str(cfg.batch_size)]
    if cfg.random_encoder:
        train.append("--random-encoder")
    return mmad_command(*train)


def stream_command(cfg: QuickstartConfig) -> list[str]:
    out = cfg.out
    return mmad_command(
        "stream", "--model", str(cfg.model), "--source", str(cfg.video), "--out", str(out / "annotated.mp4"),
        "--events", str(out / "events.jsonl"), "--events-mode", "frame",
        "--stats-json", str(out / "stream_stats.json"), "--stats-interval", "0",
    )  # fmt: skip


def bench_command(cfg: QuickstartConfig) -> list[str]:
    return mmad_command(
        "bench", "--model", str(cfg.checkpoint), str(cfg.model), "--report", str(cfg.out / "bench"),
        "--images", str(cfg.data), "--iters", str(cfg.bench_iters), "--warmup", str(cfg.bench_warmup),
        "--max-images", str(cfg.bench_images),
    )  # fmt: skip


def steps(cfg: QuickstartConfig) -> list[Step]:
    """The commands of the run, in order (the video step is done in-process: see write_test_video)."""
    evaluate = ["eval", "--checkpoint", str(cfg.checkpoint), "--data", str(cfg.data), "--out", str(cfg.out / "eval")]
    export = ["export", "onnx", "--checkpoint", str(cfg.checkpoint), "--out", str(cfg.model), "--portable"]
    video = ["python", "-m", "mmad.samples.quickstart", "video", str(cfg.data), str(cfg.video)]
    return [
        Step("data", data_command(cfg)),
        Step("train", train_command(cfg)),
        Step("eval", mmad_command(*evaluate)),
        Step("export", mmad_command(*export)),
        Step("video", [*video, "--hold", str(cfg.hold_frames)]),
        Step("stream", stream_command(cfg)),
        Step("bench", bench_command(cfg)),
    ]


def executable(command: list[str]) -> list[str]:
    """What runs a displayed command: this interpreter for "python", the CLI module for "mmad" (no PATH needed)."""
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    if command[0] == "mmad":
        return [sys.executable, "-m", "mmad.runtime.cli", *command[1:]]
    return command


# --- The video ---------------------------------------------------------------------------------------
def inspection_images(category_root: Path) -> list[tuple[Path, bool]]:
    """(path, defective) of the category's test images: good ones first, then each defect type, sorted."""
    test = category_root / "test"
    if not test.is_dir():
        raise ValueError(f"{test}: no test folder (expected the MVTec layout of mmad.samples.make_dataset)")
    folders = sorted(test.iterdir(), key=lambda p: (p.name != "good", p.name))
    return [
        (img, folder.name != "good") for folder in folders if folder.is_dir() for img in sorted(folder.glob("*.png"))
    ]


def write_test_video(category_root: Path, path: Path, hold: int = 1, fps: int = VIDEO_FPS) -> dict:
    """The test images as an MJPEG .avi, each for `hold` frames; writes and returns the ground truth
    {"video", "fps", "hold", "n_frames", "defect_frames", "images"} (also saved as <path>.json)."""
    items = inspection_images(category_root)
    if not items:
        raise ValueError(f"{category_root}/test: no .png images")
    first = cv2.imread(str(items[0][0]), cv2.IMREAD_COLOR)
    height, width = first.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an MJPEG .avi here")
    defect_frames: list[int] = []
    frame = 0
    for image_path, defective in items:
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)  # BGR, as VideoWriter expects
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        for _ in range(hold):
            writer.write(image)
            if defective:
                defect_frames.append(frame)
            frame += 1
    writer.release()
    truth = {
        "video": path.name,
        "fps": fps,
        "hold": hold,
        "n_frames": frame,
        "defect_frames": defect_frames,
        "images": [str(p) for p, _ in items],
    }
    path.with_suffix(".json").write_text(json.dumps(truth, indent=2))
    return truth


# --- Results ---------------------------------------------------------------------------------------
def detection_summary(events_path: Path, truth: dict) -> dict[str, int]:
    """How the stream's per-frame verdicts (events-mode frame) match the video's ground truth."""
    flagged = {}
    for line in events_path.read_text().splitlines():
        if line.strip():
            event = json.loads(line)
            flagged[int(event["frame"])] = bool(event["anomalous"])
    defects = set(truth["defect_frames"])
    normal = set(range(truth["n_frames"])) - defects
    return {
        "frames": truth["n_frames"],
        "frames_inferred": len(flagged),
        "defect_frames": len(defects),
        "defect_frames_flagged": sum(flagged.get(i, False) for i in defects),
        "normal_frames": len(normal),
        "normal_frames_flagged": sum(flagged.get(i, False) for i in normal),
    }


def step_result(step: Step, cfg: QuickstartConfig) -> str:
    """One line on what a finished step produced, read from its output files."""
    out = cfg.out
    if step.name == "train":
        info = json.loads((cfg.checkpoint / "checkpoint.json").read_text())
        progress = info.get("progress", {})
        epochs = info["config"]["train"]["epochs"]
        return f"epoch {progress.get('epoch')}/{epochs}, threshold {info['thresholds'].get('normal_quantile', 'none')}"
    if step.name == "eval":
        mean = json.loads((out / "eval" / "metrics.json").read_text())["mean"]
        return ", ".join(f"{k} {v:.1f}" for k, v in mean.items())
    if step.name == "export":
        return f"{cfg.model} ({cfg.model.stat().st_size / 2**20:.1f} MB)"
    if step.name == "video":
        truth = json.loads(cfg.video.with_suffix(".json").read_text())
        return f"{truth['n_frames']} frames, {len(truth['defect_frames'])} showing a defect"
    if step.name == "stream":
        stats = json.loads((out / "stream_stats.json").read_text())
        truth = json.loads(cfg.video.with_suffix(".json").read_text())
        d = detection_summary(out / "events.jsonl", truth)
        step.extra = {
            "stats": {k: stats.get(k) for k in ("fps", "latency_ms_median", "frames_inferred", "anomalies")},
            **d,
        }
        return (
            f"{d['defect_frames_flagged']}/{d['defect_frames']} defect frames flagged, {d['normal_frames_flagged']}/"
            f"{d['normal_frames']} normal frames flagged, {stats.get('fps', 0):.2f} fps"
        )
    if step.name == "bench":
        report = json.loads((out / "bench" / "report.json").read_text())
        parts = []
        for entry in report["backends"]:
            p50 = entry["latency"]["1"]["stages"]["total"]["p50"]
            status = "reference" if entry["is_reference"] else entry["deviation"]["status"]
            parts.append(f"{entry['name']} p50 {p50:.0f} ms ({status})")
        return "; ".join(parts)
    return "done"


def write_summary(cfg: QuickstartConfig, done: list[Step], total_s: float) -> Path:
    lines = [
        "# Quickstart run",
        "",
        (
            f"Total {total_s / 60:.1f} min. Outputs in `{cfg.out}`: checkpoint/, eval/metrics.md, model.onnx, "
            "annotated.mp4, events.jsonl, bench/report.md."
        ),
        "",
        "| step | seconds | result | command |",
        "| --- | ---: | --- | --- |",
    ]
    lines += [f"| {s.name} | {s.seconds:.0f} | {s.result} | `{shlex.join(s.command)}` |" for s in done]
    path = cfg.out / "quickstart.md"
    path.write_text("\n".join(lines) + "\n")
    (cfg.out / "quickstart.json").write_text(
        json.dumps(
            [{"step": s.name, "seconds": s.seconds, "result": s.result, "command": s.command, **s.extra} for s in done],
            indent=2,
        )
    )
    return path


def run_quickstart(cfg: QuickstartConfig, only: Sequence[str] | None = None) -> int:
    """Run the steps (all, or those named in `only`); 0 when all succeeded, else the failing step's code."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    done: list[Step] = []
    started = time.perf_counter()
    for step in steps(cfg):
        if only and step.name not in only:
            continue
        print(f"\n== quickstart {step.name}: {shlex.join(step.command)}", flush=True)
        t = time.perf_counter()
        code = subprocess.run(executable(step.command), check=False).returncode
        step.seconds = time.perf_counter() - t
        # mmad bench exits 1 when an FP32 backend deviates: its report is written, and that is a finding.
        if code != 0 and not (step.name == "bench" and code == 1):
            print(
                f"quickstart: step '{step.name}' failed (exit code {code}): {shlex.join(step.command)}", file=sys.stderr
            )
            return code or EXIT_STEP_FAILED
        step.result = step_result(step, cfg)
        print(f"== quickstart {step.name}: {step.seconds:.0f} s, {step.result}", flush=True)
        done.append(step)
        write_summary(cfg, done, time.perf_counter() - started)
    summary = write_summary(cfg, done, time.perf_counter() - started)
    print(f"\nquickstart: done in {(time.perf_counter() - started) / 60:.1f} min; see {summary}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["video"]:  # the video step as its own command
        p = argparse.ArgumentParser(
            prog="python -m mmad.samples.quickstart video", description=write_test_video.__doc__
        )
        p.add_argument("category", type=Path, help="a category folder in MVTec layout (test/good, test/<defect>)")
        p.add_argument("video", type=Path, help="the .avi to write")
        p.add_argument("--hold", type=int, default=1, help="frames per test image")
        a = p.parse_args(argv[1:])
        truth = write_test_video(a.category, a.video, a.hold)
        print(f"{a.video}: {truth['n_frames']} frames, defects in {len(truth['defect_frames'])}")
        return 0
    d = QuickstartConfig()
    p = argparse.ArgumentParser(
        prog="samples/quickstart.sh",
        description=__doc__.split("\n\n")[0],
        epilog="Steps: data, train, eval, export, video, stream, bench.",
    )
    p.add_argument("--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    p.add_argument(
        "--preset", default=d.preset, choices=["fast", "tiny", "paper"], help="training preset (default fast)"
    )
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    p.add_argument(
        "--train-minutes",
        type=float,
        default=d.train_minutes,
        help=f"stop training after this many minutes (default {d.train_minutes:g})",
    )
    p.add_argument("--batch-size", type=int, help="training batch size (default: the preset's)")
    p.add_argument(
        "--n-train", type=int, default=d.n_train, help=f"generated normal training images (default {d.n_train})"
    )
    p.add_argument("--n-test-good", type=int, default=d.n_test_good)
    p.add_argument("--n-test-defect-per-type", type=int, default=d.n_test_defect_per_type)
    p.add_argument("--bench-iters", type=int, default=d.bench_iters)
    p.add_argument("--random-encoder", action="store_true", help="random encoder weights (tests only)")
    p.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps (their inputs must exist)")
    a = p.parse_args(argv)
    cfg = QuickstartConfig(
        out=a.out, preset=a.preset, epochs=a.epochs, train_minutes=a.train_minutes, batch_size=a.batch_size,
        n_train=a.n_train, n_test_good=a.n_test_good, n_test_defect_per_type=a.n_test_defect_per_type,
        bench_iters=a.bench_iters, random_encoder=a.random_encoder,
    )  # fmt: skip
    return run_quickstart(cfg, a.only)


if __name__ == "__main__":
    sys.exit(main())

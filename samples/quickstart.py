"""The whole job end to end on generated data, in one command, in an installed environment:

    samples/quickstart.sh [--out runs/quickstart]        # = python -m mmad.samples.quickstart

  1 data       python -m mmad.samples.make_dataset --out OUT/data --categories object --n-train 60
               --n-test-good 10 --n-test-defect-per-type 5 --n-calib 40 --overwrite
  2 train      mmad train --preset fast --data OUT/data/object --out OUT/checkpoint --max-minutes 9.0
               [--epochs E]
  3 eval       mmad eval --checkpoint OUT/checkpoint --data OUT/data/object --out OUT/eval
  4 export     mmad export onnx --checkpoint OUT/checkpoint --out OUT/model.onnx --portable
  5 video      python -m mmad.samples.quickstart video OUT/data/object OUT/inspection.avi --hold 1
               --known-good OUT/known_good.avi
  6 calibrate  mmad calibrate --model OUT/model.onnx --source OUT/known_good.avi --frames 40
  7 stream     mmad stream --model OUT/model.onnx --source OUT/inspection.avi --out OUT/annotated.mp4
               --events OUT/events.jsonl --events-mode frame --stats-json OUT/stream_stats.json
               --stats-interval 0
  8 bench      mmad bench --model OUT/checkpoint OUT/model.onnx --report OUT/bench --images OUT/data/object
               --iters 10 --warmup 2 --max-images 4

Each step runs as its own process, exactly as a user would type it (the runtime steps never import
torch). OUT/quickstart.md lists every command with its time and outcome (the metrics, the calibrated
threshold, the bench's speed ratios) and then the stream's verdicts against the video's ground truth:
false alarms (good frames flagged) and misses (defect frames not flagged), with a warning over 10 %.

The video step writes two MJPEG clips (mmad.samples.quickstart_video): the test images as the
inspection video (10 good parts, 15 defects, the ground truth in inspection.json), and 40 more good
parts the model never trained on and the inspection video does not show (OUT/data/object/calib/good)
as known_good.avi. `mmad calibrate` sets the threshold from known_good.avi, as a user does on site
with known-good parts under the real camera: the threshold is not judged on the frames it was set
from, and it is set on frames with the same compression as the ones the stream judges. It writes
OUT/model.onnx.calibration.json, which `mmad stream` then reads by itself. 40 frames: twice the
fewest a calibration takes (mmad.runtime.contract.MIN_NORMAL_SCORES), because the fitted tail narrows
with more of them: simulated on Gumbel scores, 8 fits in 10 put the threshold within ±1.5 scale units
of the true 0.1 % quantile from 40 frames, ±2.0 from 20 (too high misses defects, too low raises false
alarms), and beyond 40 it narrows slowly (±1.2 from 60); each frame costs one inference (40 frames took
29-37 s on 2 shared CPU cores).

Sized for a 2-core CPU in under 20 minutes; --epochs and --train-minutes trade time for accuracy (the
schedule is cut short at --train-minutes; the training threshold is still computed).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmad.runtime.contract import MIN_NORMAL_SCORES
from mmad.runtime.options import add_options, config_from_args, option
from mmad.samples import quickstart_video
from mmad.samples.quickstart_results import CATEGORY, RunFiles, Step, step_result, warnings, write_summary

EXIT_STEP_FAILED = 1
PRESETS = ("fast", "tiny", "paper")
STEP_NAMES = ("data", "train", "eval", "export", "video", "calibrate", "stream", "bench")


@dataclass
class QuickstartConfig:
    """Sizes of the run; the defaults fit 20 minutes on 2 CPU cores."""

    out: Path = option(Path("runs/quickstart"), help="output folder: every step's files and quickstart.md")
    preset: str = option("fast", choices=PRESETS, help="training preset")
    epochs: int | None = option(None, help="training epochs (default: the preset's)")
    train_minutes: float = option(9.0, help="stop training after this many minutes; the threshold is still computed")
    batch_size: int | None = option(None, help="training batch size (default: the preset's)")
    n_train: int = option(60, help="generated defect-free training images")
    n_test_good: int = option(10, help="generated defect-free test images: the good parts of the inspection video")
    n_test_defect_per_type: int = option(
        5, help="generated defective test images per defect type (scratch, hole, stain): the video's defects"
    )
    n_calib: int = option(
        40,
        help="generated defect-free images, neither trained on nor in the inspection video, shown as the "
        f"known-good clip that mmad calibrate sets the threshold from (at least {MIN_NORMAL_SCORES})",
    )
    bench_iters: int = option(10, help="timed runs per backend in mmad bench")
    random_encoder: bool = option(False, help="random encoder weights (tests only: no weights needed)")
    hold_frames: int = 1  # video frames per test image (inference is most of the stream's time on a CPU)
    bench_warmup: int = 2
    bench_images: int = 4

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.out)


def mmad_command(*args: str) -> list[str]:
    return ["mmad", *args]


def data_command(cfg: QuickstartConfig) -> list[str]:
    return [
        "python", "-m", "mmad.samples.make_dataset", "--out", str(cfg.files.data), "--categories", CATEGORY,
        "--n-train", str(cfg.n_train), "--n-test-good", str(cfg.n_test_good),
        "--n-test-defect-per-type", str(cfg.n_test_defect_per_type), "--n-calib", str(cfg.n_calib), "--overwrite",
    ]  # fmt: skip


def train_command(cfg: QuickstartConfig) -> list[str]:
    train = ["train", "--preset", cfg.preset, "--data", str(cfg.files.category), "--out", str(cfg.files.checkpoint)]
    train += ["--max-minutes", str(cfg.train_minutes)]
    if cfg.epochs:
        train += ["--epochs", str(cfg.epochs)]
    if cfg.batch_size:
        train += ["--batch-size", str(cfg.batch_size)]
    if cfg.random_encoder:
        train.append("--random-encoder")
    return mmad_command(*train)


def video_command(cfg: QuickstartConfig) -> list[str]:
    f = cfg.files
    return [
        "python", "-m", "mmad.samples.quickstart", "video", str(f.category), str(f.video),
        "--hold", str(cfg.hold_frames), "--known-good", str(f.known_good),
    ]  # fmt: skip


def calibrate_command(cfg: QuickstartConfig) -> list[str]:
    """Every frame of the known-good clip (--frames says how many the calibration must get)."""
    f = cfg.files
    return mmad_command(
        "calibrate", "--model", str(f.model), "--source", str(f.known_good), "--frames", str(cfg.n_calib)
    )


def stream_command(cfg: QuickstartConfig) -> list[str]:
    """No --threshold and no --calibration: the stream finds OUT/model.onnx.calibration.json by itself."""
    f = cfg.files
    return mmad_command(
        "stream", "--model", str(f.model), "--source", str(f.video), "--out", str(f.out / "annotated.mp4"),
        "--events", str(f.events), "--events-mode", "frame",
        "--stats-json", str(f.stream_stats), "--stats-interval", "0",
    )  # fmt: skip


def bench_command(cfg: QuickstartConfig) -> list[str]:
    f = cfg.files
    return mmad_command(
        "bench", "--model", str(f.checkpoint), str(f.model), "--report", str(f.out / "bench"),
        "--images", str(f.category), "--iters", str(cfg.bench_iters), "--warmup", str(cfg.bench_warmup),
        "--max-images", str(cfg.bench_images),
    )  # fmt: skip


def steps(cfg: QuickstartConfig) -> list[Step]:
    """The commands of the run, in order (STEP_NAMES)."""
    f = cfg.files
    evaluate = ["eval", "--checkpoint", str(f.checkpoint), "--data", str(f.category), "--out", str(f.out / "eval")]
    export = ["export", "onnx", "--checkpoint", str(f.checkpoint), "--out", str(f.model), "--portable"]
    return [
        Step("data", data_command(cfg)),
        Step("train", train_command(cfg)),
        Step("eval", mmad_command(*evaluate)),
        Step("export", mmad_command(*export)),
        Step("video", video_command(cfg)),
        Step("calibrate", calibrate_command(cfg)),
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
        step.result, step.extra = step_result(step.name, cfg.files)
        print(f"== quickstart {step.name}: {step.seconds:.0f} s, {step.result}", flush=True)
        done.append(step)
        write_summary(cfg.files, done, time.perf_counter() - started)
    summary = write_summary(cfg.files, done, time.perf_counter() - started)
    stream = next((s for s in done if s.name == "stream"), None)
    for warning in warnings(stream.extra) if stream else []:
        print(f"quickstart: warning: {warning}", file=sys.stderr)
    print(f"\nquickstart: done in {(time.perf_counter() - started) / 60:.1f} min; see {summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samples/quickstart.sh",
        description="The whole job end to end on generated data, each step as its own command: "
        + ", ".join(STEP_NAMES)
        + ". OUT/quickstart.md reports each step's time and outcome, and the stream's false alarms and misses.",
        epilog=f"Steps: {', '.join(STEP_NAMES)}. The video step alone: python -m mmad.samples.quickstart video -h",
    )
    add_options(parser, QuickstartConfig)
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="STEP",
        choices=STEP_NAMES,
        help="run only these steps (the files they read must be there from an earlier run)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["video"]:  # the video step as its own command
        return quickstart_video.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n_calib < MIN_NORMAL_SCORES:
        parser.error(f"--n-calib {args.n_calib}: mmad calibrate needs at least {MIN_NORMAL_SCORES} known-good frames")
    return run_quickstart(config_from_args(QuickstartConfig, args), args.only)


if __name__ == "__main__":
    sys.exit(main())

"""samples/: the quickstart's commands stay in step with the CLI, its inspection video holds the test
images in order with the right ground truth, the example camera configs produce `mmad stream` commands
the CLI accepts, and (slow) the whole quickstart runs end to end with the tiny preset."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmad.runtime.cli import build_parser
from mmad.samples.make_dataset import make_dataset
from mmad.samples.quickstart import (
    QuickstartConfig,
    detection_summary,
    inspection_images,
    steps,
    write_test_video,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "samples" / "configs"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qs")
    return (
        make_dataset(root, categories=["object"], n_train=2, n_test_good=2, n_test_defect_per_type=1, seed=1) / "object"
    )


def test_every_quickstart_command_parses(tmp_path):
    parser = build_parser()
    commands = [s.command for s in steps(QuickstartConfig(out=tmp_path))]
    assert [s.name for s in steps(QuickstartConfig(out=tmp_path))] == [
        "data",
        "train",
        "eval",
        "export",
        "video",
        "stream",
        "bench",
    ]
    for command in commands:
        if command[0] == "mmad":
            assert parser.parse_args(command[1:]).command == command[1]
    train = parser.parse_args(commands[1][1:])
    assert train.preset == "fast" and train.epochs is None and train.max_minutes == QuickstartConfig().train_minutes
    train = parser.parse_args(steps(QuickstartConfig(out=tmp_path, epochs=3))[1].command[1:])
    assert train.epochs == 3


def test_inspection_video_holds_each_test_image_with_its_truth(dataset, tmp_path):
    items = inspection_images(dataset)
    assert [d for _, d in items] == [False, False, True, True, True]  # good first, then the 3 defect types
    video = tmp_path / "inspection.avi"
    truth = write_test_video(dataset, video, hold=2)
    assert truth["n_frames"] == 10 and truth["defect_frames"] == [4, 5, 6, 7, 8, 9]
    assert json.loads(video.with_suffix(".json").read_text()) == truth
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 10
    # Frame 2k and 2k+1 show image k (MJPEG: compare loosely).
    for k, (path, _) in enumerate(items):
        image = cv2.imread(str(path)).astype(np.float32)
        assert np.abs(frames[2 * k].astype(np.float32) - image).mean() < 6.0
        assert np.abs(frames[2 * k + 1].astype(np.float32) - image).mean() < 6.0


def test_detection_summary_counts_against_the_truth(tmp_path):
    truth = {"n_frames": 6, "defect_frames": [3, 4, 5]}
    events = tmp_path / "events.jsonl"
    flags = [False, True, False, True, True, False]
    events.write_text("".join(json.dumps({"frame": i, "anomalous": a}) + "\n" for i, a in enumerate(flags)))
    assert detection_summary(events, truth) == {
        "frames": 6, "frames_inferred": 6, "defect_frames": 3, "defect_frames_flagged": 2,
        "normal_frames": 3, "normal_frames_flagged": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    "script, extra",
    [
        ("jetson_camera.sh", {}),
        ("jetson_camera.sh", {"CAMERA": "/dev/video0", "ROI": "0,0,320,240"}),
        ("rtsp_camera.sh", {"RTSP_URL": "rtsp://10.0.0.5:554/cam", "RECORD": "out.mp4"}),
    ],
)
def test_camera_configs_make_commands_the_cli_accepts(script, extra, tmp_path):
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "MODEL": str(tmp_path / "model.onnx"),
        "OUT_DIR": str(tmp_path / "out"),
        **extra,
    }
    result = subprocess.run(
        ["bash", str(CONFIGS / script)], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert lines[0].startswith("gst-launch-1.0") and lines[-1].startswith("mmad stream")
    args = build_parser().parse_args(shlex.split(lines[-1])[1:])
    assert args.model == env["MODEL"] and args.events == str(tmp_path / "out" / "events.jsonl")
    assert args.roi == extra.get("ROI") and args.out == extra.get("RECORD")
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_rtsp_test_server_pipeline_parses(tmp_path):
    gi = pytest.importorskip("gi")
    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    sys.path.insert(0, str(CONFIGS))
    try:
        from rtsp_test_server import launch_description
    finally:
        sys.path.remove(str(CONFIGS))
    Gst.init(None)
    for name in ("x264enc", "rtph264pay", "videotestsrc"):
        if Gst.ElementFactory.find(name) is None:
            pytest.skip(f"GStreamer element {name} missing")
    for source in ("test", str(tmp_path / "clip.avi")):
        description = launch_description(source, fps=10).strip("() ")
        assert Gst.parse_launch(description) is not None


@pytest.mark.slow
@pytest.mark.gst
def test_quickstart_runs_end_to_end_with_the_tiny_preset(tmp_path):
    pytest.importorskip("gi")
    out = tmp_path / "qs"
    args = ["--out", str(out), "--preset", "tiny", "--random-encoder", "--epochs", "1", "--batch-size", "2",
            "--n-train", "4", "--n-test-good", "2", "--n-test-defect-per-type", "1", "--bench-iters", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "samples" / "quickstart.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "quickstart.json").read_text())
    assert [s["step"] for s in summary] == ["data", "train", "eval", "export", "video", "stream", "bench"]
    stream = next(s for s in summary if s["step"] == "stream")
    assert stream["frames_inferred"] == stream["frames"] == 5  # one frame per test image
    for name in ("checkpoint/model.safetensors", "eval/metrics.json", "model.onnx", "annotated.mp4", "events.jsonl",
                 "bench/report.md", "bench/latency_distribution.png", "quickstart.md"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "bench" / "report.json").read_text())
    assert report["reference"] == "pytorch" and "onnxruntime-portable" in [b["name"] for b in report["backends"]]

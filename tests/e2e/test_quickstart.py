"""samples/: the quickstart's commands stay in step with the CLI and with the step table of its docstring,
its inspection video holds the test images in order with the right ground truth, its known-good clip
holds calibration images it never trains or tests on, quickstart.md reports false alarms and misses
(warning over 10 %), the example camera configs produce `mmad stream` commands the CLI accepts, and
(slow) the whole quickstart runs end to end with the tiny preset, calibrating before it streams."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmad.runtime.cli import build_parser
from mmad.runtime.contract import MIN_NORMAL_SCORES
from mmad.samples import quickstart
from mmad.samples.make_dataset import make_dataset
from mmad.samples.quickstart import STEP_NAMES, QuickstartConfig, main, steps
from mmad.samples.quickstart_results import RunFiles, Step, detection_summary, verdicts, write_summary
from mmad.samples.quickstart_video import inspection_images, write_known_good_clip, write_test_video

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "samples" / "configs"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qs")
    made = make_dataset(root, ["object"], n_train=2, n_test_good=2, n_test_defect_per_type=1, seed=1, n_calib=3)
    return made / "object"


def read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_every_quickstart_command_parses(tmp_path):
    parser = build_parser()
    commands = [s.command for s in steps(QuickstartConfig(out=tmp_path))]
    assert [s.name for s in steps(QuickstartConfig(out=tmp_path))] == list(STEP_NAMES)
    assert STEP_NAMES == ("data", "train", "eval", "export", "video", "calibrate", "stream", "bench")
    for command in commands:
        if command[0] == "mmad":
            assert parser.parse_args(command[1:]).command == command[1]
    train = parser.parse_args(commands[1][1:])
    assert train.preset == "fast" and train.epochs is None and train.max_minutes == QuickstartConfig().train_minutes
    train = parser.parse_args(steps(QuickstartConfig(out=tmp_path, epochs=3))[1].command[1:])
    assert train.epochs == 3


def test_calibration_comes_between_video_and_stream_on_the_known_good_clip(tmp_path):
    cfg = QuickstartConfig(out=tmp_path, n_calib=25)
    by_name = {s.name: s.command for s in steps(cfg)}
    files = RunFiles(tmp_path)
    assert by_name["data"][by_name["data"].index("--n-calib") + 1] == "25"
    video = by_name["video"]
    assert video[video.index("--known-good") + 1] == str(files.known_good) != str(files.video)
    assert by_name["calibrate"] == ["mmad", "calibrate", "--model", str(files.model),
                                    "--source", str(files.known_good), "--frames", "25"]  # fmt: skip
    calibrate = build_parser().parse_args(by_name["calibrate"][1:])
    assert (calibrate.model, calibrate.source, calibrate.frames) == (str(files.model), str(files.known_good), 25)
    # The stream reads the calibration beside the model by itself: no threshold of its own.
    stream = build_parser().parse_args(by_name["stream"][1:])
    assert stream.threshold is None and stream.source == str(files.video)
    assert files.calibration.name == "model.onnx.calibration.json"


def docstring_steps() -> dict[str, list[str]]:
    """The step table of quickstart.py's docstring: {name: command tokens}, [optional] parts left out."""
    table: dict[str, list[str]] = {}
    name = None
    for line in quickstart.__doc__.splitlines():
        start = re.match(r"^  \d (\w+) +(.*)$", line)
        if start:
            name = start.group(1)
            table[name] = []
            line = start.group(2)
        elif name is None or not line.startswith("     "):
            name = None
            continue
        table[name] += shlex.split(re.sub(r"\[[^]]*\]", "", line))
    return table


def test_the_docstring_step_table_is_the_commands_the_run_prints():
    printed = {s.name: s.command for s in steps(QuickstartConfig(out=Path("OUT")))}
    assert docstring_steps() == printed


def test_every_quickstart_option_has_help():
    parser = quickstart.build_parser()
    for action in parser._actions:
        assert action.help and len(action.help) > 10, action.option_strings
    args = parser.parse_args(["--n-calib", "30", "--only", "calibrate", "stream"])
    assert args.n_calib == 30 and args.only == ["calibrate", "stream"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", "unused", "--n-calib", str(MIN_NORMAL_SCORES - 1)])
    assert exit_info.value.code == 2


def test_inspection_video_holds_each_test_image_with_its_truth(dataset, tmp_path):
    items = inspection_images(dataset)
    assert [d for _, d in items] == [False, False, True, True, True]  # good first, then the 3 defect types
    video = tmp_path / "inspection.avi"
    truth = write_test_video(dataset, video, hold=2)
    assert truth["n_frames"] == 10 and truth["defect_frames"] == [4, 5, 6, 7, 8, 9]
    assert json.loads(video.with_suffix(".json").read_text()) == truth
    frames = read_frames(video)
    assert len(frames) == 10
    # Frame 2k and 2k+1 show image k (MJPEG: compare loosely).
    for k, (path, _) in enumerate(items):
        image = cv2.imread(str(path)).astype(np.float32)
        assert np.abs(frames[2 * k].astype(np.float32) - image).mean() < 6.0
        assert np.abs(frames[2 * k + 1].astype(np.float32) - image).mean() < 6.0


def test_known_good_clip_shows_calibration_images_never_trained_or_tested_on(dataset, tmp_path):
    calib = sorted((dataset / "calib" / "good").glob("*.png"))
    others = [*(dataset / "train").rglob("*.png"), *(dataset / "test").rglob("*.png")]
    assert len(calib) == 3
    seen = {cv2.imread(str(p)).tobytes() for p in others}
    assert not any(cv2.imread(str(p)).tobytes() in seen for p in calib)
    clip = tmp_path / "known_good.avi"
    truth = write_known_good_clip(dataset, clip)
    assert truth["n_frames"] == 3 and truth["defect_frames"] == [] and truth["hold"] == 1
    frames = read_frames(clip)
    assert len(frames) == 3
    for frame, path in zip(frames, calib):
        assert np.abs(frame.astype(np.float32) - cv2.imread(str(path)).astype(np.float32)).mean() < 6.0
    # Without calibration images the video step refuses with a message (exit 2), not a traceback.
    bare = make_dataset(tmp_path / "bare", ["object"], n_train=1, n_test_good=1, n_test_defect_per_type=0) / "object"
    assert main(["video", str(bare), str(tmp_path / "v.avi"), "--known-good", str(tmp_path / "g.avi")]) == 2


def events_file(path: Path, flags: list[bool], t: float = 0.25) -> Path:
    records = [{"frame": i, "score": 0.2 + 0.1 * a, "anomalous": a, "threshold": t} for i, a in enumerate(flags)]
    lines = [json.dumps(record) + "\n" for record in records]
    path.write_text("".join(lines))
    return path


def test_verdicts_count_false_alarms_and_misses_and_warn_over_ten_percent(tmp_path):
    truth = {"n_frames": 25, "defect_frames": list(range(10, 25))}
    good = verdicts(events_file(tmp_path / "good.jsonl", [i == 3 or i >= 11 for i in range(25)]), truth)
    assert (good["normal_frames_flagged"], good["misses"]) == (1, 1)
    assert good["false_alarm_rate"] == pytest.approx(0.1) and good["miss_rate"] == pytest.approx(1 / 15)
    assert good["stream_thresholds"] == [0.25]
    assert good["normal_scores"] == pytest.approx([0.2, 0.3]) and good["defect_scores"] == pytest.approx([0.2, 0.3])
    bad = verdicts(events_file(tmp_path / "bad.jsonl", [i < 8 or i >= 13 for i in range(25)]), truth)
    assert bad["false_alarm_rate"] == pytest.approx(0.8) and bad["misses"] == 3 and bad["miss_rate"] == 0.2
    for v, warned in ((good, []), (bad, ["false alarms 80 %", "misses 20 %"])):
        step = Step("stream", ["mmad", "stream"], 1.0, "done", v)
        text = write_summary(RunFiles(tmp_path), [step], 60.0).read_text()
        assert (
            "| false alarms (good frames flagged) | 10 |" in text
            and "| misses (defect frames not flagged) | 15 |" in text
        )
        warnings = [line for line in text.splitlines() if line.startswith("**Warning:**")]
        assert len(warnings) == len(warned) and all(w in line for w, line in zip(warned, warnings))


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
            "--n-train", "4", "--n-test-good", "2", "--n-test-defect-per-type", "1", "--bench-iters", "2",
            "--n-calib", str(MIN_NORMAL_SCORES)]  # fmt: skip
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
    assert [s["step"] for s in summary] == list(STEP_NAMES)
    stream = next(s for s in summary if s["step"] == "stream")
    assert stream["frames_inferred"] == stream["frames"] == 5  # one frame per test image
    # The stream judged with the threshold mmad calibrate set from the known-good clip (found by itself).
    calibration = next(s for s in summary if s["step"] == "calibrate")["calibration"]
    assert calibration["frames"] == MIN_NORMAL_SCORES and stream["calibration"] == calibration
    assert stream["stream_thresholds"] == [pytest.approx(calibration["threshold"])]
    for name in ("checkpoint/model.safetensors", "eval/metrics.json", "model.onnx", "known_good.avi",
                 "model.onnx.calibration.json", "annotated.mp4", "events.jsonl", "bench/report.md",
                 "bench/latency_distribution.png", "quickstart.md"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    text = (out / "quickstart.md").read_text()
    assert "| false alarms (good frames flagged) | 2 |" in text and "| misses (defect frames not flagged) | 3 |" in text
    report = json.loads((out / "bench" / "report.json").read_text())
    assert report["reference"] == "pytorch" and "onnxruntime-portable" in [b["name"] for b in report["backends"]]

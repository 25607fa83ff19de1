"""Bad inputs to `mmad stream`, one row each: the real command on generated data must fail closed, never hang,
and say what is wrong (issue 13: non-finite scores, sources that never start, outputs that cannot be written, a
full disk, out-of-range numbers, unclear GStreamer messages). The model-side rows are test_bad_inputs_model.py;
both use bad_input_cases.py. Kills of a real run (the recording survives) and a second run on a busy --out are
at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import cv2
import pytest
from bad_input_cases import (
    Case,
    Workspace,
    check_case,
    mmad_command,
    params,
    read_only_folder,
    run_mmad,
    small_disk,
)

from mmad.runtime.gst_util import gst_unavailable_reason, missing_elements

pytestmark = pytest.mark.gst
ELEMENTS = ["x264enc", "mp4mux", "matroskamux", "h264parse", "avdec_h264", "videotestsrc"]
REASON = gst_unavailable_reason() or (
    "GStreamer plugins missing: " + ", ".join(missing_elements(ELEMENTS)) if missing_elements(ELEMENTS) else None
)
if REASON:
    pytest.skip(REASON, allow_module_level=True)
pytest.importorskip("onnx", reason="building the test models needs the onnx package")

from mmad.runtime.synthetic import synthetic_model  # noqa: E402
from mmad.runtime.synthetic_video import decodable_frames, make_video  # noqa: E402

FPS = 15
N_FRAMES = 60
DEFECTS = [5, 20, 40]


def nan_model(path: Path) -> Path:
    """The synthetic model with every map value NaN (0/0 computed from the image, no NaN weight to refuse at load):
    what a checkpoint with NaN weights or a zero std exports to."""
    import onnx
    from onnx import helper

    model = onnx.load(str(synthetic_model(path)))
    graph = model.graph
    scaled = next(n for n in graph.node if n.op_type == "Mul")
    scaled.output[0] = "scaled"
    graph.node.insert(list(graph.node).index(scaled) + 1, helper.make_node("Sub", ["scaled", "scaled"], ["zero"]))
    graph.node.insert(list(graph.node).index(scaled) + 2, helper.make_node("Div", ["zero", "zero"], ["raw_map"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory, synthetic_onnx) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_inputs")
    video = folder / "sample.mp4"
    make_video(video, n_frames=N_FRAMES, fps=FPS, size=(320, 240), defect_frames=DEFECTS, seed=4)
    long_video = folder / "long.mp4"
    make_video(long_video, n_frames=600, fps=FPS, size=(320, 240), seed=5)
    return {
        "model": synthetic_onnx,
        "video": video,
        "long_video": long_video,
        "nan_model": nan_model(folder / "n.onnx"),
    }


def stream(*args: str) -> tuple[str, ...]:
    return ("stream", "--model", "{model}", *args, "--stats-interval", "0")


def strict_json_lines(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, parsed strictly (NaN / Infinity are not JSON)."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{path}: {name} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# --- setups --------------------------------------------------------------------------------------
def fifo_that_never_writes(ws: Workspace) -> None:
    """A named pipe held open for writing and never written: the source opens, its demuxer waits for ever, and
    GStreamer posts no error (the shape of a truncated MP4 that stalls in start-up)."""
    fifo = ws.tmp / "stalled.mp4"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    ws.cleanups.append(lambda: os.close(fd))
    ws.paths["fifo"] = fifo


def http_server_that_never_answers(ws: Workspace) -> None:
    """A listening socket that accepts connections (the kernel's backlog) and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    ws.cleanups.append(server.close)
    ws.paths["silent_port"] = str(server.getsockname()[1])


def refused_port(ws: Workspace) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:  # a port nobody listens on once it is closed
        ws.paths["closed_port"] = str(probe.getsockname()[1])


def text_file(ws: Workspace) -> None:
    (ws.tmp / "notes.mp4").write_text("these are notes, not a video\n" * 20)


def truncated_mp4(ws: Workspace) -> None:
    """The first half of a video: the index (moov) that a clean stop writes at the end is missing."""
    data = Path(ws.paths["video"]).read_bytes()
    (ws.tmp / "half.mp4").write_bytes(data[: len(data) // 2])


def empty_file(ws: Workspace) -> None:
    (ws.tmp / "empty.mp4").write_bytes(b"")


def a_file_where_a_folder_goes(ws: Workspace) -> None:
    (ws.tmp / "afile").write_text("x")


def torn_events(ws: Workspace) -> None:
    """An events file whose last line a kill or a full disk cut off."""
    good = json.dumps({"frame": 0, "anomalous": True}) + "\n" + json.dumps({"frame": 1, "anomalous": False}) + "\n"
    (ws.tmp / "events.jsonl").write_text(good + '{"frame": 2, "anomal')


# --- checks beyond rc and message ----------------------------------------------------------------
def nonfinite_events_are_errors(ws: Workspace, result: subprocess.CompletedProcess) -> None:
    events = strict_json_lines(ws.tmp / "e.jsonl")
    assert len(events) == N_FRAMES and all(e["anomalous"] for e in events)
    assert all(e["score"] is None and "score" in e["nonfinite"] and "non-finite" in e["error"] for e in events)
    stats = json.loads((ws.tmp / "s.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in stats"))
    assert stats["score_errors"] == stats["anomalies"] == stats["frames_inferred"] == N_FRAMES


def no_nan_in_stats(ws: Workspace, result: subprocess.CompletedProcess) -> None:
    assert "nan%" not in result.stderr and "in 0 inferred 0" in result.stderr
    stats = json.loads((ws.tmp / "s.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in stats"))
    assert stats["frames_inferred"] == 0 and stats["share_inference"] is None


def source_left_whole(ws: Workspace, result: subprocess.CompletedProcess) -> None:
    capture = cv2.VideoCapture(str(ws.paths["video"]))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == N_FRAMES


def torn_line_ended_and_new_lines_whole(ws: Workspace, result: subprocess.CompletedProcess) -> None:
    lines = (ws.tmp / "events.jsonl").read_text().splitlines()
    assert lines[2] == '{"frame": 2, "anomal'  # kept as it was, on a line of its own
    assert [json.loads(line)["frame"] for line in lines[:2] + lines[3:]] == [0, 1, 0, 1, 2, 3, 4]


def inspection_went_on(ws: Workspace, result: subprocess.CompletedProcess) -> None:
    events = strict_json_lines(ws.tmp / "e.jsonl")
    assert len(events) == 600, "every frame is still inspected after the recording stopped"
    assert "continue" in result.stderr


NOT_VIDEO = "not a video this machine can play"
CASES = [
    # 1: a non-finite score is an anomaly and an error (exit 3), events strict JSON with null + a flag
    Case(
        "nan-scores-are-anomalies-and-errors",
        ("stream", "--model", "{nan_model}", "--source", "{video}", "--events", "{tmp}/e.jsonl", "--events-mode",
         "frame", "--stats-json", "{tmp}/s.json", "--stats-interval", "0"),
        3, "non-finite score", check=nonfinite_events_are_errors,
    ),
    # 3: a start-up and a no-frame timeout for every source kind; nothing inferred is a failure
    Case(
        "file-source-that-never-starts-times-out",
        stream("--source", "{fifo}", "--start-timeout", "3", "--stats-json", "{tmp}/s.json"),
        1, "no frame within 3 s of starting", setup=fifo_that_never_writes, timeout=60, check=no_nan_in_stats,
    ),
    Case(
        "http-source-that-never-answers-times-out",
        stream("--source", "http://127.0.0.1:{silent_port}/video.mp4", "--start-timeout", "3"),
        1, "no frame within 3 s of starting", setup=http_server_that_never_answers, timeout=60,
    ),
    Case("truncated-mp4-is-not-a-video", stream("--source", "{tmp}/half.mp4"), 2, NOT_VIDEO, setup=truncated_mp4),
    # 5: --save-anomalies that cannot be made or written, found before the model loads
    Case(
        "save-anomalies-folder-cannot-be-made",
        stream("--source", "{video}", "--save-anomalies", "{tmp}/afile/frames"),
        2, "--save-anomalies {tmp}/afile/frames: cannot write there", setup=a_file_where_a_folder_goes,
    ),
    Case(
        "save-anomalies-read-only",
        stream("--source", "{video}", "--save-anomalies", "{read_only}/frames"),
        2, "--save-anomalies {read_only}/frames: cannot write there (Read-only file system)",
        setup=read_only_folder,
    ),
    # 6: --out that is the source
    Case(
        "out-is-the-source",
        stream("--source", "{video}", "--out", "{video}"),
        2, "--out {video} is the --source file", check=source_left_whole,
    ),
    # 8: full disks and torn event lines
    Case(
        "recording-disk-full-stops-by-default",
        stream("--source", "{long_video}", "--out", "{disk}/annotated.mp4"),
        1, "disk full", setup=lambda ws: small_disk(ws, 256), timeout=240,
    ),
    Case(
        "recording-disk-full-continue-keeps-inspecting",
        stream("--source", "{long_video}", "--out", "{disk}/annotated.mp4", "--on-disk-full", "continue",
               "--events", "{tmp}/e.jsonl", "--events-mode", "frame"),
        3, "disk full", setup=lambda ws: small_disk(ws, 256), timeout=240, check=inspection_went_on,
    ),
    Case(
        "events-disk-full",
        stream("--source", "{long_video}", "--events", "{disk}/e.jsonl", "--events-mode", "frame"),
        1, "--events {disk}/e.jsonl: disk full", setup=lambda ws: small_disk(ws, 16), timeout=240,
    ),
    Case(
        "saved-frames-disk-full",
        stream("--source", "{video}", "--save-anomalies", "{disk}/frames"),
        1, "disk full", setup=lambda ws: small_disk(ws, 48),
    ),
    Case(
        "torn-events-line-ended-on-next-open",
        stream("--source", "{video}", "--events", "{tmp}/events.jsonl", "--events-mode", "frame", "--max-frames",
               "5"),
        0, "last line was cut off", setup=torn_events, check=torn_line_ended_and_new_lines_whole,
    ),
    # 9: every output's writability, before the model loads (the model here does not exist: the output is named)
    *[
        Case(
            f"{flag[2:]}-read-only-found-before-the-model",
            ("stream", "--model", "{tmp}/missing.onnx", "--source", "{video}", flag, "{read_only}/" + name),
            2, f"{flag} {{read_only}}/{name}", setup=read_only_folder,
        )
        for flag, name in [
            ("--out", "a.mp4"), ("--events", "e.jsonl"), ("--stats-json", "s.json"), ("--save-anomalies", "frames")
        ]
    ],
    # 10: numbers range-checked where the option is defined
    Case("max-frames-negative", stream("--source", "{video}", "--max-frames", "-1"), 2, "an integer >= 1"),
    Case("stats-interval-negative", stream("--source", "{video}", "--stats-interval", "-1"), 2, "a number >= 0"),
    Case(
        "reconnect-attempts-negative",
        stream("--source", "{video}", "--reconnect-attempts", "-5"), 2, "an integer >= 0 or -1",
    ),
    Case("start-timeout-zero", stream("--source", "{video}", "--start-timeout", "0"), 2, "a number >= 0.1"),
    # 13: clear messages
    Case("text-file-as-source", stream("--source", "{tmp}/notes.mp4"), 2, NOT_VIDEO, setup=text_file),
    Case("empty-file-as-source", stream("--source", "{tmp}/empty.mp4"), 2, "the file is empty", setup=empty_file),
    Case("folder-as-source", stream("--source", "{tmp}"), 2, "is a folder"),
    Case(
        "http-connection-refused",
        stream("--source", "http://127.0.0.1:{closed_port}/video.mp4"),
        1, "Connection refused", setup=refused_port, timeout=60,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case: Case, data, tmp_path):
    if case.id.startswith("http") and missing_elements(["souphttpsrc"]):
        pytest.skip("no souphttpsrc (gst-plugins-good) for http:// sources")
    check_case(case, Workspace(tmp_path, dict(data)))


# --- kills, signals and concurrent runs of a real `mmad stream` ---------------------------------------------
def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        mmad_command(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"mmad stream ended early (rc {proc.returncode}): {proc.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"not reached within {timeout:.0f} s")
        time.sleep(0.05)


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_recording_survives_sigkill(data, tmp_path, suffix):
    """Issue 13.4: SIGKILL mid-run leaves a recording that plays all but its last moments (a fragment)."""
    out, events = tmp_path / f"annotated{suffix}", tmp_path / "events.jsonl"
    argv = ["stream", "--model", str(data["model"]), "--source", str(data["long_video"]), "--out", str(out)]
    proc = start([*argv, "--events", str(events), "--events-mode", "frame", "--stats-interval", "0"], tmp_path)
    wait_until(lambda: count_lines(events) >= 200, 180, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    inspected = count_lines(events)
    assert inspected < 600, "the run ended before the kill: make the video longer"
    frames = decodable_frames(out)
    # The frames in flight: a fragment of 1 s (FPS frames) not yet written, plus the encoder's and queues' few.
    assert inspected - 3 * FPS <= frames <= inspected, (frames, inspected)
    # The killed run's file is a source like any other (issue 13.3: it hung the stream in start-up before).
    again = run_mmad(["stream", "--model", str(data["model"]), "--source", str(out), "--stats-interval", "0"], 120)
    assert again.returncode == 0 and f"inferred {frames} " in again.stderr, again.stderr


def test_sigint_before_the_first_frame_is_not_success(data, tmp_path):
    """Issue 13.3: a run stopped before any frame was inferred exits non-zero (it inspected nothing)."""
    ws = Workspace(tmp_path, dict(data))
    fifo_that_never_writes(ws)
    try:
        argv = ["stream", "--model", str(data["model"]), "--source", str(ws.paths["fifo"]), "--stats-interval", "0"]
        proc = start(argv, tmp_path)
        time.sleep(4)  # started, waiting on a source that gives nothing
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        for cleanup in ws.cleanups:
            cleanup()
    assert proc.returncode == 1 and "no frame was inferred" in stderr, stderr


def test_second_run_writing_the_same_out_is_refused(data, tmp_path):
    """Issue 13.6: while a run records to --out, another run writing the same file is refused; the first one's
    recording is unharmed."""
    out = tmp_path / "annotated.mp4"
    first = start(["stream", "--model", str(data["model"]), "--source", "test", "--out", str(out)], tmp_path)
    try:
        wait_until(lambda: out.exists() and out.stat().st_size > 0, 120, first)
        second = subprocess.run(
            mmad_command(["stream", "--model", str(data["model"]), "--source", str(data["video"]), "--out", str(out)]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2 and "another mmad stream is writing this file" in second.stderr, second.stderr
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert decodable_frames(out) > 0

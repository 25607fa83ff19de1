"""`mmad stream` end to end on CPU with real GStreamer and the onnxruntime backend.

A generated video (mmad.runtime.synthetic_video: normal frames, defects at known indices) goes
through the stream; the synthetic model (runtime/synthetic.py, the `synthetic_onnx` fixture) separates
its defects by construction, so the events must mark exactly the ground-truth defect frames.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmad.runtime.gst_util import gst_unavailable_reason, missing_elements

pytestmark = pytest.mark.gst
REASON = gst_unavailable_reason()
if REASON is None and missing_elements(["x264enc", "mp4mux", "h264parse", "avdec_h264", "videotestsrc", "jpegdec"]):
    REASON = "GStreamer plugins missing: " + ", ".join(
        missing_elements(["x264enc", "mp4mux", "h264parse", "avdec_h264", "videotestsrc", "jpegdec"])
    )
if REASON:
    pytest.skip(REASON, allow_module_level=True)
pytest.importorskip("onnx", reason="building the synthetic model needs the onnx package")

from mmad.runtime.cli import main as mmad_main  # noqa: E402
from mmad.runtime.events import read_events  # noqa: E402
from mmad.runtime.stream import StreamConfig, run_stream  # noqa: E402
from mmad.runtime.synthetic_video import decodable_frames, make_video  # noqa: E402

N_FRAMES = 48
DEFECTS = [7, 21, 36]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory, synthetic_onnx):
    folder = tmp_path_factory.mktemp("stream")
    video = folder / "sample.mp4"
    make_video(video, n_frames=N_FRAMES, fps=15, size=(320, 240), defect_frames=DEFECTS, seed=3)
    return {"video": video, "truth": json.loads(video.with_suffix(".json").read_text()), "model": synthetic_onnx}


def flags(**options: object) -> list[str]:
    """Command-line flags from keywords: flags(events_mode="frame") -> ["--events-mode", "frame"]."""
    return [item for name, value in options.items() for item in ("--" + name.replace("_", "-"), str(value))]


def start_stream(*args: str) -> subprocess.Popen:
    """`mmad stream ARGS` in a child process, as a user runs it (stdout and stderr captured)."""
    command = [sys.executable, "-c", "import sys; from mmad.runtime.cli import main; sys.exit(main(sys.argv[1:]))"]
    return subprocess.Popen(
        [*command, "stream", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def wait_for_lines(path: Path, n: int, timeout: float, proc: subprocess.Popen | None = None) -> int:
    """Wait until a file has at least n lines; return how many it has."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = len(path.read_text().splitlines()) if path.exists() else 0
        if count >= n or (proc is not None and proc.poll() is not None):
            break
        time.sleep(0.1)
    return count


def test_video_through_stream_marks_exactly_the_defect_frames(data, tmp_path):
    """Out-of-process like a user runs it; also proves the stream never imports torch."""
    out, events, stats, saved = (
        tmp_path / "annotated.mp4",
        tmp_path / "events.jsonl",
        tmp_path / "stats.json",
        tmp_path / "anomalies",
    )
    args = ["stream", *flags(model=data["model"], source=data["video"], out=out, events=events, events_mode="frame")]
    args += flags(stats_json=stats, save_anomalies=saved, backend="onnxruntime")
    code = (
        "import sys\nfrom mmad.runtime.cli import main\n"
        f"rc = main({args!r})\n"
        "assert 'torch' not in sys.modules, 'the stream imported torch'\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr

    records = read_events(events)
    assert [e["frame"] for e in records] == list(range(N_FRAMES))
    assert [e["frame"] for e in records if e["anomalous"]] == data["truth"]["defect_frames"]
    assert all(e["regions"] for e in records if e["anomalous"])
    assert decodable_frames(out) == N_FRAMES
    summary = json.loads(stats.read_text())
    assert summary["frames_in"] == summary["frames_inferred"] == N_FRAMES and summary["frames_dropped"] == 0
    assert summary["anomalies"] == len(DEFECTS) and summary["fps"] > 0
    assert sorted(p.name for p in saved.iterdir()) == sorted(
        f"frame_{i:07d}{s}.jpg" for i in DEFECTS for s in ("", "_overlay")
    )


def test_threshold_override_and_roi(data, tmp_path):
    high = tmp_path / "high.jsonl"
    code, stats = run_stream(
        StreamConfig(
            model=str(data["model"]), source=str(data["video"]), events=str(high), threshold=5.0, stats_interval=0
        )
    )
    assert code == 0 and stats.frames_inferred == N_FRAMES and stats.anomalies == 0 and read_events(high) == []
    # Defects sit on the part in the middle of the frame; a corner ROI never sees them.
    corner = tmp_path / "corner.jsonl"
    code, stats = run_stream(
        StreamConfig(
            model=str(data["model"]), source=str(data["video"]), events=str(corner), roi="0,0,48,48", stats_interval=0
        )
    )
    assert code == 0 and stats.anomalies == 0 and read_events(corner) == []


def test_sigint_mid_stream_leaves_a_playable_file(data, tmp_path):
    out, events, stats = tmp_path / "live.mp4", tmp_path / "events.jsonl", tmp_path / "stats.json"
    proc = start_stream(
        *flags(model=data["model"], source="test", out=out, events=events, events_mode="frame", stats_json=stats)
    )
    try:
        assert wait_for_lines(events, 15, timeout=60, proc=proc) >= 15, (
            proc.stderr.read() if proc.poll() is not None else "too slow"
        )
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopped: SIGINT" in stderr
    inferred = json.loads(stats.read_text())["frames_inferred"]
    assert inferred >= 15 and decodable_frames(out) == inferred


def test_undecodable_frame_is_skipped_and_counted(tmp_path, data):
    """An MJPEG frame with a broken Huffman table: the decoder skips it, the stream counts it and goes on."""
    video = tmp_path / "broken.avi"
    make_video(video, n_frames=20, defect_frames=[3], seed=1)
    raw = bytearray(video.read_bytes())
    starts = [m.start() for m in re.finditer(b"\xff\xd8\xff", raw)]
    assert len(starts) == 20
    huffman = raw.index(b"\xff\xc4", starts[10])  # frame 10's first DHT segment
    raw[huffman + 4 : huffman + 21] = b"\xff" * 17  # code counts that add up to far more than 256 codes
    video.write_bytes(bytes(raw))
    code, stats = run_stream(StreamConfig(model=str(data["model"]), source=str(video), stats_interval=0))
    assert code == 0
    assert stats.decode_errors == 1 and stats.frames_inferred == 19 and stats.anomalies == 1


def test_configuration_errors_exit_with_code_2(data, tmp_path, capsys):
    model, video = str(data["model"]), str(data["video"])
    cases = [
        (["--model", str(tmp_path / "none.onnx"), "--source", video], "no such file"),
        (["--model", model, "--source", str(tmp_path / "none.mp4")], "no such file"),
        (["--model", model, "--source", "gopher://host/x"], "unsupported URI scheme"),
        (["--model", model, "--source", video, "--roi", "1000,1000,5,5"], "outside"),
    ]
    for args, message in cases:
        assert mmad_main(["stream", *args, "--stats-interval", "0"]) == 2, args
        assert message in capsys.readouterr().err


def test_model_error_after_gstreamer_is_loaded_is_a_clear_error(data, tmp_path):
    """onnxruntime failing on a graph with the custom op, in a process that has loaded cv2 and GStreamer.

    Regression: with onnxruntime imported after Gst.init, its C++ exception crashed the process
    (libgstreamer's libunwind); gst_util imports it first. onnxruntime-extensions is made unimportable,
    so the backend cannot register the op's kernel and the error is the one a user without it sees.
    """
    from onnx import TensorProto, helper, save

    names = ("u", "delta", "A", "B", "C", "D", "delta_bias")
    node = helper.make_node("SelectiveScan", list(names), ["y"], domain="ai.onnx.contrib", delta_softplus=1)
    graph = helper.make_graph(
        [node],
        "scan",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)]
    )
    model.ir_version = 8
    save(model, str(tmp_path / "custom.onnx"))
    args = ["stream", "--model", str(tmp_path / "custom.onnx"), "--source", str(data["video"])]
    code = (
        "import sys, cv2\n"
        "sys.modules['onnxruntime_extensions'] = None\n"
        "from mmad.runtime.gst_util import import_gst\n"
        "import_gst()\n"
        "from mmad.runtime.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 2, result.stderr
    # The model's inputs are now checked before onnxruntime builds a session; either way one clear sentence.
    assert any(m in result.stderr for m in ("SelectiveScan", "onnxruntime-extensions", "expected an input named"))


def test_a_source_that_is_not_a_video_ends_with_code_2(data, tmp_path, caplog):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n" * 100)
    code, stats = run_stream(StreamConfig(model=str(data["model"]), source=str(not_video), stats_interval=0))
    assert code == 2 and stats.frames_inferred == 0
    assert "not a video this machine can play" in caplog.text


RTSP_SERVER = """
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch("( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 "
                   "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 "
                   "! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/test", factory)
if server.attach(None) == 0:
    sys.exit("cannot listen on " + sys.argv[1])
print("ready", flush=True)
GLib.MainLoop().run()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_rtsp_server(script: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, str(script), str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = server.stdout.readline()
    if line.strip() != "ready":
        server.kill()
        pytest.fail(f"the RTSP test server did not start: {server.stderr.read()}")
    return server


def test_rtsp_source_lost_and_recovered(data, tmp_path):
    """A local RTSP server is stopped mid-stream and restarted; the stream reconnects and goes on."""
    try:
        import gi

        gi.require_version("GstRtspServer", "1.0")
    except ValueError:
        pytest.skip("GstRtspServer introspection data missing (Debian: gir1.2-gst-rtsp-server-1.0)")
    if missing_elements(["rtspsrc", "rtph264depay"]):
        pytest.skip("rtspsrc / rtph264depay missing (gstreamer1.0-plugins-good)")
    script = tmp_path / "rtsp_server.py"
    script.write_text(RTSP_SERVER)
    port = _free_port()
    events, stats, out = tmp_path / "events.jsonl", tmp_path / "stats.json", tmp_path / "rtsp.mp4"
    server = _start_rtsp_server(script, port)
    source = f"rtsp://127.0.0.1:{port}/test"
    stream = start_stream(
        *flags(model=data["model"], source=source, out=out, events=events, events_mode="frame", stats_json=stats),
        *flags(stats_interval=0),
    )
    try:
        assert wait_for_lines(events, 10, timeout=60, proc=stream) >= 10, "no frames from the RTSP server"
        server.terminate()
        server.wait(timeout=10)
        time.sleep(2.0)  # the stream notices and retries with back-off while the server is down
        before = wait_for_lines(events, 10**9, timeout=0.1)
        server = _start_rtsp_server(script, port)
        after = wait_for_lines(events, before + 10, timeout=60, proc=stream)
        assert after >= before + 10, "the stream did not recover after the server came back"
        stream.send_signal(signal.SIGINT)
        _, stderr = stream.communicate(timeout=60)
    finally:
        for p in (stream, server):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert stream.returncode == 0, stderr
    summary = json.loads(stats.read_text())
    assert summary["source_losses"] >= 1 and summary["reconnects"] >= 1
    assert "source lost" in stderr and "source back" in stderr
    frames = [e["frame"] for e in read_events(events)]
    assert frames == sorted(set(frames))  # frame numbers keep counting across the reconnect
    assert decodable_frames(out) == summary["frames_inferred"]


def _python_loader_reason() -> str | None:
    if shutil.which("gst-launch-1.0") is None:
        return "gst-launch-1.0 missing (gstreamer1.0-tools)"
    from mmad.runtime.gst_util import import_gst

    plugins = import_gst().Registry.get().get_plugin_list()  # (a loader that failed here is listed by file name)
    if not any("libgstpython" in (p.get_filename() or "") for p in plugins):
        return "gst-python's plugin loader missing (Debian: gstreamer1.0-python3-plugin-loader)"
    return None


def run_mmadinfer(data, tmp_path, out: Path, properties: str = "") -> subprocess.CompletedProcess:
    """gst-launch-1.0 -m: the video through `mmadinfer model=... PROPERTIES` into an H.264 file."""
    from mmad.runtime.gst_util import plugin_environment

    env = {**ENV, **plugin_environment(tmp_path / "shim")}
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), env.get("PATH", "")]
    )  # the loader embeds this Python
    env["GST_REGISTRY"] = str(tmp_path / "registry.bin")  # a fresh scan that sees GST_PLUGIN_PATH
    pipeline = (
        f"filesrc location={data['video']} ! decodebin ! videoconvert ! video/x-raw,format=RGB "
        f"! mmadinfer model={data['model']} {properties} ! videoconvert ! x264enc speed-preset=ultrafast ! mp4mux "
        f"! filesink location={out}"
    )
    return subprocess.run(
        ["gst-launch-1.0", "-m", *pipeline.split()], capture_output=True, text=True, timeout=120, env=env
    )


def test_mmadinfer_element_in_gst_launch(data, tmp_path):
    reason = _python_loader_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "element.mp4"
    result = run_mmadinfer(data, tmp_path, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    messages = [line for line in result.stdout.splitlines() if "mmad-inspection" in line]
    assert len(messages) == N_FRAMES
    anomalous = [
        int(re.search(r"frame=\(guint64\)(\d+)", m).group(1)) for m in messages if "anomalous=(boolean)true" in m
    ]
    assert anomalous == data["truth"]["defect_frames"]
    assert decodable_frames(out) == N_FRAMES
    assert "threshold 0.35 (model metadata" in result.stdout + result.stderr  # the info message at start


def test_mmadinfer_reads_a_calibration_file(data, tmp_path):
    """The `calibration` property: a calibrated threshold over every score flags nothing; overlay-style is set."""
    reason = _python_loader_reason()
    if reason:
        pytest.skip(reason)
    from mmad.runtime.contract import Calibration, file_sha256, write_calibration

    cal = Calibration(5.0, 4.0, {"rule": "gumbel"}, 40, "test", "onnxruntime", file_sha256(data["model"]))
    path = write_calibration(tmp_path / "cam.calibration.json", cal)
    result = run_mmadinfer(data, tmp_path, tmp_path / "calibrated.mp4", f"calibration={path} overlay-style=heat")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    messages = [line for line in result.stdout.splitlines() if "mmad-inspection" in line]
    assert len(messages) == N_FRAMES and not any("anomalous=(boolean)true" in m for m in messages)
    assert "cam.calibration.json" in result.stdout + result.stderr

"""`mmad calibrate` on GStreamer sources (the stream's decode): a generated video of good frames, a live test
source for a number of seconds, and the sources it must refuse; then `mmad stream` runs with what it wrote,
found automatically, given with --calibration, or chosen with --category."""

from __future__ import annotations

import logging
import socket

import pytest

from mmad.runtime.gst_util import gst_unavailable_reason, missing_elements

pytestmark = pytest.mark.gst
ELEMENTS = ["x264enc", "mp4mux", "h264parse", "avdec_h264", "videotestsrc"]
REASON = gst_unavailable_reason() or (
    f"GStreamer plugins missing: {', '.join(missing_elements(ELEMENTS))}" if missing_elements(ELEMENTS) else None
)
if REASON:
    pytest.skip(REASON, allow_module_level=True)
pytest.importorskip("onnx", reason="building the synthetic model needs the onnx package")

from mmad.runtime.backends import auto_family, load_backend  # noqa: E402
from mmad.runtime.calibrate import CalibrateConfig, CalibrationRefused, run_calibrate  # noqa: E402
from mmad.runtime.cli import main as mmad_main  # noqa: E402
from mmad.runtime.contract import calibration_path, read_calibration  # noqa: E402
from mmad.runtime.events import read_events  # noqa: E402
from mmad.runtime.stream import StreamConfig, run_stream  # noqa: E402
from mmad.runtime.synthetic import SYNTHETIC_THRESHOLD, synthetic_model  # noqa: E402
from mmad.runtime.synthetic_video import make_video  # noqa: E402

DEFECTS = [9, 24, 40]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two H.264 clips of the same part: good frames only, and one with dark defects in known frames."""
    folder = tmp_path_factory.mktemp("calibrate_clips")
    make_video(folder / "good.mp4", n_frames=60, fps=15, size=(320, 240), defect_frames=[], seed=3)
    make_video(folder / "defects.mp4", n_frames=48, fps=15, size=(320, 240), defect_frames=DEFECTS, seed=3)
    return folder


def stream_events(model, source, tmp_path, **options) -> list[dict]:
    """`mmad stream` (in this process) with an event line per inferred frame."""
    events = tmp_path / f"events_{len(list(tmp_path.glob('events_*')))}.jsonl"
    config = StreamConfig(model=str(model), source=str(source), events=str(events), events_mode="frame", **options)
    config.stats_interval, config.durable_events = 0, False
    code, stats = run_stream(config)
    assert code == 0 and stats.frames_inferred > 0
    return read_events(events)


def test_calibrate_a_video_and_stream_with_it(clips, tmp_path, capsys):
    model = synthetic_model(tmp_path / "model.onnx", image_size=64)
    assert mmad_main(["calibrate", "--model", str(model), "--source", str(clips / "good.mp4"), "--frames", "50"]) == 0
    assert "reads it automatically" in capsys.readouterr().out
    calibration = read_calibration(calibration_path(model))
    assert calibration.frames == 50 and calibration.backend.startswith(auto_family("onnxruntime"))
    threshold = calibration.image_threshold
    assert threshold < SYNTHETIC_THRESHOLD / 2  # the decoded good frames score far below the model's default
    with load_backend(model) as backend:  # what the stream loads
        assert backend.info.threshold == threshold and backend.info.pixel_threshold == calibration.pixel_threshold
        assert backend.info.threshold_source == "calibration model.onnx.calibration.json"
    events = stream_events(model, clips / "defects.mp4", tmp_path)
    assert {e["threshold"] for e in events} == {threshold}
    assert [e["frame"] for e in events if e["anomalous"]] == DEFECTS  # every defect, no good frame

    # The same calibration elsewhere, given explicitly; the default one removed.
    moved = tmp_path / "site" / "line1.json"
    moved.parent.mkdir()
    calibration_path(model).rename(moved)
    assert {e["threshold"] for e in stream_events(model, clips / "defects.mp4", tmp_path)} == {SYNTHETIC_THRESHOLD}
    events = stream_events(model, clips / "defects.mp4", tmp_path, calibration=str(moved))
    assert {e["threshold"] for e in events} == {threshold}


def test_stream_picks_the_category_calibration(clips, tmp_path, capsys):
    categories = '{"bottle": {"image": 0.3, "pixel": 0.2, "images": 20}, "tile": {"image": 0.25, "pixel": 0.2}}'
    model = synthetic_model(tmp_path / "model.onnx", image_size=64, metadata={"category_thresholds": categories})
    args = ["calibrate", "--model", str(model), "--source", str(clips / "good.mp4"), "--category", "tile"]
    assert mmad_main([*args, "--frames", "30"]) == 0
    assert "--category tile" in capsys.readouterr().out
    tile = read_calibration(calibration_path(model, "tile"))
    assert tile.category == "tile" and tile.frames == 30
    events = stream_events(model, clips / "defects.mp4", tmp_path, category="tile")
    assert {e["threshold"] for e in events} == {tile.image_threshold}
    events = stream_events(model, clips / "defects.mp4", tmp_path, category="bottle")  # not calibrated: metadata
    assert {e["threshold"] for e in events} == {0.3}


def test_calibrate_a_live_source_for_seconds_with_progress(tmp_path, caplog):
    """videotestsrc's snow: a live source scored for a time, not a number of frames; progress lines on stderr."""
    model = synthetic_model(tmp_path / "model.onnx", image_size=64)
    config = CalibrateConfig(model=str(model), source="test://snow", seconds=2.0, progress_interval=0.5)
    with caplog.at_level(logging.INFO, logger="mmad.calibrate"):
        result = run_calibrate(config)
    assert 20 <= result.calibration.frames <= 2.5 * 30  # 30 frames per second, some dropped while scoring
    assert result.calibration.source == "test://snow"
    progress = [r.getMessage() for r in caplog.records if "frames scored" in r.getMessage()]
    assert progress and all(m.split()[0].isdigit() for m in progress)


def test_calibrate_refuses_a_clip_too_short(tmp_path, capsys):
    make_video(tmp_path / "short.mp4", n_frames=12, fps=15, size=(128, 96), defect_frames=[], seed=1)
    model = synthetic_model(tmp_path / "model.onnx", image_size=64)
    assert mmad_main(["calibrate", "--model", str(model), "--source", str(tmp_path / "short.mp4")]) == 2
    err = capsys.readouterr().err
    assert "refused:" in err and "only 12 frame(s) before it ended" in err
    assert not calibration_path(model).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_calibrate_refuses_failing_and_silent_sources(tmp_path):
    model = str(synthetic_model(tmp_path / "model.onnx", image_size=64))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    with pytest.raises(CalibrationRefused, match="the source failed"):
        run_calibrate(CalibrateConfig(model=model, source=str(broken)))
    if not missing_elements(["rtspsrc"]):
        with pytest.raises(CalibrationRefused, match="the source failed"):  # nothing listens there
            run_calibrate(CalibrateConfig(model=model, source=f"rtsp://127.0.0.1:{_free_port()}/x", timeout=10))
        with socket.socket() as silent:  # accepts the connection, never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            source = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/x"
            with pytest.raises(CalibrationRefused, match="no frame within 1 s"):
                run_calibrate(CalibrateConfig(model=model, source=source, timeout=1.0))

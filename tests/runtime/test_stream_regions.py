"""`mmad stream` with calibrated thresholds, defect regions, its overlay styles and honest frame counts.

Real GStreamer and onnxruntime on CPU, the synthetic model (`synthetic_onnx`) and a generated video
(mmad.runtime.synthetic_video), as in test_stream.py.
"""

from __future__ import annotations

import json
import shutil
import time

import cv2
import numpy as np
import pytest

from mmad.runtime.gst_util import gst_unavailable_reason, missing_elements

pytestmark = pytest.mark.gst
NEEDED = ["x264enc", "mp4mux", "h264parse", "avdec_h264", "videotestsrc"]
REASON = gst_unavailable_reason() or (
    "GStreamer plugins missing: " + ", ".join(missing_elements(NEEDED)) if missing_elements(NEEDED) else None
)
if REASON:
    pytest.skip(REASON, allow_module_level=True)
pytest.importorskip("onnx", reason="building the synthetic model needs the onnx package")

from mmad.runtime.backends import load_backend  # noqa: E402
from mmad.runtime.contract import Calibration, calibration_path, file_sha256, write_calibration  # noqa: E402
from mmad.runtime.errors import ConfigError  # noqa: E402
from mmad.runtime.stream import StreamConfig, StreamRunner, run_stream  # noqa: E402
from mmad.runtime.synthetic_video import make_video  # noqa: E402

N_FRAMES = 30
DEFECTS = [6, 17, 25]
LABEL_ROWS = 40  # the score label at the top of the annotated frame


@pytest.fixture(scope="module")
def data(tmp_path_factory, synthetic_onnx):
    folder = tmp_path_factory.mktemp("stream_regions")
    model = folder / "model.onnx"  # a copy: calibration files written beside it stay out of the shared fixture
    shutil.copy(synthetic_onnx, model)
    video = folder / "sample.mp4"
    make_video(video, n_frames=N_FRAMES, fps=15, size=(320, 240), defect_frames=DEFECTS, seed=5)
    return {"model": model, "video": video, "truth": json.loads(video.with_suffix(".json").read_text())}


def calibration(model, image: float, pixel: float | None, category: str | None = None) -> Calibration:
    fit = {"rule": "gumbel", "threshold": image}
    return Calibration(image, pixel, fit, 40, "test", "onnxruntime", file_sha256(model), category)


def config(data, **options) -> StreamConfig:
    return StreamConfig(model=str(data["model"]), source=str(data["video"]), stats_interval=0, **options)


def test_max_frames_on_a_file_drops_nothing_and_reports_the_thresholds(data, tmp_path):
    """Frames the decoder queued ahead are "queued" when --max-frames stops the run, not "dropped"."""
    stats_json = tmp_path / "stats.json"
    code, stats = run_stream(config(data, max_frames=3, stats_json=str(stats_json)))
    assert code == 0 and stats.frames_inferred == 3 and stats.frames_dropped == 0
    assert stats.frames_in >= 3 and stats.frames_queued == stats.frames_in - 3
    summary = json.loads(stats_json.read_text())
    info = load_backend(data["model"]).info
    assert (summary["threshold"], summary["pixel_threshold"]) == (info.threshold, info.threshold)
    assert summary["threshold_source"] == info.threshold_source and summary["frames_queued"] == stats.frames_queued
    # A file's latency is measured from when the loop takes the frame, not from the decoder queueing it ahead.
    assert summary["latency_from"] == "pull" and summary["queue_ms_median"] is not None


def test_a_slow_model_on_a_live_source_drops_and_counts_it(data, monkeypatch):
    """A live source outpacing inference: the leaky queue / appsink drop frames, and every frame is accounted for."""
    runner = StreamRunner(StreamConfig(model=str(data["model"]), source="test", max_frames=6, stats_interval=0))
    inspect = runner.inspector.inspect

    def slow(frame):
        time.sleep(0.15)  # ~4 frames of a 30 fps source
        return inspect(frame)

    monkeypatch.setattr(runner.inspector, "inspect", slow)
    assert runner.run() == 0
    s = runner.stats
    assert s.frames_inferred == 6 and s.frames_dropped >= 6 and s.latency_from == "arrival"
    assert s.frames_in == s.frames_inferred + s.frames_bad + s.frames_dropped + s.frames_queued
    assert s.frames_queued <= 4  # the leaky queue (2), the appsink (1) and one in between at most


def test_calibration_file_is_read_explicitly_and_beside_the_model(data, tmp_path, caplog):
    explicit = write_calibration(tmp_path / "cam.calibration.json", calibration(data["model"], 5.0, 4.0))
    with caplog.at_level("INFO", logger="mmad.stream"):
        code, stats = run_stream(config(data, calibration=str(explicit)))
    assert code == 0 and stats.anomalies == 0 and (stats.threshold, stats.pixel_threshold) == (5.0, 4.0)
    assert "cam.calibration.json" in stats.threshold_source
    first = caplog.records[0].getMessage()  # the first line says where the thresholds come from
    assert "threshold 5 (calibration " in first and "cam.calibration.json), regions above 4" in first
    beside = calibration_path(data["model"])
    try:
        write_calibration(beside, calibration(data["model"], 0.3, 0.2))
        code, stats = run_stream(config(data))  # found without --calibration
        assert code == 0 and (stats.threshold, stats.pixel_threshold) == (0.3, 0.2)
        assert beside.name in stats.threshold_source and stats.anomalies == len(DEFECTS)
        code, stats = run_stream(config(data, threshold=0.25))  # --threshold still overrides the image threshold
        assert (stats.threshold, stats.pixel_threshold, stats.threshold_source) == (0.25, 0.2, "--threshold")
    finally:
        beside.unlink(missing_ok=True)


def test_events_have_one_region_per_defect_where_it_is(data, tmp_path):
    events = tmp_path / "events.jsonl"
    explicit = write_calibration(tmp_path / "cam.calibration.json", calibration(data["model"], 0.3, 0.18))
    code, stats = run_stream(config(data, calibration=str(explicit), events=str(events), events_mode="frame"))
    assert code == 0
    records = [json.loads(line) for line in events.read_text().splitlines()]
    boxes = {d["frame"]: d["box"] for d in data["truth"]["defects"]}
    assert [r["frame"] for r in records if r["anomalous"]] == DEFECTS
    for r in records:
        if r["frame"] not in boxes:
            assert r["regions"] == [], r
            continue
        assert len(r["regions"]) == 1 and r["pixel_threshold"] == 0.18, r
        x, y, w, h = boxes[r["frame"]]
        box = r["regions"][0]
        assert box["x"] < x + w and x < box["x"] + box["w"] and box["y"] < y + h and y < box["y"] + box["h"]


def read_video(path) -> list[np.ndarray]:
    """Every frame of a video as RGB, decoded by OpenCV's FFmpeg."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).astype(np.int16))
    capture.release()
    return frames


def test_annotated_video_colours_only_defects_by_default(data, tmp_path):
    """The default overlay leaves good frames as the camera saw them; --overlay-style heat tints every frame."""
    source = read_video(data["video"])
    differences = {}
    for style in ("regions", "heat"):
        out = tmp_path / f"{style}.mp4"
        code, _ = run_stream(config(data, out=str(out), overlay_style=style))
        annotated = read_video(out)
        assert code == 0 and len(annotated) == N_FRAMES
        differences[style] = [
            float((np.abs(a[LABEL_ROWS:] - s[LABEL_ROWS:]).max(axis=2) > 40).mean())  # share of pixels recoloured
            for a, s in zip(annotated, source, strict=True)
        ]
    good = [i for i in range(N_FRAMES) if i not in DEFECTS]
    regions, heat = differences["regions"], differences["heat"]
    assert max(regions[i] for i in good) < 0.001  # codec noise only
    assert min(heat[i] for i in good) > 0.5
    assert min(regions[i] for i in DEFECTS) > max(regions[i] for i in good)  # the defect is coloured


def test_a_category_the_calibration_does_not_have_is_a_config_error(data, tmp_path):
    explicit = write_calibration(tmp_path / "cam.calibration.json", calibration(data["model"], 0.3, 0.2, "bottle"))
    with pytest.raises(ConfigError, match="bottle"):
        run_stream(config(data, calibration=str(explicit), category="screw"))

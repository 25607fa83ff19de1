"""What a calibration promises, checked on frames it did not see: the false-alarm rate it predicts, on a second
clip of good parts; and per-category thresholds for two generated categories whose good parts score at
different levels.

The clips show a new part in every frame (mmad.runtime.synthetic_video's scene with another seed: another
surface texture), written as MJPEG and decoded by the stream's pipeline, as a camera over a conveyor
delivers them. The synthetic model (mmad.runtime.synthetic) scores them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mmad.runtime.gst_util import gst_unavailable_reason, missing_elements

pytestmark = pytest.mark.gst
REASON = gst_unavailable_reason() or (
    "GStreamer plugins missing: avidemux, jpegdec" if missing_elements(["avidemux", "jpegdec"]) else None
)
if REASON:
    pytest.skip(REASON, allow_module_level=True)
pytest.importorskip("onnx", reason="building the synthetic model needs the onnx package")

from mmad.runtime.backends import load_backend  # noqa: E402
from mmad.runtime.calibrate import CalibrateConfig, run_calibrate  # noqa: E402
from mmad.runtime.calibrate.frames import known_good_frames  # noqa: E402
from mmad.runtime.calibrate.run import score_frame  # noqa: E402
from mmad.runtime.contract import ThresholdFit, calibration_path  # noqa: E402
from mmad.runtime.events import read_events  # noqa: E402
from mmad.runtime.stream import StreamConfig, run_stream  # noqa: E402
from mmad.runtime.synthetic import synthetic_model  # noqa: E402
from mmad.runtime.synthetic_video import render_frames  # noqa: E402

FRAME_SIZE = (160, 120)
# Calibration: 40 good parts for a 5 % target (the rate a 800-part clip can measure: about 20 false alarms).
CALIBRATION_PARTS, TEST_PARTS, TARGET_RATE = 40, 800, 0.05
# The Gumbel distribution's skewness and excess kurtosis: the sampling error of a fit by moments.
GUMBEL_SKEW, GUMBEL_EXCESS_KURTOSIS, EULER_GAMMA = 1.1395, 2.4, 0.5772156649015329


def part(seed: int, contrast: float = 1.0) -> np.ndarray:
    """A good part (uint8 RGB): the generated scene of this seed, its contrast around mid-grey scaled."""
    frame = next(render_frames(1, FRAME_SIZE, [], seed))[0].astype(np.float32)
    return np.clip(128.0 + contrast * (frame - 128.0), 0, 255).astype(np.uint8)


def write_clip(path, frames) -> str:
    """An MJPEG AVI (what the quickstart's camera clip is), 15 fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, FRAME_SIZE)
    assert writer.isOpened(), "OpenCV cannot write MJPEG here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def log_ratio_sd(fit: ThresholdFit, calibration_frames: int, test_frames: int) -> float:
    """The standard error of log(observed / predicted false-alarm rate).

    Two parts: counting on the test clip (Poisson: 1 / expected count) and the fit's own error from
    `calibration_frames` scores. With p ~ exp(-z), z = (t - location) / scale, the delta method on the
    moment estimates (mean m, standard deviation s) gives
        var(z) = [pi^2/6 + (kurtosis + 2)/4 * w^2 + skewness * (pi/sqrt 6) * w] / n,   w = z - gamma.
    """
    w = (fit.threshold - fit.location) / fit.scale - EULER_GAMMA
    fit_var = math.pi**2 / 6 + (GUMBEL_EXCESS_KURTOSIS + 2) / 4 * w * w + GUMBEL_SKEW * math.pi / math.sqrt(6) * w
    return math.sqrt(fit_var / calibration_frames + 1.0 / (test_frames * fit.expected_false_alarm_rate))


def test_predicted_false_alarm_rate_matches_a_clip_it_did_not_see(tmp_path):
    """The rate the fit predicts at its threshold against the rate on 800 unseen good parts, within the sampling
    error of both (log_ratio_sd), and never above it by more than the counting error (the promise to a user)."""
    model = synthetic_model(tmp_path / "model.onnx", image_size=64)
    calibration_clip = write_clip(tmp_path / "good_a.avi", (part(seed) for seed in range(CALIBRATION_PARTS)))
    test_clip = write_clip(tmp_path / "good_b.avi", (part(10_000 + seed) for seed in range(TEST_PARTS)))
    config = CalibrateConfig(model=str(model), source=calibration_clip, target_false_alarm_rate=TARGET_RATE)
    fit = run_calibrate(config).fit
    assert fit.count == CALIBRATION_PARTS

    # The unseen clip through `mmad stream`, which finds the calibration beside the model by itself.
    with load_backend(model) as backend:
        assert backend.info.threshold == fit.threshold and backend.info.threshold_source.startswith("calibration")
    stream = StreamConfig(model=str(model), source=test_clip, events=str(tmp_path / "alarms.jsonl"))
    stream.stats_interval, stream.durable_events = 0, False
    code, stats = run_stream(stream)
    assert code == 0 and stats.frames_inferred == TEST_PARTS
    alarms, predicted = stats.anomalies, fit.expected_false_alarm_rate
    assert all(event["threshold"] == fit.threshold for event in read_events(tmp_path / "alarms.jsonl"))
    log_ratio = math.log((alarms + 0.5) / (TEST_PARTS * predicted))
    tolerance = 3 * log_ratio_sd(fit, CALIBRATION_PARTS, TEST_PARTS)
    figures = (
        f"predicted {100 * predicted:.2f} % (threshold {fit.threshold:.5f}, {fit.count} frames), observed "
        f"{alarms}/{TEST_PARTS} = {100 * alarms / TEST_PARTS:.2f} %; log ratio {log_ratio:+.2f}, 3 s.e. {tolerance:.2f}"
    )
    print(figures)
    assert abs(log_ratio) <= tolerance, figures
    expected = TEST_PARTS * predicted
    assert alarms <= expected + 3 * math.sqrt(expected), figures


def test_two_categories_get_their_own_thresholds(tmp_path):
    """Dim parts score about half as high as bright ones: each category's calibration sets its own threshold,
    so a faint stain on a dim part is caught that one threshold for both would pass."""
    category_thresholds = {"dim": {"image": 0.2, "pixel": 0.2}, "bright": {"image": 0.3, "pixel": 0.2}}
    model = synthetic_model(
        tmp_path / "model.onnx", image_size=64, metadata={"category_thresholds": category_thresholds}
    )
    levels = {"dim": 0.5, "bright": 1.0}
    for name, contrast in levels.items():
        clip = write_clip(tmp_path / f"{name}.avi", (part(seed, contrast) for seed in range(60)))
        run_calibrate(CalibrateConfig(model=str(model), source=clip, category=name, frames=60))
        assert calibration_path(model, name).is_file()

    stained = part(5_000, levels["dim"])
    cv2.circle(stained, (80, 60), 8, (144, 144, 144), -1)  # 16 grey levels lighter: faint
    unseen = {}
    for name, contrast in levels.items():
        frames = (part(20_000 + seed, contrast) for seed in range(40))
        unseen[name] = write_clip(tmp_path / f"{name}_unseen.avi", frames)
    thresholds = {}
    for name in levels:
        with load_backend(model, category=name) as backend:
            assert backend.info.threshold_source == f"calibration model.onnx.{name}.calibration.json, category {name}"
            thresholds[name] = backend.info.threshold
            scores = [score_frame(backend, frame, None)[1] for frame in known_good_frames(unseen[name], 10.0)]
            assert len(scores) == 40 and max(scores) <= backend.info.threshold  # no good part of its own flagged
            stain_score = score_frame(backend, stained, None)[1]
    assert thresholds["dim"] < stain_score < thresholds["bright"]  # caught with dim's threshold only
    assert thresholds["bright"] > 1.5 * thresholds["dim"]

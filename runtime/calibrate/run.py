"""One calibration: score known-good frames as the stream does, fit the thresholds, write them beside the model.

result = run_calibrate(CalibrateConfig(model="model.onnx", source="good.mp4"))

frames   frames.known_good_frames: the stream's decode (or a folder of images)
score    the stream's pre-processing (ROI crop, processing.model_input), one frame per inference as the
         stream runs it, on the backend load_backend picks (its metadata's thresholds: a calibration file
         already beside the model is ignored, so a stale one never blocks recalibrating)
image    contract.fit_threshold(scores, --target-false-alarm-rate): the Gumbel rule training uses too
pixel    contract.pixel_threshold(maps) over the frames' maps at model size (a uniform sample of at most
         MAX_MAPS of them, so a long --seconds run keeps its memory bounded)
write    contract.write_calibration -> calibration_path(model, --name or --category), or --out; the plot
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mmad.runtime.backends import Backend, load_backend
from mmad.runtime.calibrate.config import CalibrateConfig, CalibrationRefused
from mmad.runtime.calibrate.frames import known_good_frames
from mmad.runtime.calibrate.plot import write_plot
from mmad.runtime.contract import (
    MIN_NORMAL_SCORES,
    Calibration,
    ThresholdFit,
    calibration_path,
    file_sha256,
    fit_threshold,
    pixel_threshold,
    write_calibration,
)
from mmad.runtime.errors import ConfigError
from mmad.runtime.model_info import ModelInfo, with_thresholds
from mmad.runtime.processing import Roi, full_frame, model_input, parse_roi

log = logging.getLogger("mmad.calibrate")

MAX_MAPS = 200  # anomaly maps kept for the pixel threshold (256 x 256 float32: 52 MB)


@dataclass
class CalibrationResult:
    """What a calibration wrote, and what it was made from."""

    calibration: Calibration
    path: Path  # the calibration file
    plot: Path | None  # calibration.png; None without matplotlib
    fit: ThresholdFit
    scores: np.ndarray  # float64 [frames], in source order
    previous: ModelInfo  # the thresholds the model had without this calibration


@dataclass
class _Scored:
    scores: list[float]
    maps: list[np.ndarray]  # a uniform sample of the maps (reservoir sampling)
    seconds: float


def score_frame(backend: Backend, frame: np.ndarray, roi: Roi | None) -> tuple[np.ndarray, float]:
    """One frame as the stream scores it: the ROI (clipped to the frame) resized to the input -> (map [h, w], score)."""
    region = roi.clipped(frame.shape[1], frame.shape[0]) if roi is not None else full_frame(frame)
    maps, scores = backend.infer(model_input(frame, region, (backend.info.height, backend.info.width))[None])
    return maps[0], float(scores[0])


def score_frames(backend: Backend, frames: Iterable[np.ndarray], config: CalibrateConfig, roi: Roi | None) -> _Scored:
    """Score frames until --frames, --seconds (from the first frame) or the source's end; progress on stderr."""
    limit, rng = config.frame_limit(), np.random.default_rng(0)
    scored = _Scored([], [], 0.0)
    started = next_report = None
    for frame in frames:
        model_map, score = score_frame(backend, frame, roi)
        now = time.perf_counter()
        if started is None:
            started, next_report = now, now + config.progress_interval
        scored.scores.append(score)
        n = len(scored.scores)
        if len(scored.maps) < MAX_MAPS:
            scored.maps.append(model_map)
        elif (slot := int(rng.integers(n))) < MAX_MAPS:
            scored.maps[slot] = model_map
        scored.seconds = now - started
        if (limit is not None and n >= limit) or (config.seconds and scored.seconds >= config.seconds):
            break
        if config.progress_interval > 0 and now >= next_report:
            log.info("%d frames scored (%.0f s)", n, scored.seconds)
            next_report = now + config.progress_interval
    return scored


def fit_scores(scored: _Scored, config: CalibrateConfig) -> tuple[ThresholdFit, float]:
    """(image threshold fit, pixel threshold) from the scored frames; CalibrationRefused when they cannot make one."""
    count = len(scored.scores)
    if count < MIN_NORMAL_SCORES:
        raise CalibrationRefused(
            f"--source {config.source}: only {count} frame(s) before it ended; a calibration needs at least "
            f"{MIN_NORMAL_SCORES} known-good frames: give a longer clip, more images or more --seconds"
        )
    try:
        fit = fit_threshold(scored.scores, config.target_false_alarm_rate)
        pixel = pixel_threshold(np.stack(scored.maps))
    except ValueError as err:  # all scores equal, or NaN / inf: a frozen source or a broken model
        raise CalibrationRefused(f"cannot calibrate on the {count} frames of {config.source}: {err}") from None
    return fit, pixel


def output_path(config: CalibrateConfig) -> Path:
    """--out, else the contract's calibration_path(model, --name or --category)."""
    if config.out:
        return Path(config.out)
    return calibration_path(Path(config.model), config.name or config.category)


def previous_thresholds(info: ModelInfo, config: CalibrateConfig) -> ModelInfo:
    """The model's own thresholds for --category; ConfigError for a category its metadata does not list
    (when it lists any: a single-category model takes any name)."""
    if config.category is None or not info.categories:
        return info
    if config.category not in info.categories:
        known = ", ".join(info.categories)
        raise ConfigError(f"--category {config.category}: {Path(config.model).name} knows the categories {known}")
    return with_thresholds(info, Path(config.model), calibration=False, category=config.category)


def run_calibrate(config: CalibrateConfig) -> CalibrationResult:
    """Calibrate `config.model` on `config.source`; writes the file and the plot. ConfigError (CalibrationRefused
    among them) for bad options, a bad model or source, and frames that cannot make a calibration."""
    config.check()
    roi = parse_roi(config.roi) if config.roi else None
    path = output_path(config)
    model = Path(config.model)
    frames = known_good_frames(config.source, config.timeout)  # a missing file fails here, before the model loads
    options = dict(op_library=config.op_library, plugin_library=config.plugin_library, threads=config.threads or 0)
    try:
        with load_backend(
            model, config.backend, allow_foreign_engine=config.allow_foreign_engine, calibration=False, **options
        ) as backend:
            previous = previous_thresholds(backend.info, config)
            backend_name = backend.describe()
            log.info("scoring known-good frames of %s on %s", config.source, backend_name)
            scored = score_frames(backend, frames, config, roi)
    finally:
        frames.close()
    count, limit = len(scored.scores), config.frame_limit()
    log.info("scored %d frames in %.1f s", count, scored.seconds)
    if limit is not None and count < limit and not (config.seconds and scored.seconds >= config.seconds):
        log.warning("the source ended after %d of the %d frames asked for", count, limit)
    fit, pixel = fit_scores(scored, config)
    for name, value in (("image", fit.threshold), ("pixel", pixel)):  # one the model cannot reach would pass all
        previous.check_threshold(value, f"{model}: the calibrated {name} threshold")
    calibration = Calibration(
        image_threshold=fit.threshold,
        pixel_threshold=pixel,
        fit={k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in asdict(fit).items()},
        frames=len(scored.scores),
        source=config.source,
        backend=backend_name,
        model_sha256=file_sha256(model),
        category=config.category,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_calibration(path, calibration)
    scores = np.asarray(scored.scores, np.float64)
    plot = write_plot(path.with_suffix(".png"), scores, fit, f"{config.source} on {backend_name}")
    return CalibrationResult(calibration, path, plot, fit, scores, previous)

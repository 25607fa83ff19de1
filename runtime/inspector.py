"""One frame in, one verdict out: ROI crop, resize, inference, map -> score, regions and overlay.

Independent of GStreamer, so the stream, the `mmadinfer` element and a plain Python loop share it:

    inspector = FrameInspector(load_backend("model.onnx"), roi=parse_roi("0,0,640,480"))
    result = inspector.inspect(frame_rgb)
    annotated = inspector.overlay(frame_rgb, result)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .backends import Backend
from .errors import ConfigError
from .processing import (
    OVERLAY_STYLES,
    Inspection,
    Roi,
    draw_overlay,
    full_frame,
    inspect,
    model_input,
    region_threshold,
)


@dataclass
class FrameTimings:
    """Seconds spent on the last frame: pre-processing, inference, post-processing."""

    pre: float = 0.0
    infer: float = 0.0
    post: float = 0.0


class FrameInspector:
    """A backend plus the deployment thresholds and ROI; inspects uint8 RGB frames [H, W, 3].

    threshold: overrides the image threshold the backend read (calibration file or model metadata,
    ModelInfo.threshold); regions use the backend's pixel threshold (ModelInfo.pixel_threshold), never
    above the image threshold (processing.region_threshold). overlay_style: "regions" or "heat".
    """

    def __init__(
        self,
        backend: Backend,
        threshold: float | None = None,
        roi: Roi | None = None,
        min_region_area: int = 16,
        overlay_style: str = "regions",
    ):
        if overlay_style not in OVERLAY_STYLES:
            raise ConfigError(f"--overlay-style {overlay_style!r}: expected one of {', '.join(OVERLAY_STYLES)}")
        info = backend.info
        self.backend = backend
        self.roi = roi
        self.min_region_area = min_region_area
        self.overlay_style = overlay_style
        self.threshold = info.check_threshold(threshold) if threshold is not None else info.threshold
        if self.threshold is None:
            raise ConfigError(
                f"{info.source}: the model's metadata has no threshold; give one with --threshold "
                "or calibrate it on good frames (mmad calibrate)"
            )
        self.pixel_threshold = info.pixel_threshold  # None: the image threshold
        self.threshold_source = "--threshold" if threshold is not None else info.threshold_source
        self.timings = FrameTimings()

    def describe_thresholds(self) -> str:
        """Where the thresholds come from, for the log: "threshold 0.35 (model metadata), regions above 0.2"."""
        text = f"threshold {self.threshold:.6g} ({self.threshold_source})"
        if self.threshold_source == "--threshold" and self.backend.info.threshold is not None:
            text += f" instead of {self.backend.info.threshold:.6g} ({self.backend.info.threshold_source})"
        pixel = self.region_threshold
        return text + (f", regions above {pixel:.6g}" if pixel != self.threshold else ", regions above it")

    @property
    def region_threshold(self) -> float:
        """The map value regions are drawn above (processing.region_threshold)."""
        return region_threshold(self.threshold, self.pixel_threshold)

    def roi_for(self, frame: np.ndarray) -> Roi:
        """The configured ROI clipped to this frame, or the whole frame."""
        if self.roi is None:
            return full_frame(frame)
        return self.roi.clipped(frame.shape[1], frame.shape[0])

    def inspect(self, frame: np.ndarray) -> Inspection:
        """uint8 RGB [H, W, 3] -> Inspection (score, verdict, regions, map in frame pixels)."""
        t0 = time.perf_counter()
        roi = self.roi_for(frame)
        batch = model_input(frame, roi, (self.backend.info.height, self.backend.info.width))[None]
        t1 = time.perf_counter()
        maps, scores = self.backend.infer(batch)
        t2 = time.perf_counter()
        result = inspect(
            maps[0], float(scores[0]), self.threshold, roi, frame.shape, self.min_region_area, self.pixel_threshold
        )
        self.timings = FrameTimings(pre=t1 - t0, infer=t2 - t1, post=time.perf_counter() - t2)
        return result

    def overlay(self, frame: np.ndarray, result: Inspection, alpha: float = 0.4) -> np.ndarray:
        """The annotated frame in this inspector's overlay style: uint8 RGB [H, W, 3] (processing.draw_overlay)."""
        return draw_overlay(
            frame,
            result.frame_map,
            result.threshold,
            result.score,
            result.regions,
            self.roi_for(frame),
            alpha,
            style=self.overlay_style,
            region_mask=result.region_mask,
        )

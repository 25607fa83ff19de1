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
from .processing import Inspection, Roi, draw_overlay, full_frame, inspect, model_input


@dataclass
class FrameTimings:
    """Seconds spent on the last frame: pre-processing, inference, post-processing."""

    pre: float = 0.0
    infer: float = 0.0
    post: float = 0.0


class FrameInspector:
    """A backend plus the deployment threshold and ROI; inspects uint8 RGB frames [H, W, 3]."""

    def __init__(
        self, backend: Backend, threshold: float | None = None, roi: Roi | None = None, min_region_area: int = 16
    ):
        self.backend = backend
        self.roi = roi
        self.min_region_area = min_region_area
        self.threshold = threshold if threshold is not None else backend.info.threshold
        if self.threshold is None:
            raise ConfigError(
                f"{backend.info.source}: the model's metadata has no threshold; give one with --threshold"
            )
        self.timings = FrameTimings()

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
        result = inspect(maps[0], float(scores[0]), self.threshold, roi, frame.shape, self.min_region_area)
        self.timings = FrameTimings(pre=t1 - t0, infer=t2 - t1, post=time.perf_counter() - t2)
        return result

    def overlay(self, frame: np.ndarray, result: Inspection, alpha: float = 0.4) -> np.ndarray:
        """The annotated frame: heat map inside the ROI, region boxes, score. uint8 RGB [H, W, 3]."""
        return draw_overlay(
            frame, result.frame_map, result.threshold, result.score, result.regions, self.roi_for(frame), alpha
        )

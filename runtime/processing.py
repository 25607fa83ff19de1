"""Pre- and post-processing around the model, in numpy and OpenCV.

Frames are uint8 RGB [H, W, 3] (the stream asks GStreamer for RGB, which is also the model's
colour order). The model sees the region of interest resized to its input size; its anomaly map
is resized back onto that region, so masks, boxes and the overlay are in frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mmad.runtime.contract import resize_to_input

from .errors import ConfigError


@dataclass(frozen=True)
class Roi:
    """A region of interest in frame pixels: top-left corner (x, y), width w, height h."""

    x: int
    y: int
    w: int
    h: int

    def clipped(self, frame_w: int, frame_h: int) -> "Roi":
        """This ROI intersected with a frame_w x frame_h frame; ConfigError when nothing is left."""
        x0, y0 = max(self.x, 0), max(self.y, 0)
        x1, y1 = min(self.x + self.w, frame_w), min(self.y + self.h, frame_h)
        if x1 <= x0 or y1 <= y0:
            raise ConfigError(f"--roi {self.x},{self.y},{self.w},{self.h} lies outside the {frame_w}x{frame_h} frame")
        return Roi(x0, y0, x1 - x0, y1 - y0)


def parse_roi(text: str) -> Roi:
    """'x,y,w,h' (integers, w and h > 0) -> Roi."""
    parts = text.split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--roi {text!r}: expected four integers x,y,w,h") from None
    if w <= 0 or h <= 0:
        raise ConfigError(f"--roi {text!r}: width and height must be positive")
    return Roi(x, y, w, h)


def full_frame(frame: np.ndarray) -> Roi:
    return Roi(0, 0, frame.shape[1], frame.shape[0])


def to_rgb(frame: np.ndarray, color_order: str) -> np.ndarray:
    """A uint8 [H, W, 3] frame in `color_order` ("RGB" or "BGR") as RGB."""
    if color_order == "RGB":
        return frame
    if color_order == "BGR":
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    raise ConfigError(f"colour order {color_order!r}: expected 'RGB' or 'BGR'")


def model_input(frame: np.ndarray, roi: Roi, size: tuple[int, int], color_order: str = "RGB") -> np.ndarray:
    """Crop `roi` from a uint8 [H, W, 3] frame and resize it to size=(height, width): uint8 [h, w, 3] RGB.

    The resize is the contract's resize_to_input (INTER_AREA shrinking, INTER_LINEAR enlarging), the
    one training feeds the model through too.
    """
    crop = resize_to_input(frame[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w], size)
    return np.ascontiguousarray(to_rgb(crop, color_order))


def score_from_map(anomaly_map: np.ndarray) -> np.ndarray:
    """Image scores from maps [B, H, W] (or [B, 1, H, W]): the maximum, as the exported model computes it -> [B]."""
    return anomaly_map.reshape(anomaly_map.shape[0], -1).max(axis=1)


def map_to_frame(anomaly_map: np.ndarray, roi: Roi, frame_shape: tuple[int, ...]) -> np.ndarray:
    """A model-sized map [h, w] placed back on the frame: float32 [H, W], zero outside the ROI."""
    full = np.zeros(frame_shape[:2], np.float32)
    full[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w] = cv2.resize(
        anomaly_map.astype(np.float32, copy=False), (roi.w, roi.h), interpolation=cv2.INTER_LINEAR
    )
    return full


def binary_mask(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose anomaly value exceeds the threshold: bool [H, W]."""
    return anomaly_map > threshold


@dataclass(frozen=True)
class Region:
    """One connected anomalous region: bounding box (x, y, w, h), area in pixels, peak map value."""

    x: int
    y: int
    w: int
    h: int
    area: int
    peak: float

    def as_dict(self) -> dict[str, float | int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h, "area": self.area, "peak": round(self.peak, 6)}


def find_regions(
    anomaly_map: np.ndarray, threshold: float, min_area: int = 16, seed: float | None = None
) -> tuple[list[Region], np.ndarray]:
    """Connected regions of map > threshold, largest first, and their pixels: (regions, bool [H, W]).

    Regions under min_area pixels are noise. With `seed`, a region is kept only when its peak reaches
    min(seed, the map's maximum): hysteresis, as an edge detector does. The pixel threshold (from normal
    maps) draws a defect's extent, but a few good pixels exceed it in every frame (it is a high quantile
    of them, not their maximum); only a region holding a pixel that alone makes the frame anomalous (the
    image threshold), or the frame's strongest region, is a defect. anomaly_map: float [H, W].
    """
    mask = binary_mask(anomaly_map, threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    floor = -np.inf if seed is None or n < 2 else min(seed, float(anomaly_map.max()))
    kept = np.zeros(n, bool)  # per label
    regions = []
    for label in range(1, n):  # label 0 is the background
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        peak = float(anomaly_map[y : y + h, x : x + w][labels[y : y + h, x : x + w] == label].max())
        if peak < floor:
            continue
        kept[label] = True
        regions.append(Region(x, y, w, h, area, peak))
    return sorted(regions, key=lambda r: r.area, reverse=True), kept[labels]


def anomalous_regions(
    anomaly_map: np.ndarray, threshold: float, min_area: int = 16, seed: float | None = None
) -> list[Region]:
    """The regions of find_regions: boxes, areas and peak values, largest first."""
    return find_regions(anomaly_map, threshold, min_area, seed)[0]


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a bool [H, W] mask, as OpenCV point arrays [N, 1, 2] (x, y)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours)


def region_contours(anomaly_map: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Outer contours of map > threshold, as OpenCV point arrays [N, 1, 2] (x, y)."""
    return mask_contours(binary_mask(anomaly_map, threshold))


def heat_colors(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """The map as a JET colour image, uint8 RGB [H, W, 3].

    Scaled so 0 is blue, the threshold is the middle of the colour map and 2 x threshold or more is
    red: the same value has the same colour in every frame, and anything warmer than green-yellow is
    over the threshold.
    """
    top = 2.0 * threshold if threshold > 0 else float(anomaly_map.max()) or 1.0
    # convertScaleAbs scales and saturates to 0..255 in one pass; max(., 0) keeps negatives at 0.
    levels = cv2.convertScaleAbs(cv2.max(anomaly_map.astype(np.float32, copy=False), 0.0), alpha=255.0 / top)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


RED = (255, 40, 40)
GREEN = (40, 220, 40)
OUTLINE = (255, 255, 0)  # region contours
# The annotated frame's styles: "regions" colours only the defect regions' pixels (those above the pixel
# threshold) and leaves a good frame as the camera saw it; "heat" blends the whole heat map into the ROI.
OVERLAY_STYLES = ("regions", "heat")
REGION_ALPHA = 0.55  # the regions style's tint: strong, since it covers only the defect


def _tint(out: np.ndarray, anomaly_map: np.ndarray, threshold: float, mask: np.ndarray, alpha: float) -> None:
    """Blend the heat colours into `out` where `mask` is set, in place (only the mask's bounding box is coloured)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = out[y0:y1, x0:x1]
    blended = cv2.addWeighted(box, 1.0 - alpha, heat_colors(anomaly_map[y0:y1, x0:x1], threshold), alpha, 0.0)
    inside = mask[y0:y1, x0:x1]
    box[inside] = blended[inside]


def _label(out: np.ndarray, score: float, anomalous: bool) -> None:
    scale = max(out.shape[0] / 480.0, 0.4)
    text = f"{'ANOMALY' if anomalous else 'ok'} {score:.3f}"
    colour = RED if anomalous else GREEN
    thickness = max(int(2 * scale), 1)
    cv2.putText(
        out, text, (8, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour, thickness, cv2.LINE_AA
    )


def draw_overlay(
    frame: np.ndarray,
    anomaly_map: np.ndarray,
    threshold: float,
    score: float,
    regions: list[Region],
    roi: Roi | None = None,
    alpha: float = 0.4,
    *,
    style: str = "heat",
    region_mask: np.ndarray | None = None,
) -> np.ndarray:
    """The annotated frame: the map, region outlines and boxes, the ROI outline and the score. uint8 RGB [H, W, 3].

    frame: uint8 RGB [H, W, 3]; anomaly_map: float [H, W] in frame pixels (map_to_frame). style "heat"
    blends the heat map into the ROI (the rest of the picture stays as the camera saw it); "regions"
    colours only `region_mask`'s pixels (bool [H, W], Inspection.region_mask), so a good frame is left
    untouched but for its score. Outlines: region_mask's, else map > threshold; drawn on anomalous frames only.
    """
    if style not in OVERLAY_STYLES:
        raise ConfigError(f"overlay style {style!r}: expected one of {', '.join(OVERLAY_STYLES)}")
    roi = roi or full_frame(frame)
    out = frame.copy()
    y0, y1, x0, x1 = roi.y, roi.y + roi.h, roi.x, roi.x + roi.w
    anomalous = is_anomalous(score, threshold)
    if style == "heat":
        heat = heat_colors(anomaly_map[y0:y1, x0:x1], threshold)
        out[y0:y1, x0:x1] = cv2.addWeighted(out[y0:y1, x0:x1], 1.0 - alpha, heat, alpha, 0.0)
    elif anomalous and region_mask is not None:
        _tint(out, anomaly_map, threshold, region_mask, REGION_ALPHA)
    if (roi.w, roi.h) != (frame.shape[1], frame.shape[0]):
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
    if anomalous:
        outline = mask_contours(region_mask) if region_mask is not None else region_contours(anomaly_map, threshold)
        cv2.drawContours(out, outline, -1, OUTLINE, 1)
    for r in regions:
        cv2.rectangle(out, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), RED, 2)
    _label(out, score, anomalous)
    return out


@dataclass
class Inspection:
    """The result for one frame: score, verdict, regions, and the map in frame pixels (float32 [H, W]).

    pixel_threshold: what drew the regions; region_mask: their pixels, bool [H, W] (None on a good frame).
    error: why the verdict is not the model's (a non-finite score), else None.
    """

    score: float
    threshold: float
    anomalous: bool
    regions: list[Region]
    frame_map: np.ndarray
    pixel_threshold: float | None = None
    region_mask: np.ndarray | None = None
    error: str | None = None


NONFINITE_SCORE = "non-finite score"  # Inspection.error when the model's score is NaN or infinite


def is_anomalous(score: float, threshold: float) -> bool:
    """score > threshold, and True for a NaN score: written `not score <= threshold` so a broken model (NaN maps
    from NaN weights, a zero std) flags every frame instead of passing it (fail closed)."""
    return not score <= threshold


def region_threshold(threshold: float, pixel_threshold: float | None) -> float:
    """The map value regions are drawn above: the pixel threshold, never above the image threshold.

    None (an older model, no calibration) means the image threshold. A pixel above the image threshold
    is beyond every good frame's maximum, so it always belongs to a region (this matters when --threshold
    lowers the image threshold under a calibrated pixel threshold).
    """
    return threshold if pixel_threshold is None else min(pixel_threshold, threshold)


def inspect(
    model_map: np.ndarray,
    score: float,
    threshold: float,
    roi: Roi,
    frame_shape: tuple[int, ...],
    min_area: int = 16,
    pixel_threshold: float | None = None,
) -> Inspection:
    """Post-process one model output: map [h, w] at model size, its score -> Inspection in frame pixels.

    The verdict uses the model's score (the max of the map at model resolution); a non-finite score (or map)
    makes the frame anomalous and sets Inspection.error (is_anomalous). Regions exist only on
    an anomalous frame: the map resized onto the frame, above region_threshold(), seeded by the image
    threshold (find_regions), so each defect gets one region; one smaller than min_area is not reported.
    """
    if not np.isfinite(model_map).all():
        # NaN or inf in the map: the score is max() of it as numpy takes it (NaN wins), since a backend's own
        # reduction may skip NaN (OpenVINO's ReduceMax returns -FLT_MAX for an all-NaN map).
        score = float(np.max(model_map))
    frame_map = map_to_frame(model_map, roi, frame_shape)
    anomalous = is_anomalous(score, threshold)
    error = None if np.isfinite(score) else f"{NONFINITE_SCORE} ({score}): the model's output is broken"
    pixel = region_threshold(threshold, pixel_threshold)
    regions, mask = find_regions(frame_map, pixel, min_area, seed=threshold) if anomalous else ([], None)
    return Inspection(float(score), float(threshold), anomalous, regions, frame_map, pixel, mask, error)

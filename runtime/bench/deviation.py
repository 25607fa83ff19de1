"""How far each backend's outputs are from the reference's, on the same pre-processed images.

    maps, scores = run_all(backend, inputs, batch)
    reference = Reference.of(name, backend, maps, scores)     # the first backend's outputs and threshold
    deviation(maps, scores, reference, precision, tolerance_for(backend))

FP32 backends are held to the contract's whole-model tolerance (MODEL_TOL_FP32; TensorRT's "FP32"
engines, built with TF32, to MODEL_TOL_TF32), measured as relative_max_diff on maps and scores.
FP16 / INT8 backends are reported, and flagged when a verdict (score > threshold) changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmad.runtime.backends import Backend
from mmad.runtime.contract import MODEL_TOL_FP32, MODEL_TOL_TF32, relative_max_diff
from mmad.runtime.errors import ConfigError


@dataclass
class Reference:
    """The reference backend's outputs on the deviation images and the threshold used for verdicts."""

    name: str
    maps: np.ndarray
    scores: np.ndarray
    threshold: float
    threshold_source: str

    @classmethod
    def of(cls, name: str, backend: Backend, maps: np.ndarray, scores: np.ndarray) -> Reference:
        """The reference from its outputs; the threshold from the model's metadata, else the median score."""
        threshold, source = backend.info.threshold, "model metadata"
        if threshold is None:
            threshold = float(np.median(scores))
            source = "the median of the reference's scores: no threshold in the metadata"
        return cls(name, maps, scores, float(threshold), source)


def run_all(backend: Backend, inputs: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps [N, h, w] and scores [N] of the model-sized inputs uint8 [N, H, W, 3], in batches."""
    maps, scores = [], []
    for i in range(0, len(inputs), batch):
        m, s = backend.infer(inputs[i : i + batch])
        maps.append(np.asarray(m, np.float32))
        scores.append(np.asarray(s, np.float32).reshape(-1))
    return np.concatenate(maps), np.concatenate(scores)


def tolerance_for(backend: Backend) -> float:
    """The FP32 tolerance a backend is judged by: TF32 for TensorRT, float32 otherwise."""
    return MODEL_TOL_TF32 if backend.name == "tensorrt" else MODEL_TOL_FP32


def deviation(
    maps: np.ndarray, scores: np.ndarray, reference: Reference, precision: str, tolerance: float
) -> dict[str, object]:
    """How far a backend's outputs are from the reference's, and whether that is acceptable.

    maps [N, h, w], scores [N], like the reference's. FP32 backends are judged against `tolerance`
    (max|Δ| / max|reference|, maps and scores); FP16 / INT8 ones are reported, and flagged only when
    their verdicts (score > threshold) differ from the reference's.
    """
    ref_maps, ref_scores, threshold = reference.maps, reference.scores, reference.threshold
    if maps.shape != ref_maps.shape:
        raise ConfigError(
            f"maps of shape {list(maps.shape)} cannot be compared with the reference's {list(ref_maps.shape)}"
        )
    map_rel, score_rel = relative_max_diff(maps, ref_maps), relative_max_diff(scores, ref_scores)
    agree = float(np.mean((scores > threshold) == (ref_scores > threshold)))
    if precision == "fp32":
        ok = map_rel <= tolerance and score_rel <= tolerance
        status = "ok" if ok else f"DEVIATES (> {tolerance:g})"
    else:
        ok = agree == 1.0
        status = f"{precision}: verdicts agree" if ok else f"{precision}: VERDICTS DIFFER"
    return {
        "map_max_abs": float(np.abs(maps.astype(np.float64) - ref_maps).max()),
        "map_max_rel": map_rel,
        "score_max_abs": float(np.abs(scores.astype(np.float64) - ref_scores).max()),
        "score_max_rel": score_rel,
        "verdict_agreement": agree,
        "tolerance": tolerance if precision == "fp32" else None,
        "ok": bool(ok),
        "status": status,
    }

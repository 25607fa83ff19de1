"""Anomaly-detection metrics, computed per category as ADer does (training/README.md, "Metrics protocol").

``compute_metrics`` returns, in percent, the seven numbers the MambaAD/MMAD tables report plus
their mean:

==========  ========================================================================================
I-AUROC     sklearn ``roc_auc_score`` on the image scores.
I-AP        sklearn ``average_precision_score`` on the image scores.
I-F1max     max of 2PR/(P+R) over the points of sklearn's ``precision_recall_curve``.
P-AUROC     over all pixels of the category. Default ``pixel_curves="sklearn"``: exact, equal to
            sklearn ``roc_auc_score`` on the flattened pixels. ``"adeval"``: ADEval's binned curve
            (``nstrips`` uniform thresholds from the map's min to max, trapezoid rule).
P-AP        as P-AUROC: exact ``average_precision_score`` by default, ADEval's binned
            trapezoid PR area with ``pixel_curves="adeval"``.
P-F1max     maps min-max normalised over the category, 21 thresholds 0, 0.05, ..., 1 (pixel is
            positive when strictly above), global TP/FP/FN, F1 = 2PR/(P+R+1e-8) with
            P = TP/(TP+FP+1e-8), R = TP/(TP+FN+1e-8). Not a full PR sweep.
AUPRO       integrated PRO curve up to FPR 0.3; two variants, see metrics_aupro.py.
mAD         mean of the seven above.
==========  ========================================================================================

Degenerate input raises ``ValueError`` naming what is missing: no normal or no anomalous images (a
category without defects has no AUROC), no defect or no normal pixels, constant maps, NaN/inf,
shape mismatches, an image labelled normal whose mask has defect pixels. One documented rule
replaces a NaN of ADer's: in the sklearn AUPRO, when every kept point has the same FPR (e.g. a
binary, perfectly separating map) the min-max rescale is 0/0; the area is then taken as the highest
PRO among the kept points (1 for a perfect map).

The exact pixel curve and the pixel metrics read off it are in metrics_pixel.py; AUPRO's two
variants in metrics_aupro.py. The deployment threshold is the contract's deployment_threshold().
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from mmad.training.metrics_aupro import (
    SKLEARN_AUPRO_STEPS,
    aupro_adeval,
    aupro_sklearn,
    defect_pixels_weighted_by_region,
)
from mmad.training.metrics_pixel import (
    ADEVAL_NSTRIPS,
    binned_auroc_and_ap,
    exact_auroc,
    exact_average_precision,
    pixel_curve,
    pixel_f1_max,
)

IMAGE_KEYS = ("I-AUROC", "I-AP", "I-F1max")
PIXEL_KEYS = ("P-AUROC", "P-AP", "P-F1max", "AUPRO")
METRIC_KEYS = IMAGE_KEYS + PIXEL_KEYS
ALL_KEYS = METRIC_KEYS + ("mAD",)

AUPRO_VARIANTS = ("sklearn", "adeval")
PIXEL_CURVE_VARIANTS = ("sklearn", "adeval")
DEFAULT_AUPRO = "sklearn"
DEFAULT_PIXEL_CURVES = "sklearn"


def compute_metrics(
    scores,
    labels,
    maps,
    masks,
    aupro: str = DEFAULT_AUPRO,
    pixel_curves: str = DEFAULT_PIXEL_CURVES,
    *,
    aupro_steps: int = SKLEARN_AUPRO_STEPS,
    nstrips: int = ADEVAL_NSTRIPS,
) -> dict[str, float]:
    """All metrics of one category, in percent.

    Args:
        scores: [N] float image scores (the max of each smoothed map in this project).
        labels: [N] int {0, 1}, 1 = defective image.
        maps: [N, H, W] float anomaly maps, smoothed, not normalised; cast to float32.
        masks: [N, H, W] bool (or 0/1) ground-truth defect masks at the maps' resolution.
        aupro: "sklearn" (default, ADer's sklearn path) or "adeval" (ADEval's weighted ROC).
        pixel_curves: "sklearn" (default, exact P-AUROC / P-AP) or "adeval" (binned).
        aupro_steps: threshold count of the sklearn AUPRO (ADer `max_step_aupro`, 100).
        nstrips: bin count of the ADEval curves (50 in ADer).

    Returns:
        {"I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO", "mAD"} -> percent.

    Raises:
        ValueError: bad shapes or values, or a metric that is undefined on this input.
    """
    if aupro not in AUPRO_VARIANTS:
        raise ValueError(f"aupro must be one of {AUPRO_VARIANTS}, got {aupro!r}")
    if pixel_curves not in PIXEL_CURVE_VARIANTS:
        raise ValueError(f"pixel_curves must be one of {PIXEL_CURVE_VARIANTS}, got {pixel_curves!r}")
    scores, labels, maps, masks = _validated_inputs(scores, labels, maps, masks)

    result = image_metrics(scores, labels)
    result.update(
        pixel_metrics(maps, masks, aupro=aupro, pixel_curves=pixel_curves, aupro_steps=aupro_steps, nstrips=nstrips)
    )
    percent = {key: 100.0 * float(result[key]) for key in METRIC_KEYS}
    percent["mAD"] = float(np.mean([percent[key] for key in METRIC_KEYS]))
    return percent


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """I-AUROC, I-AP, I-F1max as fractions. scores [N] float, labels [N] {0,1}, both classes present."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return {
        "I-AUROC": float(roc_auc_score(labels, scores)),
        "I-AP": float(average_precision_score(labels, scores)),
        "I-F1max": float(np.max(_f1(precision, recall))),
    }


def pixel_metrics(
    maps: np.ndarray,
    masks: np.ndarray,
    aupro: str = DEFAULT_AUPRO,
    pixel_curves: str = DEFAULT_PIXEL_CURVES,
    *,
    aupro_steps: int = SKLEARN_AUPRO_STEPS,
    nstrips: int = ADEVAL_NSTRIPS,
) -> dict[str, float]:
    """P-AUROC, P-AP, P-F1max, AUPRO as fractions. maps [N,H,W] float32, masks [N,H,W] bool (validated)."""
    curve = pixel_curve(maps, masks)
    vmin, vmax = maps.min(), maps.max()  # float32 scalars, as ADer takes them
    defect_values, defect_weights, n_regions = defect_pixels_weighted_by_region(maps, masks)

    if pixel_curves == "sklearn":
        p_auroc, p_ap = exact_auroc(curve), exact_average_precision(curve)
    else:
        p_auroc, p_ap = binned_auroc_and_ap(curve, vmin, vmax, nstrips)

    if aupro == "sklearn":
        aupro_value = aupro_sklearn(curve, defect_values, defect_weights, n_regions, vmin, vmax, aupro_steps)
    else:
        aupro_value = aupro_adeval(curve, defect_values, defect_weights, n_regions, vmin, vmax, nstrips)
    return {
        "P-AUROC": p_auroc,
        "P-AP": p_ap,
        "P-F1max": pixel_f1_max(curve, vmin, vmax),
        "AUPRO": aupro_value,
    }


def f1_optimal_threshold(scores, labels) -> float:
    """The image-score threshold with the highest F1 on these labels (for reporting only).

    Rule: an image is called anomalous when ``score >= threshold`` (sklearn's convention). It is
    tuned on the test labels, so it is optimistic; deploy ``contract.deployment_threshold`` instead.
    Among equal F1 values the lowest threshold wins. scores [N] float, labels [N] {0, 1}.
    """
    scores, labels = _validated_image_inputs(scores, labels)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last PR point (P=1, R=0) has no threshold.
    return float(thresholds[int(np.argmax(_f1(precision[:-1], recall[:-1])))])


def mean_metrics(per_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean over categories of each metric (NaN propagates). All categories must have the same keys."""
    if not per_category:
        raise ValueError("per_category: no categories to average")
    categories = list(per_category)
    keys = list(per_category[categories[0]])
    for category in categories[1:]:
        if set(per_category[category]) != set(keys):
            raise ValueError(
                f"per_category[{category!r}]: keys {sorted(per_category[category])} differ from "
                f"{categories[0]!r}'s {sorted(keys)}"
            )
    return {key: float(np.mean([float(per_category[c][key]) for c in categories])) for key in keys}


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """2PR/(P+R), 0 where P+R = 0 (ADer drops those non-finite points; 0 never wins a max > 0)."""
    denominator = precision + recall
    return np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def _validated_image_inputs(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores: expected a non-empty [N] array, got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels: expected shape {scores.shape} like scores, got {labels.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores: contains NaN or inf")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"labels: expected only 0 (normal) and 1 (defective), got values {np.unique(labels)[:10].tolist()}"
        )
    labels = labels.astype(np.int64)
    n_defective = int(labels.sum())
    if n_defective == 0:
        raise ValueError(
            "labels: no anomalous images (all 0): AUROC/AP/F1 are undefined for a category without defects"
        )
    if n_defective == labels.size:
        raise ValueError("labels: no normal images (all 1): AUROC/AP/F1 need normal images too")
    return scores, labels


def _validated_inputs(scores, labels, maps, masks):
    scores, labels = _validated_image_inputs(scores, labels)
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    masks = np.asarray(masks)
    if maps.ndim != 3 or maps.shape[0] != scores.size:
        raise ValueError(f"maps: expected [N={scores.size}, H, W], got shape {maps.shape}")
    if masks.shape != maps.shape:
        raise ValueError(f"masks: expected shape {maps.shape} like maps, got {masks.shape}")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks: expected bool or 0/1 values (binarise before evaluating)")
        masks = masks.astype(bool)
    masks = np.ascontiguousarray(masks)
    if not np.all(np.isfinite(maps)):
        raise ValueError("maps: contains NaN or inf")
    if maps.min() == maps.max():
        raise ValueError(f"maps: all values equal {maps.flat[0]}; pixel thresholds are undefined")

    has_defect_pixels = masks.any(axis=(1, 2))
    if not has_defect_pixels.any():
        raise ValueError("masks: no defect pixels; P-AUROC/P-AP/P-F1max/AUPRO are undefined")
    if masks.all():
        raise ValueError("masks: every pixel is a defect; pixel metrics need normal pixels")
    labelled_normal_with_defect = np.flatnonzero(has_defect_pixels & (labels == 0))
    if labelled_normal_with_defect.size:
        raise ValueError(
            f"labels/masks: images {labelled_normal_with_defect[:10].tolist()} are "
            "labelled normal (0) but their masks have defect pixels"
        )
    labelled_defective_empty = np.flatnonzero(~has_defect_pixels & (labels == 1))
    if labelled_defective_empty.size:
        # ADer derives the label from the (resized) mask; a defect lost in resizing would make it
        # normal there. Here the given label counts for the image metrics; its pixels are normal.
        warnings.warn(
            f"{labelled_defective_empty.size} image(s) labelled defective have an empty "
            f"mask (first: {labelled_defective_empty[:5].tolist()})",
            stacklevel=3,
        )
    return scores, labels, maps, masks


__all__ = [
    "ALL_KEYS",
    "METRIC_KEYS",
    "IMAGE_KEYS",
    "PIXEL_KEYS",
    "AUPRO_VARIANTS",
    "ADEVAL_NSTRIPS",
    "SKLEARN_AUPRO_STEPS",
    "compute_metrics",
    "image_metrics",
    "pixel_metrics",
    "pixel_curve",
    "exact_auroc",
    "exact_average_precision",
    "f1_optimal_threshold",
    "mean_metrics",
]

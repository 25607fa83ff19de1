"""Anomaly-detection metrics, computed per category as ADer does (MODEL_SPEC §6).

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
AUPRO       integrated PRO curve up to FPR 0.3; two variants, see below.
mAD         mean of the seven above.
==========  ========================================================================================

AUPRO variants (``aupro=``):

* ``"sklearn"`` (**default**; ADer's path when ``use_adeval`` is unset, which is what MambaAD's own
  configs do): thresholds ``np.arange(min, max, (max - min) / 100)``; at each, PRO = mean over every
  defect region (8-connected component of a mask, over all images) of the fraction of its pixels
  strictly above the threshold, FPR = normal pixels above it / all normal pixels. Points with
  FPR < 0.3 are kept, their FPR is min-max rescaled to [0, 1] and the area is sklearn ``auc``.
* ``"adeval"`` (the ADer benchmark's and MMAD's ``use_adeval=True`` path; follows the NumPy
  reference ``adeval.mem_effic``): ``nstrips + 1`` uniform thresholds from min to max, a pixel is
  positive when >= the threshold; every defect pixel is weighted 1/area of its region, so the
  weighted TPR is again the mean per-region overlap (PRO); FPR is unweighted. The PRO(FPR) polyline is
  integrated with the trapezoid rule up to FPR 0.3, interpolating linearly at 0.3, then divided by
  0.3.

Both variants therefore average over regions, not pixels; they differ in the thresholds, in the
x-axis (rescaled kept range vs. a fixed [.., 0.3] divided by 0.3) and in < vs. <= at the limit.
They give slightly different numbers on the same maps (the spec asks to report which one was used).

Degenerate input raises ``ValueError`` naming what is missing: no normal or no anomalous images (a
category without defects has no AUROC), no defect or no normal pixels, constant maps, NaN/inf,
shape mismatches, an image labelled normal whose mask has defect pixels. One documented rule
replaces a NaN of ADer's: in the sklearn AUPRO, when every kept point has the same FPR (e.g. a
binary, perfectly separating map) the min-max rescale is 0/0; the area is then taken as the highest
PRO among the kept points (1 for a perfect map).

Cost: one sort of the category's pixels (packed 64-bit keys, no argsort) gives the exact ROC/PR
curve; every pixel metric is read off it, the per-region counts are weighted bincounts.
Magnetic tile (673 x 256 x 256 = 44 M pixels) takes a few seconds and about 1.5 GB.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

IMAGE_KEYS = ("I-AUROC", "I-AP", "I-F1max")
PIXEL_KEYS = ("P-AUROC", "P-AP", "P-F1max", "AUPRO")
METRIC_KEYS = IMAGE_KEYS + PIXEL_KEYS
ALL_KEYS = METRIC_KEYS + ("mAD",)

AUPRO_VARIANTS = ("sklearn", "adeval")
PIXEL_CURVE_VARIANTS = ("sklearn", "adeval")
DEFAULT_AUPRO = "sklearn"
DEFAULT_PIXEL_CURVES = "sklearn"

AUPRO_FPR_LIMIT = 0.3
SKLEARN_AUPRO_STEPS = 100  # ADer `max_step_aupro` in the MambaAD / MMAD configs
ADEVAL_NSTRIPS = 50  # ADer passes nstrips=50 to ADEval
PIXEL_F1_THRESHOLDS = np.arange(0.0, 1.0 + 1e-3, 0.05)  # the 21 values ADer loops over
PIXEL_F1_EPS = 1e-8

# 8-connectivity inside each image, none across the stack of images.
_IN_PLANE_8_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8_CONNECTIVITY[1] = True


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
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
    defect_values, defect_weights, n_regions = _defect_pixels_weighted_by_region(maps, masks)

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
    tuned on the test labels, so it is optimistic; deploy ``normal_quantile_threshold`` instead.
    Among equal F1 values the lowest threshold wins. scores [N] float, labels [N] {0, 1}.
    """
    scores, labels = _validated_image_inputs(scores, labels)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last PR point (P=1, R=0) has no threshold.
    return float(thresholds[int(np.argmax(_f1(precision[:-1], recall[:-1])))])


def normal_quantile_threshold(normal_scores, q: float = 0.99) -> float:
    """Deployment threshold from held-out normal images only: their ``q``-quantile.

    Rule: an image is anomalous when ``score > threshold``. The threshold is
    ``np.quantile(normal_scores, q)`` (linear interpolation), so about a fraction ``1 - q`` of
    normal images is flagged and no defective image was needed to choose it. With fewer than
    ``1 / (1 - q)`` scores it is close to their max. normal_scores [M] float, M >= 1.
    """
    normal_scores = np.asarray(normal_scores, dtype=np.float64)
    if normal_scores.ndim != 1 or normal_scores.size == 0:
        raise ValueError(f"normal_scores: expected a non-empty 1-D array, got shape {normal_scores.shape}")
    if not np.all(np.isfinite(normal_scores)):
        raise ValueError("normal_scores: contains NaN or inf")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q: expected 0 < q <= 1, got {q}")
    return float(np.quantile(normal_scores, q))


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


# ----------------------------------------------------------------------------------------------
# The exact pixel curve: one sort, then every pixel metric reads counts off it
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelCurve:
    """Counts at every distinct map value, like sklearn's ``_binary_clf_curve``.

    values: [K] float32 distinct map values, descending.
    tps, fps: [K] int64 defect / normal pixels with value >= values[k] (non-decreasing).
    n_pos, n_neg: total defect / normal pixels.
    """

    values: np.ndarray
    tps: np.ndarray
    fps: np.ndarray
    n_pos: int
    n_neg: int

    def counts_above(self, thresholds, inclusive: bool) -> tuple[np.ndarray, np.ndarray]:
        """(tp, fp) per threshold: pixels with value > t, or >= t when ``inclusive``.

        Comparison happens in the common dtype (float64 thresholds see float32 values exactly).
        """
        thresholds = np.atleast_1d(np.asarray(thresholds))
        ascending = self.values[::-1]
        side = "left" if inclusive else "right"
        n_values_above = self.values.size - np.searchsorted(ascending, thresholds, side=side)
        return (np.concatenate([[0], self.tps])[n_values_above], np.concatenate([[0], self.fps])[n_values_above])


def pixel_curve(maps: np.ndarray, masks: np.ndarray) -> PixelCurve:
    """The exact ROC/PR counts of all pixels. maps [N,H,W] float32, masks [N,H,W] bool."""
    value_keys, defect_positions = _sort_pixels(maps, masks)
    group_starts = np.concatenate([[0], np.flatnonzero(value_keys[1:] != value_keys[:-1]) + 1])
    n_pos, n_total = defect_positions.size, value_keys.size
    pos_below = np.searchsorted(defect_positions, group_starts)  # defect pixels below each value
    neg_below = group_starts - pos_below
    values = _float32_from_sortable(value_keys[group_starts])
    return PixelCurve(
        values=values[::-1].copy(),
        tps=(n_pos - pos_below)[::-1].astype(np.int64),
        fps=((n_total - n_pos) - neg_below)[::-1].astype(np.int64),
        n_pos=int(n_pos),
        n_neg=int(n_total - n_pos),
    )


def _sort_pixels(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pixels sorted by value: ([N*H*W] uint32 order-preserving keys of the values, ascending;
    [P] int64 positions of the defect pixels in that order).

    The defect flag rides in the lowest bit of a 64-bit key, so a plain sort (vectorised, ~10x
    faster than an argsort of 44 M floats) sorts by value and keeps each pixel's label. The
    uint32 buffer is reused for the outputs to avoid touching fresh memory.
    """
    value_keys = _sortable_uint32(maps.ravel())
    keys = value_keys.astype(np.uint64)
    keys <<= np.uint64(1)
    keys |= masks.ravel().view(np.uint8)
    keys.sort()
    np.copyto(value_keys, keys, casting="unsafe")  # the low 32 bits hold the flag
    value_keys &= np.uint32(1)
    defect_positions = np.flatnonzero(value_keys)
    keys >>= np.uint64(1)
    np.copyto(value_keys, keys, casting="unsafe")
    return value_keys, defect_positions


def exact_auroc(curve: PixelCurve) -> float:
    """sklearn's ``roc_auc_score``: trapezoid area under (FPR, TPR) from (0, 0)."""
    tpr = np.concatenate([[0.0], curve.tps / curve.n_pos])
    fpr = np.concatenate([[0.0], curve.fps / curve.n_neg])
    return _trapezoid(tpr, fpr)


def exact_average_precision(curve: PixelCurve) -> float:
    """sklearn's ``average_precision_score``: sum over thresholds of (R_k - R_{k-1}) * P_k."""
    precision = curve.tps / (curve.tps + curve.fps)
    recall = curve.tps / curve.n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def binned_auroc_and_ap(curve: PixelCurve, vmin, vmax, nstrips: int) -> tuple[float, float]:
    """ADEval's binned P-AUROC and P-AP (NumPy reference ``adeval.mem_effic``).

    ``nstrips + 1`` thresholds from vmin to vmax, positive when >= threshold; trapezoid areas of
    ROC and PR, precision 1 where nothing is predicted positive. The PR curve starts at the recall
    of the top threshold, not at 0 (an ADEval property, visible on binary maps).
    """
    tp, fp = curve.counts_above(_adeval_thresholds(vmin, vmax, nstrips), inclusive=True)
    tpr, fpr = tp / curve.n_pos, fp / curve.n_neg
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones(tp.shape), where=predicted > 0)
    # Thresholds ascend, so the curves run from (1, 1) down; reverse them for the area.
    return _trapezoid(tpr[::-1], fpr[::-1]), _trapezoid(precision[::-1], tpr[::-1])


def pixel_f1_max(curve: PixelCurve, vmin, vmax) -> float:
    """ADer's P-F1max: max over the 21 normalised thresholds of the global pixel F1."""
    if not vmax > vmin:
        raise ValueError("maps: all values are equal, P-F1max's min-max normalisation is undefined")
    # Same float32 arithmetic as normalising every pixel; it is monotone, so counting the
    # distinct values above each threshold counts the pixels above it.
    normalised = (curve.values - vmin) / (vmax - vmin)
    n_values_above = normalised.size - np.searchsorted(normalised[::-1], PIXEL_F1_THRESHOLDS, side="right")
    tp = np.concatenate([[0], curve.tps])[n_values_above].astype(np.float64)
    predicted = tp + np.concatenate([[0], curve.fps])[n_values_above]
    precision = tp / (predicted + PIXEL_F1_EPS)
    recall = tp / (curve.n_pos + PIXEL_F1_EPS)
    f1 = 2 * precision * recall / (precision + recall + PIXEL_F1_EPS)
    return float(f1.max())


# ----------------------------------------------------------------------------------------------
# AUPRO
# ----------------------------------------------------------------------------------------------
def aupro_sklearn(
    curve: PixelCurve, defect_values, defect_weights, n_regions: int, vmin, vmax, steps: int = SKLEARN_AUPRO_STEPS
) -> float:
    """ADer's ``cal_pro_score``: PRO vs FPR at ``arange(min, max, (max-min)/steps)``, FPR < 0.3,
    FPR min-max rescaled, sklearn ``auc``. defect_values / defect_weights: [P] float32 values and
    1/region-area of every defect pixel; n_regions: region count (over all images).
    """
    if not vmax > vmin:
        raise ValueError("maps: all values are equal, AUPRO has no thresholds")
    thresholds = np.arange(vmin, vmax, (vmax - vmin) / steps)
    pro = _weighted_fraction_above(defect_values, defect_weights, n_regions, thresholds, inclusive=False)
    _, fp = curve.counts_above(thresholds, inclusive=False)
    fpr = fp / curve.n_neg

    kept = fpr < AUPRO_FPR_LIMIT
    if not kept.any():
        raise ValueError(
            f"AUPRO (sklearn): no threshold has FPR < {AUPRO_FPR_LIMIT}; over "
            f"{AUPRO_FPR_LIMIT:.0%} of normal pixels share the top of the map's range"
        )
    fpr, pro = fpr[kept], pro[kept]
    fpr_span = fpr.max() - fpr.min()
    if fpr_span == 0:
        return float(pro.max())  # documented rule: ADer's rescale would be 0/0 here
    return float(auc((fpr - fpr.min()) / fpr_span, pro))


def aupro_adeval(
    curve: PixelCurve, defect_values, defect_weights, n_regions: int, vmin, vmax, nstrips: int = ADEVAL_NSTRIPS
) -> float:
    """ADEval's AUPRO: region-weighted TPR vs FPR at ``nstrips + 1`` binned thresholds (>=),
    trapezoid area up to FPR 0.3 with linear interpolation at 0.3, divided by 0.3.
    """
    thresholds = _adeval_thresholds(vmin, vmax, nstrips)
    pro = _weighted_fraction_above(defect_values, defect_weights, n_regions, thresholds, inclusive=True)
    _, fp = curve.counts_above(thresholds, inclusive=True)
    fpr = fp / curve.n_neg
    # Highest threshold first: FPR ascends from its smallest value to 1.
    return _area_up_to(fpr[::-1], pro[::-1], AUPRO_FPR_LIMIT) / AUPRO_FPR_LIMIT


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area of the polyline (x ascending) from x[0] to ``limit``, interpolating at it."""
    below = x <= limit
    if not below.any():
        raise ValueError(
            f"AUPRO (adeval): no threshold has FPR <= {limit}; over {limit:.0%} of "
            "normal pixels share the top of the map's range"
        )
    area = _trapezoid(y[below], x[below])
    last = int(np.flatnonzero(below)[-1])
    if last + 1 < x.size:
        x0, x1, y0, y1 = x[last], x[last + 1], y[last], y[last + 1]
        t = (limit - x0) / (x1 - x0)
        area += (x1 - x0) * (y0 * t + 0.5 * (y1 - y0) * t * t)
    return area


def _weighted_fraction_above(values, weights, total_weight, thresholds, inclusive: bool):
    """[T] sum of ``weights`` of the values above each ascending threshold, / total_weight.

    With weights 1/region-area this is the mean over regions of the fraction of each region
    above the threshold: the PRO.
    """
    side = "right" if inclusive else "left"
    # n_below[i] thresholds lie below value i (<= for inclusive), so value i counts for those.
    n_below = np.searchsorted(thresholds, values, side=side)
    weight_per_bucket = np.bincount(n_below, weights=weights, minlength=thresholds.size + 1)
    weight_from_bucket_up = np.cumsum(weight_per_bucket[::-1])[::-1]
    return weight_from_bucket_up[1:] / total_weight


def _defect_pixels_weighted_by_region(maps: np.ndarray, masks: np.ndarray):
    """Values [P] float32 and weights [P] float64 (1/area of its 8-connected region) of every
    defect pixel, and the number of regions over all images."""
    regions, n_regions = ndimage.label(masks, structure=_IN_PLANE_8_CONNECTIVITY)
    region_of_defect = regions[masks]
    area = np.bincount(region_of_defect, minlength=n_regions + 1).astype(np.float64)
    return maps[masks], 1.0 / area[region_of_defect], int(n_regions)


def _adeval_thresholds(vmin, vmax, nstrips: int) -> np.ndarray:
    """[nstrips + 1] float32 uniform thresholds from vmin to vmax, as ADEval bins them."""
    if not vmax > vmin:
        raise ValueError("maps: all values are equal, the ADEval curves have no bins")
    if int(nstrips) < 5:
        raise ValueError(f"nstrips: ADEval needs at least 5, got {nstrips}")
    unit = np.linspace(0.0, 1.0, num=int(nstrips) + 1, dtype=np.float32)
    return (unit * np.float32(float(vmax) - float(vmin)) + np.float32(vmin)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """2PR/(P+R), 0 where P+R = 0 (ADer drops those non-finite points; 0 never wins a max > 0)."""
    denominator = precision + recall
    return np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


def _sortable_uint32(values: np.ndarray) -> np.ndarray:
    """New uint32 keys whose unsigned order is the float32 order (finite values, -0.0 == 0.0).

    IEEE trick: set the sign bit of non-negative floats, flip every bit of negative ones.
    """
    keys = (values + np.float32(0.0)).view(np.uint32)  # + 0.0 also turns -0.0 into 0.0
    flip = keys >> np.uint32(31)  # 1 for negative values
    np.negative(flip, out=flip)  # 0xFFFFFFFF for negative, 0 otherwise (wraps)
    flip |= np.uint32(0x80000000)
    keys ^= flip
    return keys


def _float32_from_sortable(keys: np.ndarray) -> np.ndarray:
    was_positive = (keys >> np.uint32(31)).astype(bool)
    bits = np.where(was_positive, keys & np.uint32(0x7FFFFFFF), ~keys)
    return bits.astype(np.uint32).view(np.float32)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
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

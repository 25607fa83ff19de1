"""AUPRO: the area under the per-region overlap (PRO) curve up to FPR 0.3, in ADer's two variants
(training/README.md, "Metrics protocol").

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
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc

from mmad.training.metrics_pixel import ADEVAL_NSTRIPS, PixelCurve, adeval_thresholds, trapezoid

AUPRO_FPR_LIMIT = 0.3
SKLEARN_AUPRO_STEPS = 100  # ADer `max_step_aupro` in the MambaAD / MMAD configs

# 8-connectivity inside each image, none across the stack of images.
_IN_PLANE_8_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8_CONNECTIVITY[1] = True


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
    thresholds = adeval_thresholds(vmin, vmax, nstrips)
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
    area = trapezoid(y[below], x[below])
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


def defect_pixels_weighted_by_region(maps: np.ndarray, masks: np.ndarray):
    """Values [P] float32 and weights [P] float64 (1/area of its 8-connected region) of every
    defect pixel, and the number of regions over all images."""
    regions, n_regions = ndimage.label(masks, structure=_IN_PLANE_8_CONNECTIVITY)
    region_of_defect = regions[masks]
    area = np.bincount(region_of_defect, minlength=n_regions + 1).astype(np.float64)
    return maps[masks], 1.0 / area[region_of_defect], int(n_regions)

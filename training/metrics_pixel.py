"""The exact pixel curve of a category and the pixel metrics read off it: P-AUROC and P-AP (exact, as
sklearn, or binned, as ADEval), and ADer's P-F1max (training/README.md, "Metrics protocol").

Cost: one sort of the category's pixels (packed 64-bit keys, no argsort) gives the exact ROC/PR
curve; every pixel metric is read off it, the per-region counts are weighted bincounts.
Magnetic tile (673 x 256 x 256 = 44 M pixels) takes a few seconds and about 1.5 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ADEVAL_NSTRIPS = 50  # ADer passes nstrips=50 to ADEval
PIXEL_F1_THRESHOLDS = np.arange(0.0, 1.0 + 1e-3, 0.05)  # the 21 values ADer loops over
PIXEL_F1_EPS = 1e-8


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
    return trapezoid(tpr, fpr)


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
    tp, fp = curve.counts_above(adeval_thresholds(vmin, vmax, nstrips), inclusive=True)
    tpr, fpr = tp / curve.n_pos, fp / curve.n_neg
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones(tp.shape), where=predicted > 0)
    # Thresholds ascend, so the curves run from (1, 1) down; reverse them for the area.
    return trapezoid(tpr[::-1], fpr[::-1]), trapezoid(precision[::-1], tpr[::-1])


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


def adeval_thresholds(vmin, vmax, nstrips: int) -> np.ndarray:
    """[nstrips + 1] float32 uniform thresholds from vmin to vmax, as ADEval bins them."""
    if not vmax > vmin:
        raise ValueError("maps: all values are equal, the ADEval curves have no bins")
    if int(nstrips) < 5:
        raise ValueError(f"nstrips: ADEval needs at least 5, got {nstrips}")
    unit = np.linspace(0.0, 1.0, num=int(nstrips) + 1, dtype=np.float32)
    return (unit * np.float32(float(vmax) - float(vmin)) + np.float32(vmin)).astype(np.float32)


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
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

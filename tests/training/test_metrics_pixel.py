"""training/metrics_pixel.py: the exact pixel curve against pair counts, brute force and sklearn, and
P-F1max against ADer's loop."""

from __future__ import annotations

import numpy as np
import pytest
from metric_cases import TIGHT, blob_masks, scores_and_labels, smooth_maps
from sklearn.metrics import average_precision_score, roc_auc_score

from mmad.training import metrics as M
from mmad.training.metrics_aupro import _weighted_fraction_above
from mmad.training.metrics_pixel import exact_auroc, exact_average_precision, pixel_curve


def mann_whitney_auroc(positive, negative, chunk=512):
    """P(pos > neg) + P(pos == neg) / 2 by counting every pair."""
    wins = 0.0
    for start in range(0, positive.size, chunk):
        block = positive[start : start + chunk, None]
        wins += np.count_nonzero(block > negative[None, :]) + 0.5 * np.count_nonzero(block == negative[None, :])
    return wins / (positive.size * negative.size)


def brute_force_average_precision(values, positive):
    """sum over distinct thresholds (descending) of (recall gain) * precision, by direct counting."""
    total, previous_recall = 0.0, 0.0
    for threshold in np.unique(values)[::-1]:
        predicted = values >= threshold
        true_positive = np.count_nonzero(predicted & positive)
        recall = true_positive / np.count_nonzero(positive)
        total += (recall - previous_recall) * true_positive / np.count_nonzero(predicted)
        previous_recall = recall
    return total


def ader_pixel_f1max(maps, masks):
    """ADer's loop: global min-max normalisation, 21 thresholds, strict >, eps'd F1."""
    normalised = (maps - maps.min()) / (maps.max() - maps.min())
    best, eps = 0.0, 1e-8
    for threshold in np.arange(0.0, 1.0 + 1e-3, 0.05):
        predicted = normalised > threshold
        tp = np.logical_and(masks, predicted).sum()
        precision = tp / (predicted.sum() + eps)
        recall = tp / (masks.sum() + eps)
        best = max(best, 2 * precision * recall / (precision + recall + eps))
    return best


def test_random_maps_auroc_is_half_and_equals_pair_count():
    rng = np.random.default_rng(3)
    masks = blob_masks(rng, 16, 64, 8)
    masks[8:, 20:40, 20:40] = True  # enough defect pixels for a tight estimate
    # Quantised values: many ties, which the pair count scores 1/2.
    maps = rng.integers(0, 200, masks.shape).astype(np.float32) / 10
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = rng.random(16)
    result = M.compute_metrics(scores, labels, maps, masks)

    expected = 100 * mann_whitney_auroc(maps[masks], maps[~masks])
    assert result["P-AUROC"] == pytest.approx(expected, abs=TIGHT)
    assert result["P-AUROC"] == pytest.approx(100 * roc_auc_score(masks.ravel(), maps.ravel()), abs=TIGHT)
    assert abs(result["P-AUROC"] - 50.0) < 3.0  # sd ~0.5 for ~3k x 60k pixels
    expected_image = 100 * mann_whitney_auroc(scores[labels == 1], scores[labels == 0])
    assert result["I-AUROC"] == pytest.approx(expected_image, abs=TIGHT)


def test_pixel_ap_equals_brute_force_and_sklearn():
    rng = np.random.default_rng(4)
    masks = blob_masks(rng, 10, 32, 6)
    maps = (rng.integers(0, 40, masks.shape) + 8 * masks).astype(np.float32) / 7
    scores, labels = scores_and_labels(maps, masks)
    result = M.compute_metrics(scores, labels, maps, masks)
    assert result["P-AP"] == pytest.approx(100 * brute_force_average_precision(maps.ravel(), masks.ravel()), abs=TIGHT)
    assert result["P-AP"] == pytest.approx(100 * average_precision_score(masks.ravel(), maps.ravel()), abs=TIGHT)
    assert result["I-AP"] == pytest.approx(100 * brute_force_average_precision(scores, labels == 1), abs=TIGHT)


def test_exact_curve_handles_negative_values_signed_zero_and_ties():
    rng = np.random.default_rng(5)
    values = rng.choice(np.array([-3.5, -1.0, -0.0, 0.0, 1e-30, 2.0, 7.25], dtype=np.float32), size=(4, 16, 16))
    masks = rng.random(values.shape) < 0.3
    curve = pixel_curve(values, masks)
    assert curve.values.tolist() == [7.25, 2.0, np.float32(1e-30), 0.0, -1.0, -3.5]  # -0.0 merged with 0.0
    assert exact_auroc(curve) == pytest.approx(roc_auc_score(masks.ravel(), values.ravel()), abs=1e-12)
    assert exact_average_precision(curve) == pytest.approx(
        average_precision_score(masks.ravel(), values.ravel()), abs=1e-12
    )


@pytest.mark.parametrize("inclusive", [False, True])
def test_counts_above_thresholds_match_direct_counting(inclusive):
    # Thresholds that hit map values exactly are where > and >= differ (ADer uses >, ADEval >=).
    rng = np.random.default_rng(16)
    maps = rng.integers(0, 8, (5, 12, 12)).astype(np.float32) / 4
    masks = rng.random(maps.shape) < 0.25
    thresholds = np.array([-1.0, 0.0, 0.25, 0.3, 1.0, 1.75, 2.0])
    above = [(maps >= t) if inclusive else (maps > t) for t in thresholds]
    tp, fp = pixel_curve(maps, masks).counts_above(thresholds, inclusive=inclusive)
    assert tp.tolist() == [np.count_nonzero(a & masks) for a in above]
    assert fp.tolist() == [np.count_nonzero(a & ~masks) for a in above]

    weights = rng.random(np.count_nonzero(masks))
    fraction = _weighted_fraction_above(maps[masks], weights, weights.sum(), thresholds, inclusive)
    expected = [weights[a[masks]].sum() / weights.sum() for a in above]
    assert fraction == pytest.approx(expected, abs=1e-12)


def test_pixel_f1max_matches_ader_loop_over_21_thresholds():
    rng = np.random.default_rng(7)
    masks = blob_masks(rng, 12, 48, 8)
    maps = smooth_maps(rng, masks) * 3 + 5  # an offset/scale the normalisation must undo
    scores, labels = scores_and_labels(maps, masks)
    result = M.compute_metrics(scores, labels, maps, masks)
    assert result["P-F1max"] == pytest.approx(100 * ader_pixel_f1max(maps, masks), abs=TIGHT)


def test_pixel_f1max_is_not_a_full_pr_sweep():
    # Defect pixels at 0.54, normal ones at 0.52 (plus one 0 and one 1 fixing min and max): no grid
    # threshold lies between them, so the best grid F1 is at 0.50 with every pixel but one
    # predicted defective: F1 = 2 * 50 / (199 + 50); a full PR sweep would reach ~0.99.
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[1, :5] = True
    maps = np.full(masks.shape, 0.52, dtype=np.float32)
    maps[1, :5] = 0.54
    maps[0, 0, 0], maps[0, 0, 1] = 0.0, 1.0
    result = M.compute_metrics([0.1, 0.9], [0, 1], maps, masks)
    assert result["P-F1max"] == pytest.approx(100 * 100 / 249, abs=1e-5)
    assert result["P-F1max"] == pytest.approx(100 * ader_pixel_f1max(maps, masks), abs=TIGHT)

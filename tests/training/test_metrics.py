"""Metrics against independent computations: brute force, hand-worked curves, ADer's loop, sklearn."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage import measure
from sklearn.metrics import auc, average_precision_score, roc_auc_score

from mmad.training import metrics as M

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TIGHT = 1e-9  # percent; exact computations that differ only in summation order


# ----------------------------------------------------------------------------------------------
# Data builders
# ----------------------------------------------------------------------------------------------
def blob_masks(rng, n_images, size, n_defective):
    """Masks with 1-3 rectangles on the last n_defective images."""
    masks = np.zeros((n_images, size, size), dtype=bool)
    for index in range(n_images - n_defective, n_images):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(1, 9, 2)
            masks[index, y : y + h, x : x + w] = True
    return masks


def smooth_maps(rng, masks, lift=0.4, sigma=2.0):
    noise = rng.normal(size=masks.shape)
    maps = np.stack([ndimage.gaussian_filter(image, sigma) for image in noise])
    return (maps + lift * masks).astype(np.float32)


def scores_and_labels(maps, masks):
    """Image score = max of the map (MODEL_SPEC §5), label = any defect pixel."""
    return maps.max(axis=(1, 2)), masks.any(axis=(1, 2)).astype(int)


def perfect_case(rng, n_images=12, size=32):
    """Defect pixels in [1, 1.1), normal pixels in [0, 0.1): every threshold separates them."""
    masks = blob_masks(rng, n_images, size, n_images // 2)
    maps = (rng.uniform(0.0, 0.1, masks.shape) + masks).astype(np.float32)
    scores, labels = scores_and_labels(maps, masks)
    return scores, labels, maps, masks


# ----------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------
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


def brute_force_f1max(scores, labels):
    best = 0.0
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        tp = np.count_nonzero(predicted & (labels == 1))
        fp = np.count_nonzero(predicted & (labels == 0))
        fn = np.count_nonzero(~predicted & (labels == 1))
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


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


def ader_aupro(masks, maps, steps=100, limit=0.3):
    """ADer's cal_pro_score written out: per threshold, per image, per skimage region."""
    low, high = maps.min(), maps.max()
    pros, fprs = [], []
    for threshold in np.arange(low, high, (high - low) / steps):
        binary = maps > threshold
        overlaps = [
            binary[i][tuple(region.coords.T)].sum() / region.area
            for i in range(len(masks))
            for region in measure.regionprops(measure.label(masks[i]))
        ]
        pros.append(np.mean(overlaps))
        fprs.append(np.logical_and(~masks, binary).sum() / (~masks).sum())
    pros, fprs = np.array(pros), np.array(fprs)
    kept = fprs < limit
    x = fprs[kept]
    return auc((x - x.min()) / (x.max() - x.min()), pros[kept])


def adeval_style_curves(maps, masks, nstrips, limit=0.3):
    """ADEval's binned curves from np.histogram and cv2 components: (auroc, aupr, aupro)."""
    low, high = float(maps.min()), float(maps.max())
    edges = np.linspace(0, 1, nstrips + 1, dtype=np.float32) * np.float32(high - low) + np.float32(low)
    edges = np.concatenate([[-np.inf], edges, [np.inf]])
    weights = np.zeros(maps.shape, dtype=np.float64)
    for i, mask in enumerate(masks):
        _, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for component in range(1, stats.shape[0]):
            weights[i][components == component] = 1.0 / stats[component, cv2.CC_STAT_AREA]
    pos_hist = np.histogram(maps[masks], edges)[0].astype(float)
    neg_hist = np.histogram(maps[~masks], edges)[0].astype(float)
    weighted_pos_hist = np.histogram(maps[masks], edges, weights=weights[masks])[0]

    def above(hist):
        cumulative = np.cumsum(hist)
        return cumulative[-1] - cumulative[:-1]

    tp, fp, weighted_tp = above(pos_hist), above(neg_hist), above(weighted_pos_hist)
    tpr, fpr, pro = tp / pos_hist.sum(), fp / neg_hist.sum(), weighted_tp / weighted_pos_hist.sum()
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    auroc = np.trapezoid(tpr[::-1], fpr[::-1])
    aupr = np.trapezoid(precision[::-1], tpr[::-1])
    x, y = fpr[::-1], pro[::-1]
    below = x <= limit
    last = np.flatnonzero(below)[-1]
    y_at_limit = np.interp(limit, x[last : last + 2], y[last : last + 2])
    aupro = np.trapezoid(np.append(y[below], y_at_limit), np.append(x[below], limit)) / limit
    return auroc, aupr, aupro


# ----------------------------------------------------------------------------------------------
# Constructed extremes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aupro", M.AUPRO_VARIANTS)
def test_perfect_maps_score_100_everywhere(aupro):
    result = M.compute_metrics(*perfect_case(np.random.default_rng(0)), aupro=aupro)
    assert set(result) == set(M.ALL_KEYS)
    for key in M.ALL_KEYS:
        # ADer's P-F1max adds 1e-8 to its denominators: 2 / (2 + 1e-8) is 100 - 5e-7 percent.
        assert result[key] == pytest.approx(100.0, abs=1e-6 if key in ("P-F1max", "mAD") else TIGHT), key


def test_binary_perfect_map_uses_documented_rule_for_sklearn_aupro():
    # Every threshold gives FPR 0, so ADer's FPR rescale would be 0/0; the rule returns max PRO.
    scores, labels, _, masks = perfect_case(np.random.default_rng(1))
    result = M.compute_metrics(scores, labels, masks.astype(np.float32), masks)
    assert result["AUPRO"] == pytest.approx(100.0, abs=TIGHT)
    assert result["P-AUROC"] == pytest.approx(100.0, abs=TIGHT)


def test_inverted_maps_give_zero_auroc():
    scores, labels, maps, masks = perfect_case(np.random.default_rng(2))
    result = M.compute_metrics(-scores, labels, -maps, masks)
    assert result["I-AUROC"] == pytest.approx(0.0, abs=TIGHT)
    assert result["P-AUROC"] == pytest.approx(0.0, abs=TIGHT)
    assert result["AUPRO"] < 1.0


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
    curve = M.pixel_curve(values, masks)
    assert curve.values.tolist() == [7.25, 2.0, np.float32(1e-30), 0.0, -1.0, -3.5]  # -0.0 merged with 0.0
    assert M.exact_auroc(curve) == pytest.approx(roc_auc_score(masks.ravel(), values.ravel()), abs=1e-12)
    assert M.exact_average_precision(curve) == pytest.approx(
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
    tp, fp = M.pixel_curve(maps, masks).counts_above(thresholds, inclusive=inclusive)
    assert tp.tolist() == [np.count_nonzero(a & masks) for a in above]
    assert fp.tolist() == [np.count_nonzero(a & ~masks) for a in above]

    weights = rng.random(np.count_nonzero(masks))
    fraction = M._weighted_fraction_above(maps[masks], weights, weights.sum(), thresholds, inclusive)
    expected = [weights[a[masks]].sum() / weights.sum() for a in above]
    assert fraction == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# F1
# ----------------------------------------------------------------------------------------------
def test_image_f1max_and_its_threshold_match_brute_force():
    rng = np.random.default_rng(6)
    labels = (rng.random(200) < 0.4).astype(int)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # ties
    masks = np.zeros((200, 4, 4), dtype=bool)
    masks[labels == 1, 1, 1] = True
    maps = rng.random(masks.shape).astype(np.float32)
    result = M.compute_metrics(scores, labels, maps, masks)
    best = brute_force_f1max(scores, labels)
    assert result["I-F1max"] == pytest.approx(100 * best, abs=TIGHT)

    threshold = M.f1_optimal_threshold(scores, labels)
    predicted = scores >= threshold
    tp = np.count_nonzero(predicted & (labels == 1))
    f1_at_threshold = 2 * tp / (np.count_nonzero(predicted) + np.count_nonzero(labels))
    assert f1_at_threshold == pytest.approx(best, abs=1e-12)


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


# ----------------------------------------------------------------------------------------------
# AUPRO
# ----------------------------------------------------------------------------------------------
def hand_aupro_case(two_regions: bool):
    """Normal pixels: 20 % at 0.505, the rest 0; defect values 0.255 and 1.0 (max); min is 0.

    Half of the defect area (by region) is found only below threshold 0.255, the rest always, so
    PRO = 1 for thresholds < 0.255 and 0.5 above. FPR = 0.2 below 0.505, 0 above.
    sklearn variant (thresholds 0, .01, .., .99; FPR < .3 kept and rescaled to [0, 1]):
        x = 1 (PRO 1, then .5) .. x = 0 (PRO .5): the only step of non-zero width has area 0.5.
    adeval variant (thresholds 0, .02, .., 1, >=): polyline (0, .5) -> (.2, .5) -> (.2, 1) ->
        (1, 1); area up to .3 = .2 * .5 + .1 * 1 = 0.2, / 0.3 = 2/3.
    two_regions: region A (4 px) at 1.0, region B (16 px) at 0.255: the per-region mean is again
        1 then 0.5, where a pixel-weighted TPR would be 1 then 4/20 (AUPRO 20 and 46.7).
    """
    maps = np.zeros((2, 10, 10), dtype=np.float32)
    masks = np.zeros_like(maps, dtype=bool)
    if two_regions:
        masks[1, 0:2, 0:2] = True
        masks[1, 5:9, 4:8] = True
        maps[1, 0:2, 0:2] = 1.0
        maps[1, 5:9, 4:8] = 0.255
    else:
        masks[1, 0:4, 0:5] = True
        maps[1, 0:2, 0:5] = 1.0
        maps[1, 2:4, 0:5] = 0.255
    normal_positions = np.flatnonzero(~masks)
    n_high = normal_positions.size // 5
    assert n_high * 5 == normal_positions.size
    maps.ravel()[normal_positions[::5]] = 0.505
    return np.array([0.1, 0.9]), np.array([0, 1]), maps, masks


@pytest.mark.parametrize("two_regions", [False, True])
def test_aupro_hand_worked_curves(two_regions):
    args = hand_aupro_case(two_regions)
    assert M.compute_metrics(*args, aupro="sklearn")["AUPRO"] == pytest.approx(50.0, abs=TIGHT)
    assert M.compute_metrics(*args, aupro="adeval")["AUPRO"] == pytest.approx(200 / 3, abs=TIGHT)
    assert M.compute_metrics(*args, aupro="adeval", nstrips=200)["AUPRO"] == pytest.approx(200 / 3, abs=TIGHT)


def test_aupro_averages_regions_not_pixels():
    args = hand_aupro_case(two_regions=True)
    pixel_weighted = {"sklearn": 20.0, "adeval": 100 * 0.14 / 0.3}  # see hand_aupro_case
    for variant, value in pixel_weighted.items():
        assert abs(M.compute_metrics(*args, aupro=variant)["AUPRO"] - value) > 10
    _, weights, n_regions = M._defect_pixels_weighted_by_region(args[2], args[3])
    assert n_regions == 2
    assert sorted(set(weights.tolist())) == [1 / 16, 1 / 4]


@pytest.mark.parametrize("seed", [8, 9])
def test_sklearn_aupro_matches_ader_loop(seed):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, 14, 40, 7)
    maps = smooth_maps(rng, masks, lift=rng.uniform(0.1, 0.6))
    scores, labels = scores_and_labels(maps, masks)
    result = M.compute_metrics(scores, labels, maps, masks, aupro="sklearn")
    assert result["AUPRO"] == pytest.approx(100 * ader_aupro(masks, maps), abs=TIGHT)


@pytest.mark.parametrize("nstrips", [50, 200])
def test_adeval_variants_match_histogram_reference(nstrips):
    rng = np.random.default_rng(10)
    masks = blob_masks(rng, 14, 40, 7)
    maps = smooth_maps(rng, masks, lift=0.3)
    scores, labels = scores_and_labels(maps, masks)
    result = M.compute_metrics(scores, labels, maps, masks, aupro="adeval", pixel_curves="adeval", nstrips=nstrips)
    auroc, aupr, aupro = adeval_style_curves(maps, masks, nstrips)
    assert result["P-AUROC"] == pytest.approx(100 * auroc, abs=TIGHT)
    assert result["P-AP"] == pytest.approx(100 * aupr, abs=TIGHT)
    assert result["AUPRO"] == pytest.approx(100 * aupro, abs=TIGHT)


def test_regions_are_8_connected_within_each_image_only():
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # diagonal neighbours: one region
    masks[0, 5, 5] = True
    masks[1, 1, 1] = masks[2, 1, 1] = True  # same place in two images: two regions
    _, weights, n_regions = M._defect_pixels_weighted_by_region(np.zeros(masks.shape, np.float32), masks)
    expected = sum(measure.label(mask).max() for mask in masks)
    assert n_regions == expected == 4
    assert weights.tolist() == [0.5, 0.5, 1.0, 1.0, 1.0]


def test_sklearn_and_adeval_aupro_are_close_but_reported_separately():
    rng = np.random.default_rng(11)
    masks = blob_masks(rng, 20, 48, 10)
    maps = smooth_maps(rng, masks, lift=0.5)
    scores, labels = scores_and_labels(maps, masks)
    a = M.compute_metrics(scores, labels, maps, masks, aupro="sklearn")["AUPRO"]
    b = M.compute_metrics(scores, labels, maps, masks, aupro="adeval")["AUPRO"]
    assert a != b
    assert abs(a - b) < 5.0


# ----------------------------------------------------------------------------------------------
# Degenerate input
# ----------------------------------------------------------------------------------------------
def test_degenerate_inputs_raise_clear_errors():
    scores, labels, maps, masks = perfect_case(np.random.default_rng(12))
    normal = labels == 0
    with pytest.raises(ValueError, match="no anomalous images"):
        M.compute_metrics(scores[normal], labels[normal], maps[normal], masks[normal])
    with pytest.raises(ValueError, match="no normal images"):
        M.compute_metrics(scores[~normal], labels[~normal], maps[~normal], masks[~normal])
    with pytest.raises(ValueError, match="no defect pixels"):
        M.compute_metrics(scores, labels, maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="all values equal"):
        M.compute_metrics(scores, labels, np.ones_like(maps), masks)
    with pytest.raises(ValueError, match="masks: expected shape"):
        M.compute_metrics(scores, labels, maps, masks[:, :-1])
    with pytest.raises(ValueError, match="maps: expected"):
        M.compute_metrics(scores, labels, maps[:-1], masks[:-1])
    with pytest.raises(ValueError, match="labels: expected only 0"):
        M.compute_metrics(scores, labels * 2, maps, masks)
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.compute_metrics(scores, labels, bad, masks)
    with pytest.raises(ValueError, match="labelled normal"):
        M.compute_metrics(scores, np.zeros_like(labels) + (np.arange(labels.size) == 0), maps, masks)
    with pytest.raises(ValueError, match="aupro must be one of"):
        M.compute_metrics(scores, labels, maps, masks, aupro="pixel")


# ----------------------------------------------------------------------------------------------
# Thresholds and means
# ----------------------------------------------------------------------------------------------
def test_normal_quantile_threshold_rule():
    rng = np.random.default_rng(13)
    normal_scores = rng.normal(size=1000)
    threshold = M.normal_quantile_threshold(normal_scores, q=0.99)
    assert threshold == np.quantile(normal_scores, 0.99)
    assert np.mean(normal_scores > threshold) == pytest.approx(0.01, abs=1e-3)
    assert M.normal_quantile_threshold(normal_scores, q=1.0) == normal_scores.max()
    with pytest.raises(ValueError, match="q: expected"):
        M.normal_quantile_threshold(normal_scores, q=0.0)
    with pytest.raises(ValueError, match="non-empty"):
        M.normal_quantile_threshold([])


def test_mean_metrics_is_the_mean_over_categories():
    per_category = {"a": {"I-AUROC": 90.0, "mAD": 80.0}, "b": {"I-AUROC": 70.0, "mAD": 60.0}}
    assert M.mean_metrics(per_category) == {"I-AUROC": 80.0, "mAD": 70.0}
    with pytest.raises(ValueError, match="differ"):
        M.mean_metrics({"a": {"I-AUROC": 1.0}, "b": {"I-AP": 1.0}})


def test_mad_is_the_mean_of_the_seven():
    rng = np.random.default_rng(14)
    masks = blob_masks(rng, 10, 32, 5)
    maps = smooth_maps(rng, masks)
    result = M.compute_metrics(*scores_and_labels(maps, masks), maps, masks)
    assert result["mAD"] == pytest.approx(np.mean([result[k] for k in M.METRIC_KEYS]), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Realistic masks (skipped without the shared data)
# ----------------------------------------------------------------------------------------------
def load_bottle_masks(size=256):
    from PIL import Image

    root = SHARED_DATA / "bottle"
    if not (root / "test").is_dir():
        pytest.skip("shared bottle data not present")
    masks, labels = [], []
    for defect_dir in sorted((root / "test").iterdir()):
        for image_path in sorted(defect_dir.glob("*.png")):
            mask_path = root / "ground_truth" / defect_dir.name / f"{image_path.stem}_mask.png"
            if defect_dir.name == "good":
                mask = np.zeros((size, size), dtype=bool)
            else:
                mask = np.asarray(Image.open(mask_path).convert("L").resize((size, size))) > 127
            masks.append(mask)
            labels.append(int(defect_dir.name != "good"))
    return np.stack(masks), np.array(labels)


def test_bottle_masks_smoke():
    masks, labels = load_bottle_masks()
    rng = np.random.default_rng(15)
    maps = np.stack([ndimage.gaussian_filter(rng.normal(size=m.shape) * 0.3 + m, 4) for m in masks])
    maps = maps.astype(np.float32)
    scores = maps.max(axis=(1, 2))
    results = {variant: M.compute_metrics(scores, labels, maps, masks, aupro=variant) for variant in M.AUPRO_VARIANTS}
    for result in results.values():
        assert all(0.0 <= value <= 100.0 for value in result.values())
        assert result["P-AUROC"] > 90.0
    assert abs(results["sklearn"]["AUPRO"] - results["adeval"]["AUPRO"]) < 5.0

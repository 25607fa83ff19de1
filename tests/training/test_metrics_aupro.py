"""training/metrics_aupro.py: both AUPRO variants against hand-worked curves, ADer's loop and a
histogram reference of ADEval; regions, not pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from metric_cases import TIGHT, blob_masks, perfect_case, scores_and_labels, smooth_maps
from skimage import measure
from sklearn.metrics import auc

from mmad.training import metrics as M
from mmad.training.metrics_aupro import defect_pixels_weighted_by_region


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


def test_binary_perfect_map_uses_documented_rule_for_sklearn_aupro():
    # Every threshold gives FPR 0, so ADer's FPR rescale would be 0/0; the rule returns max PRO.
    scores, labels, _, masks = perfect_case(np.random.default_rng(1))
    result = M.compute_metrics(scores, labels, masks.astype(np.float32), masks)
    assert result["AUPRO"] == pytest.approx(100.0, abs=TIGHT)
    assert result["P-AUROC"] == pytest.approx(100.0, abs=TIGHT)


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
    _, weights, n_regions = defect_pixels_weighted_by_region(args[2], args[3])
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
    _, weights, n_regions = defect_pixels_weighted_by_region(np.zeros(masks.shape, np.float32), masks)
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

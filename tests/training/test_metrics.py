"""training/metrics.py: compute_metrics end to end (extremes, image metrics, degenerate input), the
F1 threshold, the contract's deployment threshold, means; and a smoke test on real masks."""

from __future__ import annotations

import numpy as np
import pytest
from metric_cases import TIGHT, blob_masks, perfect_case, scores_and_labels, smooth_maps
from PIL import Image
from scipy import ndimage

from mmad.runtime.contract import deployment_threshold
from mmad.training import metrics as M


def brute_force_f1max(scores, labels):
    best = 0.0
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        tp = np.count_nonzero(predicted & (labels == 1))
        fp = np.count_nonzero(predicted & (labels == 0))
        fn = np.count_nonzero(~predicted & (labels == 1))
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


@pytest.mark.parametrize("aupro", M.AUPRO_VARIANTS)
def test_perfect_maps_score_100_everywhere(aupro):
    result = M.compute_metrics(*perfect_case(np.random.default_rng(0)), aupro=aupro)
    assert set(result) == set(M.ALL_KEYS)
    for key in M.ALL_KEYS:
        # ADer's P-F1max adds 1e-8 to its denominators: 2 / (2 + 1e-8) is 100 - 5e-7 percent.
        assert result[key] == pytest.approx(100.0, abs=1e-6 if key in ("P-F1max", "mAD") else TIGHT), key


def test_inverted_maps_give_zero_auroc():
    scores, labels, maps, masks = perfect_case(np.random.default_rng(2))
    result = M.compute_metrics(-scores, labels, -maps, masks)
    assert result["I-AUROC"] == pytest.approx(0.0, abs=TIGHT)
    assert result["P-AUROC"] == pytest.approx(0.0, abs=TIGHT)
    assert result["AUPRO"] < 1.0


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


def test_deployment_threshold_rule():
    """The contract's rule, which training stores as the checkpoint's deployment threshold."""
    rng = np.random.default_rng(13)
    normal_scores = rng.normal(size=1000)
    threshold = deployment_threshold(normal_scores, q=0.99)
    assert threshold == np.quantile(normal_scores, 0.99)
    assert np.mean(normal_scores > threshold) == pytest.approx(0.01, abs=1e-3)
    assert deployment_threshold(normal_scores, q=1.0) == normal_scores.max()
    with pytest.raises(ValueError, match="q: expected"):
        deployment_threshold(normal_scores, q=0.0)
    with pytest.raises(ValueError, match="at least 1 score"):
        deployment_threshold([])


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


def load_bottle_masks(root, size=256):
    """bottle's test masks at `size` (PIL bilinear, > 127) and the image labels, by walking its folders."""
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


def test_bottle_masks_smoke(real_dataset):
    masks, labels = load_bottle_masks(real_dataset("bottle"))
    rng = np.random.default_rng(15)
    maps = np.stack([ndimage.gaussian_filter(rng.normal(size=m.shape) * 0.3 + m, 4) for m in masks])
    maps = maps.astype(np.float32)
    scores = maps.max(axis=(1, 2))
    results = {variant: M.compute_metrics(scores, labels, maps, masks, aupro=variant) for variant in M.AUPRO_VARIANTS}
    for result in results.values():
        assert all(0.0 <= value <= 100.0 for value in result.values())
        assert result["P-AUROC"] > 90.0
    assert abs(results["sklearn"]["AUPRO"] - results["adeval"]["AUPRO"]) < 5.0

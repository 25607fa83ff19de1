"""training/thresholds.py: the deployment thresholds a checkpoint carries (the rule per category, the global
ones, the fallback for too few held-out images), their reader for both checkpoint layouts, and the lines a
score histogram draws. The tiny training runs that write them are in test_train.py."""

from __future__ import annotations

import numpy as np
import pytest

from mmad.runtime.contract import (
    DEFAULT_FALSE_ALARM_RATE,
    MIN_NORMAL_SCORES,
    THRESHOLD_F1,
    THRESHOLD_NORMAL,
    THRESHOLD_NORMAL_COUNT,
    THRESHOLD_NORMAL_Q,
    deployment_threshold,
    fit_threshold,
    pixel_threshold,
)
from mmad.training.config import RunConfig, TrainConfig
from mmad.training.thresholds import (
    DEPLOYMENT,
    RULE_QUANTILE,
    category_thresholds,
    combine_categories,
    deployment_thresholds,
    describe,
    threshold_lines,
)


def normal_images(n: int, level: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores [n] and maps [n, 16, 16] of n normal images around `level` (score = max of the map)."""
    rng = np.random.default_rng(seed)
    maps = (level + 0.01 * rng.gumbel(size=(n, 16, 16))).astype(np.float32)
    return maps.reshape(n, -1).max(axis=1), maps


def test_a_category_with_enough_images_gets_the_calibration_rule():
    scores, maps = normal_images(30, 0.2, seed=1)
    logged = []
    entry = category_thresholds("bottle", scores, maps, 0.01, 0.99, logged.append)
    fit = fit_threshold(scores, 0.01)
    assert entry["image"] == fit.threshold and entry["rule"] == fit.rule == "gumbel"
    assert entry["expected_false_alarm_rate"] == fit.expected_false_alarm_rate == pytest.approx(0.01)
    assert entry["pixel"] == pixel_threshold(maps) < entry["image"]  # from the normal maps, not the image threshold
    assert (entry["images"], entry["max_normal"]) == (30, pytest.approx(float(scores.max())))
    assert logged == []


def test_too_few_images_fall_back_to_the_quantile_rule_with_a_warning():
    scores, maps = normal_images(MIN_NORMAL_SCORES - 1, 0.2, seed=2)
    logged = []
    entry = category_thresholds("screw", scores, maps, DEFAULT_FALSE_ALARM_RATE, 0.99, logged.append)
    assert entry["rule"] == RULE_QUANTILE and entry["image"] == deployment_threshold(scores, 0.99)
    assert entry["pixel"] == pixel_threshold(maps) and entry["images"] == MIN_NORMAL_SCORES - 1
    assert "expected_false_alarm_rate" not in entry
    (warning,) = logged
    assert warning.startswith("warning: category screw: 19 held-out") and "mmad calibrate" in warning
    # Scores the fit refuses (all equal) fall back the same way; broken (NaN) scores still fail.
    logged.clear()
    flat = np.full(25, 0.3)
    assert category_thresholds("flat", flat, maps, 0.001, 0.99, logged.append)["rule"] == RULE_QUANTILE
    assert "equal" in logged[0]
    with pytest.raises(ValueError, match="NaN"):
        category_thresholds("broken", np.r_[flat, np.nan], maps, 0.001, 0.99, logged.append)


def test_global_thresholds_are_the_maxima_over_categories():
    low = category_thresholds("low", *normal_images(25, 0.2, seed=3), 0.001, 0.99)
    high = category_thresholds("high", *normal_images(6, 0.5, seed=4), 0.001, 0.99, lambda _: None)
    combined = combine_categories({"low": low, "high": high}, 0.001)
    assert combined["image"] == high["image"] > low["image"]  # never flags more of a category than its own rule
    assert combined["pixel"] == max(low["pixel"], high["pixel"])
    assert (combined["rule"], combined["images"], combined["false_alarm_rate"]) == (RULE_QUANTILE, 31, 0.001)
    assert combined["categories"] == {"low": low, "high": high}
    with pytest.raises(ValueError, match="no category"):
        combine_categories({}, 0.001)


def test_reader_of_both_checkpoint_layouts():
    per_category = {"a": category_thresholds("a", *normal_images(25, 0.2, seed=5), 0.001, 0.99)}
    new = {DEPLOYMENT: combine_categories(per_category, 0.001), THRESHOLD_F1: 0.3}
    read = deployment_thresholds(new)
    assert (read.image, read.pixel, read.rule, read.images) == (
        per_category["a"]["image"],
        per_category["a"]["pixel"],
        "gumbel",
        25,
    )
    assert read.categories["a"]["image"] == per_category["a"]["image"] and "deployment threshold" in describe(read)
    old = {THRESHOLD_NORMAL: 0.25, THRESHOLD_NORMAL_Q: 0.99, THRESHOLD_NORMAL_COUNT: 6}
    read = deployment_thresholds(old)
    assert (read.image, read.rule, read.images, read.pixel, read.categories) == (0.25, RULE_QUANTILE, 6, None, {})
    assert deployment_thresholds({THRESHOLD_NORMAL: 0.25}).images is None
    assert deployment_thresholds({THRESHOLD_F1: 0.3}) is None and "no deployment" in describe(None)
    with pytest.raises(ValueError, match="deployment.image"):
        deployment_thresholds({DEPLOYMENT: {"image": "high"}})


def test_histogram_lines_are_the_image_thresholds_only():
    """Issue 11: every float of the dict was drawn, normal_quantile_q = 0.99 included."""
    old = {THRESHOLD_NORMAL: 0.25, THRESHOLD_NORMAL_Q: 0.99, THRESHOLD_NORMAL_COUNT: 6, THRESHOLD_F1: 0.375}
    old["f1_per_category"] = {"a": 0.3}
    assert threshold_lines(old) == {"deployment (quantile, 6 normal images)": 0.25, "F1-optimal (test labels)": 0.375}
    per_category = {"a": category_thresholds("a", *normal_images(25, 0.2, seed=6), 0.001, 0.99)}
    new = {DEPLOYMENT: combine_categories(per_category, 0.001)}
    assert threshold_lines(new) == {"deployment (gumbel, 25 normal images)": per_category["a"]["image"]}
    assert threshold_lines({}) == {}


def test_runs_saved_before_the_floor_keep_their_hold_out():
    """A run saved without threshold_min_images held out 10 % only; reading it back must say so (resume)."""
    saved = RunConfig().to_dict()
    assert RunConfig.from_dict(saved).train.threshold_min_images == TrainConfig().threshold_min_images == 20
    del saved["train"]["threshold_min_images"]
    assert RunConfig.from_dict(saved).train.threshold_min_images == 0

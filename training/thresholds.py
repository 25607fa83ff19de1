"""The deployment thresholds a checkpoint carries: the rule training sets them by, and their one reader.

The rule is `mmad calibrate`'s (mmad.runtime.contract), so a model's default threshold and an on-site
calibration mean the same thing. For each category, from its held-out normal training images only:

    image threshold   contract.fit_threshold(scores, false_alarm_rate): a Gumbel fit of the scores, its
                      (1 - rate) quantile, never below the highest held-out score. With fewer than
                      contract.MIN_NORMAL_SCORES images (or scores a fit refuses) the category falls back,
                      with a warning, to the older rule: their `quantile` (contract.deployment_threshold).
    pixel threshold   contract.pixel_threshold(maps): a high quantile of every pixel of their anomaly maps.

The global thresholds are the maxima over categories, so one global threshold never flags more normal
images of a category than that category's own rule. Torch-free (quickstart and reports read checkpoints).

Layout in checkpoint.json, "thresholds" (beside "f1" and "f1_per_category", written by `mmad eval`):

    "deployment": {"image": float, "pixel": float, "rule": "gumbel" | "quantile", "images": int,
                   "false_alarm_rate": float,
                   "categories": {name: {"image", "pixel", "images", "rule", "max_normal",
                                         "expected_false_alarm_rate" (gumbel only)}}}

Older checkpoints hold only "normal_quantile" (contract.THRESHOLD_NORMAL, a 99 % quantile of the held-out
scores): read as rule "quantile", without pixel or per-category thresholds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mmad.runtime.contract import (
    MIN_NORMAL_SCORES,
    THRESHOLD_F1,
    THRESHOLD_NORMAL,
    THRESHOLD_NORMAL_COUNT,
    deployment_threshold,
    fit_threshold,
    pixel_threshold,
)

DEPLOYMENT = "deployment"  # the key of the deployment thresholds in a checkpoint's "thresholds"
RULE_QUANTILE = "quantile"  # the older rule (and the fallback for a category with too few held-out images)


@dataclass(frozen=True)
class DeploymentThresholds:
    """What a deployed model starts from (before any on-site calibration)."""

    image: float  # anomalous when score > image
    pixel: float | None  # map values above it are regions; None (older checkpoints): use the image threshold
    rule: str  # "gumbel" (contract.fit_threshold) or "quantile"
    images: int | None  # held-out normal images it came from (all categories); None when not recorded
    categories: dict[str, dict] = field(default_factory=dict)  # {name: {"image", "pixel", "images", "rule", ...}}


# ----------------------------------------------------------------------------------------------
# The rule
# ----------------------------------------------------------------------------------------------
def category_thresholds(
    name: str,
    scores: np.ndarray,
    maps: np.ndarray,
    false_alarm_rate: float,
    quantile: float,
    log: Callable[[str], None] = print,
) -> dict:
    """One category's thresholds from the scores [N] and anomaly maps [N, H, W] of its held-out normal images."""
    scores = np.asarray(scores, dtype=np.float64)
    entry = {"pixel": pixel_threshold(maps), "images": int(scores.size), "max_normal": float(scores.max())}
    if scores.size >= MIN_NORMAL_SCORES:
        try:
            fit = fit_threshold(scores, false_alarm_rate)
            return {
                "image": fit.threshold,
                **entry,
                "rule": fit.rule,
                "expected_false_alarm_rate": fit.expected_false_alarm_rate,
            }
        except ValueError as err:  # e.g. all scores equal; non-finite ones fail below as well
            reason = str(err)
    else:
        reason = f"{scores.size} held-out normal images, fewer than the {MIN_NORMAL_SCORES} a fit needs"
    log(
        f"warning: category {name}: {reason}; its threshold falls back to the {quantile:g} quantile of those "
        "scores, which sets no false-alarm rate: calibrate on site (mmad calibrate) or train on more images"
    )
    return {"image": deployment_threshold(scores, quantile), **entry, "rule": RULE_QUANTILE}


def combine_categories(per_category: Mapping[str, dict], false_alarm_rate: float) -> dict:
    """The checkpoint's "deployment" entry: global thresholds (maxima over categories) and every category's.

    The global rule is the rule of the category that sets the global image threshold; "images" counts the
    held-out images of every category.
    """
    if not per_category:
        raise ValueError("no category has held-out normal images: nothing to set a threshold from")
    highest = max(per_category, key=lambda name: per_category[name]["image"])
    return {
        "image": float(per_category[highest]["image"]),
        "pixel": max(float(c["pixel"]) for c in per_category.values()),
        "rule": per_category[highest]["rule"],
        "images": sum(int(c["images"]) for c in per_category.values()),
        "false_alarm_rate": float(false_alarm_rate),
        "categories": {name: dict(entry) for name, entry in per_category.items()},
    }


# ----------------------------------------------------------------------------------------------
# The reader
# ----------------------------------------------------------------------------------------------
def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"checkpoint thresholds: {where} must be a finite number, got {value!r}")
    return float(value)


def _count(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def deployment_thresholds(thresholds: Mapping) -> DeploymentThresholds | None:
    """The deployment thresholds of a checkpoint's "thresholds" dict (either layout); None when it has none.

    ValueError naming the entry when a threshold is not a finite number.
    """
    entry = thresholds.get(DEPLOYMENT)
    if isinstance(entry, Mapping):
        categories = {}
        for name, values in (entry.get("categories") or {}).items():
            pixel = values.get("pixel")
            categories[str(name)] = {
                **values,
                "image": _number(values.get("image"), f"{DEPLOYMENT}.categories.{name}.image"),
                "pixel": None if pixel is None else _number(pixel, f"{DEPLOYMENT}.categories.{name}.pixel"),
            }
        pixel = entry.get("pixel")
        return DeploymentThresholds(
            image=_number(entry.get("image"), f"{DEPLOYMENT}.image"),
            pixel=None if pixel is None else _number(pixel, f"{DEPLOYMENT}.pixel"),
            rule=str(entry.get("rule", RULE_QUANTILE)),
            images=_count(entry.get("images")),
            categories=categories,
        )
    if thresholds.get(THRESHOLD_NORMAL) is not None:
        image = _number(thresholds[THRESHOLD_NORMAL], THRESHOLD_NORMAL)
        return DeploymentThresholds(image, None, RULE_QUANTILE, _count(thresholds.get(THRESHOLD_NORMAL_COUNT)))
    return None


def threshold_lines(thresholds: Mapping) -> dict[str, float]:
    """The thresholds on image scores, labelled, for a score histogram and logs: the deployment one and the
    F1-optimal one (`mmad eval`, test labels). Nothing else in the dict is a threshold on image scores
    (a quantile level, image counts, per-category tables)."""
    lines = {}
    deployment = deployment_thresholds(thresholds)
    if deployment is not None:
        source = f", {deployment.images} normal images" if deployment.images is not None else ""
        lines[f"deployment ({deployment.rule}{source})"] = deployment.image
    f1 = thresholds.get(THRESHOLD_F1)
    if isinstance(f1, (int, float)) and not isinstance(f1, bool):
        lines["F1-optimal (test labels)"] = float(f1)
    return lines


def describe(deployment: DeploymentThresholds | None) -> str:
    """One line for the training log."""
    if deployment is None:
        return "no deployment threshold (no held-out normal images)"
    pixel = f", pixel {deployment.pixel:.4g}" if deployment.pixel is not None else ""
    line = f"deployment threshold {deployment.image:.4g}{pixel} ({deployment.rule}, {deployment.images} images)"
    if len(deployment.categories) > 1:
        per = ", ".join(f"{n} {c['image']:.4g} ({c['rule']}, {c['images']})" for n, c in deployment.categories.items())
        line += f"; per category: {per}"
    return line

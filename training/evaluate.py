"""Evaluation: anomaly maps on the test sets, the seven metrics and mAD per category, reports,
and the thresholds the runtime uses; optionally the same-encoder knn baseline (baseline.py) beside them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mmad.runtime.contract import THRESHOLD_F1

from .baseline import KnnBaseline
from .checkpoint import load_model, write_info
from .config import KNN_BANK_SIZE
from .data import ImageTransform, TestDataset, TrainDataset, find_categories, split_categories_holdout
from .metrics import compute_metrics, f1_optimal_threshold, mean_metrics
from .models import AnomalyModel
from .report import pick_mixed_indices, save_overlay_grid, save_score_histogram, write_metrics
from .thresholds import threshold_lines

GRID_ITEMS = 16


@dataclass
class Predictions:
    """Everything inference produced for one category's test set."""

    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N] 0/1
    maps: np.ndarray  # [N, H, W] float32
    masks: np.ndarray  # [N, H, W] bool
    indices: np.ndarray  # [N] indices into the TestDataset


# What produces maps and scores: (images [B, 3, S, S], their categories) -> (maps [B, 1, S, S], scores [B]).
Infer = Callable[[torch.Tensor, list[str]], tuple[torch.Tensor, torch.Tensor]]


def model_infer(model: AnomalyModel) -> Infer:
    """The trained model as an Infer (it needs no category: one model for all); call in eval mode."""

    def infer(images: torch.Tensor, categories: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(images)
        return out.anomaly_map, out.score

    return infer


@torch.no_grad()
def predict(
    infer: Infer | AnomalyModel, dataset: TestDataset, device, batch_size: int = 8, progress: bool = True
) -> dict[str, Predictions]:
    """Run the model (or another Infer, e.g. the knn baseline) over a test set; results grouped by category."""
    if isinstance(infer, AnomalyModel):  # in eval mode, then back to the mode it was in (training continues)
        model, was_training = infer, infer.training
        try:
            return predict(model_infer(model.eval()), dataset, device, batch_size, progress)
        finally:
            model.train(was_training)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    rows: dict[str, list] = {}
    index = 0
    for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        maps, scores = infer(batch["image"].to(device), list(batch["category"]))
        for i in range(len(scores)):
            rows.setdefault(batch["category"][i], []).append(
                (
                    float(scores[i]),
                    int(batch["label"][i]),
                    maps[i, 0].cpu().numpy(),
                    batch["mask"][i, 0].numpy() > 0.5,
                    index,
                )
            )
            index += 1
    return {
        cat: Predictions(
            np.array([r[0] for r in rs], np.float32),
            np.array([r[1] for r in rs], np.int64),
            np.stack([r[2] for r in rs]).astype(np.float32),
            np.stack([r[3] for r in rs]),
            np.array([r[4] for r in rs]),
        )
        for cat, rs in rows.items()
    }


def evaluate_model(
    model: AnomalyModel | Infer,
    categories,
    transform: ImageTransform,
    device,
    aupro: str = "sklearn",
    progress: bool = True,
    max_per_category: int | None = None,
    batch_size: int = 8,
) -> tuple[dict[str, dict], dict[str, Predictions], TestDataset]:
    """Metrics per category on the test images of `categories` (at most max_per_category of each, an even
    spread of normal and defective ones, for quick evaluations during training)."""
    tested = [c for c in categories if c.test]
    if max_per_category:
        tested = [
            replace(c, test=[c.test[i] for i in pick_mixed_indices([t.label for t in c.test], max_per_category)])
            for c in tested
        ]
    dataset = TestDataset(tested, transform)
    if len(dataset) == 0:
        raise ValueError(
            "no test images in the data given: evaluation needs <category>/test/ (MVTec) or test rows (VisA)"
        )
    preds = predict(model, dataset, device, batch_size, progress)
    per_cat = {cat: compute_metrics(p.scores, p.labels, p.maps, p.masks, aupro=aupro) for cat, p in preds.items()}
    return per_cat, preds, dataset


def grid_indices(p: Predictions, n: int) -> np.ndarray:
    """A deterministic mix: up to n/4 normal and the rest defective, evenly spread."""
    normal, defect = np.flatnonzero(p.labels == 0), np.flatnonzero(p.labels == 1)
    n_normal = min(len(normal), max(n // 4, n - len(defect)))
    pick = lambda idx, k: idx[np.linspace(0, len(idx) - 1, k).astype(int)] if k and len(idx) else idx[:0]  # noqa: E731
    return np.concatenate([pick(normal, n_normal), pick(defect, min(len(defect), n - n_normal))])


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_roots: list[str],
    out_dir: str | Path,
    *,
    aupro: str = "sklearn",
    device: str = "cpu",
    batch_size: int = 8,
    update_checkpoint: bool = True,
    baseline: str | None = None,
    baseline_bank_size: int = KNN_BANK_SIZE,
    log=print,
) -> dict:
    """Evaluate a checkpoint folder; writes metrics.{json,md,csv}, PNG grids and a score histogram,
    and stores the F1-optimal threshold in the checkpoint. baseline="knn" also scores the same-encoder
    nearest-neighbour baseline (baseline.py) on the same images and reports it beside the model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, info = load_model(checkpoint, device)
    mc = info.config.model
    transform = ImageTransform(image_size=mc.image_size, mean=mc.mean, std=mc.std)
    categories = find_categories(data_roots)
    started = time.time()
    per_cat, preds, dataset = evaluate_model(model, categories, transform, device, aupro, batch_size=batch_size)
    model_seconds = time.time() - started

    thresholds = with_f1_thresholds(info.thresholds, preds)
    meta = {
        "checkpoint": str(checkpoint),
        "aupro": aupro,
        "thresholds": thresholds,
        "config": info.config.to_dict(),
        "package_version": info.package_version,
        "data": [str(r) for r in data_roots],
        "training_minutes": info.progress.get("minutes"),
        "training_cpu_minutes": info.progress.get("cpu_minutes"),
        "eval_seconds": round(model_seconds, 1),
    }
    compared = None
    if baseline == "knn":
        compared = evaluate_knn_baseline(
            model, info, categories, transform, device, aupro, batch_size, baseline_bank_size
        )
    elif baseline is not None:
        raise ValueError(f"baseline: expected 'knn' or none, got {baseline!r}")
    write_metrics(out_dir, per_cat, meta, baseline=compared)
    save_figures(out_dir, preds, dataset, threshold_lines(thresholds))

    if update_checkpoint:
        info.thresholds = thresholds
        write_info(checkpoint, info)
    mean = mean_metrics(per_cat)
    log(format_table(per_cat, mean))
    if compared is not None:
        log(
            f"baseline {compared['method']}: {compared['description']}\n"
            + format_table(compared["per_category"], compared["mean"])
        )
    log(f"reports in {out_dir}; thresholds {threshold_lines(thresholds)}")
    return {"per_category": per_cat, "mean": mean, "thresholds": thresholds, "baseline": compared}


def with_f1_thresholds(thresholds: dict, preds: dict[str, Predictions]) -> dict:
    """The checkpoint's thresholds plus the F1-optimal ones on the test labels (reporting only), global and
    per category."""
    all_scores = np.concatenate([p.scores for p in preds.values()])
    all_labels = np.concatenate([p.labels for p in preds.values()])
    return {
        **thresholds,
        THRESHOLD_F1: float(f1_optimal_threshold(all_scores, all_labels)),
        "f1_per_category": {c: float(f1_optimal_threshold(p.scores, p.labels)) for c, p in preds.items()},
    }


def evaluate_knn_baseline(
    model, info, categories, transform, device, aupro: str, batch_size: int, bank_size: int
) -> dict:
    """The knn baseline on the model's encoder, its banks built from the same training normals the model
    saw (the checkpoint's threshold hold-out left out), scored on the same test images."""
    tc = info.config.train
    train_cats, _ = split_categories_holdout(categories, tc.threshold_holdout, tc.seed, tc.threshold_min_images)
    started = time.time()
    knn = KnnBaseline(model, bank_size, seed=tc.seed, device=device).fit(
        TrainDataset(train_cats, transform), batch_size
    )
    fit_seconds = time.time() - started
    per_cat, _, _ = evaluate_model(knn, categories, transform, device, aupro, batch_size=batch_size)
    return {
        "method": knn.name,
        "description": knn.describe(),
        "bank_size": bank_size,
        "bank_patches": {c: len(b) for c, b in knn.banks.items()},
        "fit_seconds": round(fit_seconds, 1),
        "eval_seconds": round(time.time() - started - fit_seconds, 1),
        "per_category": per_cat,
        "mean": mean_metrics(per_cat),
    }


def save_figures(out_dir: Path, preds: dict[str, Predictions], dataset: TestDataset, shown: dict) -> None:
    """One overlay grid per category and the histogram of all image scores with the thresholds."""
    for cat, p in preds.items():
        idx = grid_indices(p, GRID_ITEMS)
        images = np.stack([dataset.raw_image(int(p.indices[i])) for i in idx])
        titles = [dataset.caption(int(p.indices[i])) for i in idx]
        save_overlay_grid(
            out_dir / f"grid_{cat}.png", images, p.maps[idx], p.masks[idx], p.scores[idx], p.labels[idx], titles
        )
    all_scores = np.concatenate([p.scores for p in preds.values()])
    all_labels = np.concatenate([p.labels for p in preds.values()])
    save_score_histogram(out_dir / "scores.png", all_scores, all_labels, shown)


def format_table(per_cat: dict[str, dict], mean: dict) -> str:
    keys = ["I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO", "mAD"]
    lines = [f"{'category':<16}" + "".join(f"{k:>9}" for k in keys)]
    for cat, m in [*per_cat.items(), ("mean", mean)]:
        lines.append(f"{cat:<16}" + "".join(f"{m[k]:9.1f}" for k in keys))
    return "\n".join(lines)

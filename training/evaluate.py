"""Evaluation: anomaly maps on the test sets, the seven metrics and mAD per category, reports,
and the thresholds the runtime uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mmad.runtime.contract import THRESHOLD_F1

from .checkpoint import load_model, write_info
from .data import ImageTransform, TestDataset, find_categories
from .metrics import compute_metrics, f1_optimal_threshold, mean_metrics
from .models import AnomalyModel
from .report import save_overlay_grid, save_score_histogram, write_metrics
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


@torch.no_grad()
def predict(
    model: AnomalyModel, dataset: TestDataset, device, batch_size: int = 8, progress: bool = True
) -> dict[str, Predictions]:
    """Run the model over a test set; results grouped by category."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    rows: dict[str, list] = {}
    index = 0
    for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        out = model(batch["image"].to(device))
        for i in range(len(out.score)):
            rows.setdefault(batch["category"][i], []).append(
                (
                    float(out.score[i]),
                    int(batch["label"][i]),
                    out.anomaly_map[i, 0].cpu().numpy(),
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
    model: AnomalyModel, categories, transform: ImageTransform, device, aupro: str = "sklearn", progress: bool = True
) -> tuple[dict[str, dict], dict[str, Predictions], TestDataset]:
    dataset = TestDataset([c for c in categories if c.test], transform)
    if len(dataset) == 0:
        raise ValueError(
            "no test images in the data given: evaluation needs <category>/test/ (MVTec) or test rows (VisA)"
        )
    preds = predict(model, dataset, device, progress=progress)
    per_cat = {cat: compute_metrics(p.scores, p.labels, p.maps, p.masks, aupro=aupro) for cat, p in preds.items()}
    model.train(False)
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
    log=print,
) -> dict:
    """Evaluate a checkpoint folder; writes metrics.{json,md,csv}, PNG grids and a score histogram,
    and stores the F1-optimal threshold in the checkpoint."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, info = load_model(checkpoint, device)
    mc = info.config.model
    transform = ImageTransform(image_size=mc.image_size, mean=mc.mean, std=mc.std)
    categories = find_categories(data_roots)
    per_cat, preds, dataset = evaluate_model(model, categories, transform, device, aupro)

    all_scores = np.concatenate([p.scores for p in preds.values()])
    all_labels = np.concatenate([p.labels for p in preds.values()])
    thresholds = dict(info.thresholds)
    thresholds[THRESHOLD_F1] = float(f1_optimal_threshold(all_scores, all_labels))
    thresholds["f1_per_category"] = {c: float(f1_optimal_threshold(p.scores, p.labels)) for c, p in preds.items()}

    meta = {
        "checkpoint": str(checkpoint),
        "aupro": aupro,
        "thresholds": thresholds,
        "config": info.config.to_dict(),
        "package_version": info.package_version,
        "data": [str(r) for r in data_roots],
    }
    write_metrics(out_dir, per_cat, meta)
    for cat, p in preds.items():
        idx = grid_indices(p, GRID_ITEMS)
        images = np.stack([dataset.raw_image(int(p.indices[i])) for i in idx])
        titles = [dataset.caption(int(p.indices[i])) for i in idx]
        save_overlay_grid(
            out_dir / f"grid_{cat}.png", images, p.maps[idx], p.masks[idx], p.scores[idx], p.labels[idx], titles
        )
    shown = threshold_lines(thresholds)
    save_score_histogram(out_dir / "scores.png", all_scores, all_labels, shown)

    if update_checkpoint:
        info.thresholds = thresholds
        write_info(checkpoint, info)
    mean = mean_metrics(per_cat)
    log(format_table(per_cat, mean))
    log(f"reports in {out_dir}; thresholds {shown}")
    return {"per_category": per_cat, "mean": mean, "thresholds": thresholds}


def format_table(per_cat: dict[str, dict], mean: dict) -> str:
    keys = ["I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO", "mAD"]
    lines = [f"{'category':<16}" + "".join(f"{k:>9}" for k in keys)]
    for cat, m in [*per_cat.items(), ("mean", mean)]:
        lines.append(f"{cat:<16}" + "".join(f"{m[k]:9.1f}" for k in keys))
    return "\n".join(lines)

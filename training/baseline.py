"""A training-free baseline on the checkpoint's own frozen encoder, to hold the trained model against.

    baseline = KnnBaseline(model, bank_size=50_000).fit(train_dataset)      # per category
    maps, scores = baseline.predict(images, category)                      # [B, 1, S, S], [B]

PatchCore-style nearest neighbours (Roth et al., "Towards Total Recall in Industrial Anomaly
Detection"): the encoder's three feature scales, each averaged over its 3×3 neighbourhood, resized to
one grid (GRID, stride 8 as PatchCore's) and concatenated; a memory bank of training-normal patches
per category, a random subsample of at most `bank_size` patches (drawn evenly from every image, so
memory stays bounded however many images there are); the anomaly map is each patch's distance to
its nearest bank patch, upsampled and blurred as the model's map; the image score is its maximum.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .config import KNN_BANK_SIZE
from .models import AnomalyModel
from .models.layers import GaussianBlur

GRID = 32  # patches per side: the encoder's stride-8 scale
QUERY_CHUNK = 4096  # test patches per distance block: bounds the block at QUERY_CHUNK × bank_size floats


class KnnBaseline:
    """Nearest-neighbour anomaly maps from a memory bank of normal patches, one bank per category."""

    name = "knn"

    def __init__(self, model: AnomalyModel, bank_size: int = KNN_BANK_SIZE, seed: int = 0, device="cpu"):
        if bank_size < 1:
            raise ValueError(f"bank_size: expected >= 1 patches, got {bank_size}")
        self.model, self.bank_size, self.device = model.eval(), bank_size, device
        self.generator = torch.Generator().manual_seed(seed)
        size = model.cfg.image_size
        self.blur = GaussianBlur(model.cfg.blur_sigma, size).to(device)
        self.banks: dict[str, torch.Tensor] = {}

    def describe(self) -> str:
        sizes = ", ".join(f"{c} {len(b)}" for c, b in self.banks.items())
        return (
            f"PatchCore-style nearest neighbour on the model's encoder: 3 scales, 3×3 average, {GRID}×{GRID} grid, "
            f"random bank of at most {self.bank_size} patches per category ({sizes}), blur σ "
            f"{self.model.cfg.blur_sigma:g}, score = max"
        )

    @torch.no_grad()
    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] images -> [B, GRID·GRID, C1+C2+C3] patch features."""
        feats = self.model.scaled_features(images.to(self.device))  # its own 3×3 average, not the model's
        grid = [
            F.interpolate(
                F.avg_pool2d(f, 3, stride=1, padding=1), size=(GRID, GRID), mode="bilinear", align_corners=False
            )
            for f in feats
        ]
        return torch.cat(grid, dim=1).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def fit(self, dataset: Dataset, batch_size: int = 8) -> "KnnBaseline":
        """Build one bank per category from a TrainDataset (items with "image" and "category")."""
        counts = defaultdict(int)
        for category in getattr(dataset, "item_categories", []):
            counts[category] += 1
        if len(dataset) == 0 or not counts:
            raise ValueError("knn baseline: no training images to build the memory bank from (expected normal images)")
        chosen: dict[str, list[torch.Tensor]] = defaultdict(list)
        for batch in DataLoader(dataset, batch_size=batch_size):
            for patches, category in zip(self.patches(batch["image"]), batch["category"]):
                per_image = math.ceil(self.bank_size / counts[category])
                pick = torch.randperm(len(patches), generator=self.generator)[:per_image]
                chosen[category].append(patches[pick])
        for category, parts in chosen.items():
            bank = torch.cat(parts)
            pick = torch.randperm(len(bank), generator=self.generator)[: self.bank_size]
            self.banks[category] = bank[pick].contiguous()
        return self

    def __call__(self, images: torch.Tensor, categories: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """evaluate.Infer: maps and scores of a batch whose images may come from several categories."""
        maps = torch.empty(len(images), 1, *images.shape[2:], device=self.device)
        scores = torch.empty(len(images), device=self.device)
        for category in dict.fromkeys(categories):
            rows = torch.tensor([i for i, c in enumerate(categories) if c == category], device=self.device)
            maps[rows], scores[rows] = self.predict(images[rows], category)
        return maps, scores

    @torch.no_grad()
    def predict(self, images: torch.Tensor, category: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps [B, 1, S, S] (blurred nearest-neighbour distances) and scores [B] (their maxima)."""
        if category not in self.banks:
            raise ValueError(f"knn baseline: no memory bank for category '{category}'; fitted: {sorted(self.banks)}")
        bank, size = self.banks[category], self.model.cfg.image_size
        queries = self.patches(images).flatten(0, 1)
        nearest = torch.cat([torch.cdist(q, bank).amin(dim=1) for q in queries.split(QUERY_CHUNK)])
        grid = nearest.view(len(images), 1, GRID, GRID)
        maps = self.blur(F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False))
        return maps, maps.flatten(1).amax(dim=1)

"""Datasets: the torch Datasets of training and test images, and the normal hold-out for the threshold.

Pipeline (training/README.md, "Training recipe" and "Metrics protocol"): decode to uint8 RGB ->
resize to image_size x image_size with contract.resize_to_input (the runtime's resize) -> float
[3, H, W] with ImageNet mean/std. No augmentation. Masks: binarised (> 0) at load, resized
bilinear, re-binarised at 0.5.

Decoding and the transform live in images.py, the layouts in layouts.py; the names other packages
use (find_categories, load_image, ImageTransform, ...) are importable from here too.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from mmad.training.images import DataError, ImageTransform, load_image, load_mask
from mmad.training.layouts import (
    IMAGE_EXTENSIONS,
    Category,
    TestItem,
    describe,
    find_categories,
    is_image_file,
    select_categories,
)

T = TypeVar("T")


class _CachedImages(Dataset):
    """Lazily decoded, resized images, optionally kept in memory.

    The cache holds resized uint8 arrays (S*S*3 bytes each: 192 KiB at 256). With DataLoader
    workers each worker fills its own copy; call `preload()` before the workers start to fill it
    once and share it copy-on-write.
    """

    def __init__(
        self,
        categories: Sequence[Category],
        transform: ImageTransform | None = None,
        only: Iterable[str] | None = None,
        cache: bool = False,
    ):
        chosen = select_categories(categories, only)
        self.categories = [c.name for c in chosen]
        self.paths = self._collect(chosen)
        self.transform = transform or ImageTransform()
        self._cache: dict[int, object] | None = {} if cache else None

    def _collect(self, chosen: list[Category]) -> list[Path]:
        """The image files of the chosen categories, one per item (subclasses keep their own per-item data)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, i: int):
        return self.transform.resize(load_image(self.paths[i]))

    def _decoded(self, i: int):
        if self._cache is None:
            return self._decode(i)
        if i not in self._cache:
            decoded = self._decode(i)
            for array in decoded if isinstance(decoded, tuple) else (decoded,):
                array.setflags(write=False)  # callers share the cached arrays
            self._cache[i] = decoded
        return self._cache[i]

    def _check_index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        return i % len(self)

    def preload(self, progress: bool = True) -> None:
        """Decode every item into the cache now (no-op without a cache)."""
        if self._cache is None:
            return
        from tqdm import tqdm

        for i in tqdm(range(len(self)), desc="decoding images", disable=not progress, leave=False):
            self._decoded(i)


class TrainDataset(_CachedImages):
    """The defect-free training images of all given categories, merged (the multi-class setting).

    item: {"image": float32 [3, S, S], "category": str, "path": str}
    """

    def _collect(self, chosen: list[Category]) -> list[Path]:
        self.item_categories = [c.name for c in chosen for _ in c.train]
        return [p for c in chosen for p in c.train]

    def raw_image(self, i: int) -> np.ndarray:
        """The resized uint8 image [S, S, 3], for visualisation (read-only when cached)."""
        return self._decoded(self._check_index(i))

    def __getitem__(self, i: int) -> dict:
        i = self._check_index(i)
        return {
            "image": self.transform.normalize(self._decoded(i)),
            "category": self.item_categories[i],
            "path": str(self.paths[i]),
        }


class TestDataset(_CachedImages):
    """The labelled test images of all given categories.

    item: {"image": float32 [3, S, S], "mask": float32 [1, S, S] in {0, 1}, "label": int (0 good,
    1 defective, from the layout), "category": str, "path": str, "defect": str}
    """

    __test__ = False  # not a pytest class

    def _collect(self, chosen: list[Category]) -> list[Path]:
        self.items = [item for c in chosen for item in c.test]
        self.item_categories = [c.name for c in chosen for _ in c.test]
        return [item.path for item in self.items]

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def _decode(self, i: int):
        item = self.items[i]
        image = load_image(item.path)
        if item.mask is None:
            mask = np.zeros((self.transform.image_size,) * 2, dtype=bool)
        else:
            full_mask = load_mask(item.mask)
            if full_mask.shape != image.shape[:2]:
                raise DataError(
                    f"{item.mask}: mask is {full_mask.shape[1]}x{full_mask.shape[0]} but its "
                    f"image {item.path} is {image.shape[1]}x{image.shape[0]}; expected equal sizes"
                )
            mask = self.transform.resize_mask(full_mask)
        return self.transform.resize(image), mask

    def raw_image(self, i: int) -> np.ndarray:
        """The resized uint8 image [S, S, 3], for visualisation (read-only when cached)."""
        return self._decoded(self._check_index(i))[0]

    def caption(self, i: int) -> str:
        """The item's name for figures: category/type/file stem, e.g. "bottle/broken_large/003"."""
        item = self.items[self._check_index(i)]
        return f"{self.item_categories[self._check_index(i)]}/{item.defect}/{item.path.stem}"

    def raw_mask(self, i: int) -> np.ndarray:
        """The resized bool mask [S, S]."""
        return self._decoded(self._check_index(i))[1]

    def __getitem__(self, i: int) -> dict:
        i = self._check_index(i)
        image, mask = self._decoded(i)
        item = self.items[i]
        return {
            "image": self.transform.normalize(image),
            "mask": torch.from_numpy(mask.astype(np.float32))[None],
            "label": item.label,
            "category": self.item_categories[i],
            "path": str(item.path),
            "defect": item.defect,
        }


def check_images_decode(categories: Sequence[Category], shown: int = 5) -> None:
    """Decode every training image of `categories` (e.g. those held out for the threshold, read only after
    the last epoch) now, so that a bad file stops a run before it starts. DataError naming the files that
    do not decode (the first `shown` of them, and how many in all)."""
    failures = []
    for path in (p for c in categories for p in c.train):
        try:
            load_image(path)
        except DataError as err:
            failures.append(str(err))
    if failures:
        more = f" (and {len(failures) - shown} more)" if len(failures) > shown else ""
        raise DataError(f"{len(failures)} image(s) do not decode: " + "; ".join(failures[:shown]) + more)


# ------------------------------------------------------------------------------------------------
# Normal hold-out (for a threshold set from normal images only)
# ------------------------------------------------------------------------------------------------
def split_normal_holdout(
    train_items: Sequence[T], fraction: float, seed: int, minimum: int = 0
) -> tuple[list[T], list[T]]:
    """Deterministically hold out max(round(fraction * n), min(minimum, n // 2)) items (at least 1 when
    fraction > 0): a floor of `minimum` that never takes more than half the items (config.TrainConfig).

    Returns (kept, held_out), each in the input order. Raises ValueError when fraction is outside
    [0, 1) or nothing would be left to train on.
    """
    if any(isinstance(x, Category) for x in train_items):
        # Splitting a list of categories would hold out whole categories, silently.
        raise TypeError(
            "split_normal_holdout splits one list of items; for categories use "
            "split_categories_holdout(categories, fraction, seed)"
        )
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    n = len(train_items)
    n_held = 0 if fraction == 0 else max(1, round(fraction * n), min(minimum, n // 2))
    if n_held >= n and n_held > 0:
        raise DataError(
            f"cannot hold out {n_held} of {n} training images and still train; "
            "expected at least 2 training images per category"
        )
    held = set(np.random.default_rng(seed).permutation(n)[:n_held].tolist())
    kept = [x for i, x in enumerate(train_items) if i not in held]
    held_out = [x for i, x in enumerate(train_items) if i in held]
    return kept, held_out


def split_categories_holdout(
    categories: Sequence[Category], fraction: float, seed: int, minimum: int = 0
) -> tuple[list[Category], list[Category]]:
    """Per-category normal hold-out (split_normal_holdout, with its floor `minimum`), so every category
    has its own threshold.

    Returns (training categories, hold-out categories). A hold-out category has the held-out
    normals as its `train` list (use it with TrainDataset) and no test items. Each category's
    split depends only on (seed, its name), not on the other categories.
    """
    kept, held = [], []
    for category in categories:
        category_seed = [seed, zlib.crc32(category.name.encode())]  # stable across processes
        keep, hold = split_normal_holdout(category.train, fraction, category_seed, minimum)
        kept.append(replace(category, train=keep))
        held.append(replace(category, train=hold, test=[]))
    return kept, held


__all__ = [
    "DataError",
    "load_image",
    "load_mask",
    "TestItem",
    "Category",
    "find_categories",
    "select_categories",
    "ImageTransform",
    "TrainDataset",
    "TestDataset",
    "split_normal_holdout",
    "split_categories_holdout",
    "check_images_decode",
    "describe",
    "IMAGE_EXTENSIONS",
    "is_image_file",
]

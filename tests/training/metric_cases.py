"""Maps, masks and labels for the metric tests, built so each test knows the answer."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

TIGHT = 1e-9  # percent; exact computations that differ only in summation order


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
    """Image score = max of the map (README "Anomaly map and image score"), label = any defect pixel."""
    return maps.max(axis=(1, 2)), masks.any(axis=(1, 2)).astype(int)


def perfect_case(rng, n_images=12, size=32):
    """Defect pixels in [1, 1.1), normal pixels in [0, 0.1): every threshold separates them."""
    masks = blob_masks(rng, n_images, size, n_images // 2)
    maps = (rng.uniform(0.0, 0.1, masks.shape) + masks).astype(np.float32)
    scores, labels = scores_and_labels(maps, masks)
    return scores, labels, maps, masks

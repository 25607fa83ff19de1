"""The frames every backend of `mmad bench` sees: images read from --images (a folder or an MVTec
dataset root, masks left out, spread evenly over it), or generated inspection frames
(synthetic_video.py) when none are given; resized to --frame-size when asked.

    frames, source = load_frames(config)    # uint8 RGB [H, W, 3] each, and the report's description
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mmad.runtime.bench.config import DEFAULT_FRAME_SIZE, BenchConfig
from mmad.runtime.errors import ConfigError
from mmad.runtime.synthetic_video import render_frames

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_files(root: Path) -> list[Path]:
    """Images under `root` (recursively), ground-truth masks left out, sorted."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ConfigError(f"--images {root}: no such file or folder")
    found = [
        p
        for p in sorted(root.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and "ground_truth" not in p.parts and not p.stem.endswith("_mask")
    ]
    if not found:
        raise ConfigError(f"--images {root}: no images ({', '.join(IMAGE_SUFFIXES)}) found under it")
    return found


def evenly_spread(items: list, count: int) -> list:
    """`count` items spread over the list (first and last kept), so test/good and defect folders all appear."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB [H, W, 3] read with OpenCV; ConfigError naming an unreadable file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"--images: cannot read {path} as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def generated_frames(size: tuple[int, int], count: int) -> tuple[list[np.ndarray], dict[str, object]]:
    """`count` generated inspection frames of size (width, height), every other one with a defect."""
    defect_frames = list(range(1, count, 2))
    frames = [frame for frame, _ in render_frames(count, size, defect_frames, seed=0)]
    source = "generated (mmad.runtime.synthetic_video.render_frames, seed 0)"
    return frames, {"source": source, "defect_frames": defect_frames}


def load_frames(config: BenchConfig) -> tuple[list[np.ndarray], dict[str, object]]:
    """The frames every backend sees (uint8 RGB [H, W, 3] each) and a description for the report."""
    if config.images:
        paths = evenly_spread(image_files(Path(config.images)), config.max_images)
        frames = [read_rgb(p) for p in paths]
        source: dict[str, object] = {"source": str(config.images), "paths": [str(p) for p in paths]}
    else:
        frames, source = generated_frames(config.frame_size or DEFAULT_FRAME_SIZE, config.max_images)
    if config.frame_size:
        width, height = config.frame_size
        frames = [
            cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) if f.shape[:2] != (height, width) else f
            for f in frames
        ]
    source.update(count=len(frames), frame_sizes=sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames}))
    return frames, source

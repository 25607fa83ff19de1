"""A small synthetic defect dataset in MVTec AD layout, generated in seconds, no download.

    <out>/<category>/train/good/000.png ...
    <out>/<category>/test/good/000.png ...
    <out>/<category>/test/<scratch|hole|stain>/000.png ...
    <out>/<category>/ground_truth/<scratch|hole|stain>/000_mask.png   (0/255)
    <out>/<category>/calib/good/000.png ...   (only with --n-calib N: more defect-free images, for
                                               `mmad calibrate`; neither trained nor tested on)

Categories: "texture" (a plain-woven fabric with grain) and "object" (a round machined part,
seen from above, on a dark background). Normal images vary (seeded): colour, lighting, weave
period and angle, part position and size, noise. Defects: scratches (thin dark lines), holes (dark
discs) and stains (coloured blobs), drawn on the textured area or on the part.

    python -m mmad.samples.make_dataset --out DIR [--categories texture object] [--n-train 60] ...

Every image has its own random stream derived from (seed, category, split, index), so a dataset
is reproducible for a seed, and changing one count does not change the other images.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

CATEGORIES = ("texture", "object")
DEFECT_TYPES = ("scratch", "hole", "stain")
_SPLIT_IDS = {"train": 0, "good": 1, "scratch": 2, "hole": 3, "stain": 4, "calib": 5}
_NORMAL_FOLDERS = {"train": ("train", "good"), "good": ("test", "good"), "calib": ("calib", "good")}
_STAIN_COLOURS = ((175, 35, 30), (35, 70, 175), (40, 140, 50), (120, 30, 140))


@dataclass(frozen=True)
class Region:
    """Where defects may be drawn: a disc (pixels), inside the textured area or the part."""

    cx: float
    cy: float
    radius: float


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, each float32 [size, size]."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords)  # x, y


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise, float32 [size, size], roughly unit variance."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(low, mode="F").resize((size, size), Image.BICUBIC))


def _coverage(distance_inside: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance (> 0 inside the shape, pixels)."""
    return np.clip(distance_inside + 0.5, 0.0, 1.0)


def _woven_texture(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Region]:
    """A plain weave: threads alternate over/under each cell; beige-brown with grain noise."""
    s = size / 256
    x, y = _grid(size)
    angle = np.deg2rad(rng.uniform(-4, 4))
    period = rng.uniform(9.0, 11.0) * s
    u = x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, period)
    v = -x * np.sin(angle) + y * np.cos(angle) + rng.uniform(0, period)
    over = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    across = np.where(over, u, v) / period  # the top thread runs across this coordinate
    thread = np.sin(np.pi * (across - np.floor(across))) ** 0.6  # bright centre, dark gaps
    shade = 0.62 + 0.38 * thread + 0.04 * _smooth_noise(rng, size, 6)
    base = np.array([185, 160, 120], np.float32) + rng.uniform(-12, 12, 3).astype(np.float32)
    image = shade[..., None] * base + rng.normal(0, 4.0, (size, size, 1)).astype(np.float32)
    return image, Region(size / 2, size / 2, 0.4 * size)


def _round_part(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Region]:
    """A machined disc with a groove and a raised centre, lit from one side, on a dark ground."""
    s = size / 256
    x, y = _grid(size)
    cx, cy = size / 2 + rng.uniform(-4, 4, 2) * s
    radius = rng.uniform(76, 84) * s
    r = np.hypot(x - cx, y - cy)
    light = rng.uniform(0, 2 * np.pi)
    towards_light = ((x - cx) * np.cos(light) + (y - cy) * np.sin(light)) / radius
    metal = rng.uniform(160, 180) * (1.0 - 0.2 * (r / radius) ** 2 + 0.08 * towards_light)
    groove = _coverage(2.0 * s - np.abs(r - 0.62 * radius))
    metal = metal * (1.0 - 0.35 * groove) + 25.0 * _coverage(0.28 * radius - r)
    ground = rng.uniform(35, 50) + 6.0 * _smooth_noise(rng, size, 4)
    part = _coverage(radius - r)
    grey = part * metal + (1.0 - part) * ground
    tint = np.array([1.0, 1.0, 1.06], np.float32)
    image = grey[..., None] * tint + rng.normal(0, 3.0, (size, size, 1)).astype(np.float32)
    return image.astype(np.float32), Region(cx, cy, 0.72 * radius)


_RENDERERS = {"texture": _woven_texture, "object": _round_part}


def normal_image(category: str, rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, Region]:
    """A defect-free image, uint8 [size, size, 3], and the region where defects may go."""
    if category not in _RENDERERS:
        raise ValueError(f"unknown synthetic category '{category}'; expected one of {CATEGORIES}")
    image, region = _RENDERERS[category](rng, size)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), region


def _point_in(region: Region, rng: np.random.Generator, margin: float = 0.0) -> tuple[float, float]:
    radius = max(region.radius - margin, 0.0) * np.sqrt(rng.uniform())
    theta = rng.uniform(0, 2 * np.pi)
    return region.cx + radius * np.cos(theta), region.cy + radius * np.sin(theta)


def _scratch(size: int, region: Region, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    s = size / 256
    x, y = _grid(size)
    length = rng.uniform(45, 85) * s
    (x0, y0), theta = _point_in(region, rng, margin=length / 2), rng.uniform(0, np.pi)
    dx, dy = np.cos(theta) * length / 2, np.sin(theta) * length / 2
    ax, ay, bx, by = x0 - dx, y0 - dy, x0 + dx, y0 + dy
    t = np.clip(((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / (length**2), 0, 1)
    distance = np.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay)))
    width = rng.uniform(2.0, 3.0) * s
    return _coverage(width / 2 - distance), np.array([30, 25, 22], np.float32)


def _hole(size: int, region: Region, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, y = _grid(size)
    radius = rng.uniform(7, 12) * size / 256
    cx, cy = _point_in(region, rng, margin=radius)
    return _coverage(radius - np.hypot(x - cx, y - cy)), np.array([8, 8, 10], np.float32)


def _stain(size: int, region: Region, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A blob: the union of a few overlapping discs."""
    s = size / 256
    x, y = _grid(size)
    cx, cy = _point_in(region, rng, margin=22 * s)
    inside = np.full((size, size), -np.inf, np.float32)
    for _ in range(rng.integers(3, 6)):
        r = rng.uniform(6, 12) * s
        ox, oy = rng.uniform(-9, 9, 2) * s
        inside = np.maximum(inside, r - np.hypot(x - cx - ox, y - cy - oy))
    colour = np.array(_STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))], np.float32)
    return _coverage(inside), colour


_DEFECTS = {"scratch": _scratch, "hole": _hole, "stain": _stain}
_OPACITY = {"scratch": 0.9, "hole": 1.0, "stain": 0.85}  # a stain lets some texture show through


def add_defect(image: np.ndarray, region: Region, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect into a copy of `image` (uint8 [H, W, 3]).

    Returns (image uint8 [H, W, 3], mask bool [H, W]); the mask is where the defect covers at
    least half a pixel.
    """
    if kind not in _DEFECTS:
        raise ValueError(f"unknown defect type '{kind}'; expected one of {DEFECT_TYPES}")
    coverage, colour = _DEFECTS[kind](image.shape[0], region, rng)
    alpha = _OPACITY[kind] * coverage[..., None]
    blended = image.astype(np.float32) * (1 - alpha) + colour * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8), coverage >= 0.5


def _rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(category.encode()), _SPLIT_IDS[split], index])


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)  # fast; the data is regenerated, not archived


def _prepare_category_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{folder} already exists and is not empty; pass overwrite=True (--overwrite) to replace it"
            )
        shutil.rmtree(folder)


def make_category(
    out_dir: Path,
    category: str,
    n_train: int,
    n_test_good: int,
    n_test_defect_per_type: int,
    size: int,
    seed: int,
    overwrite: bool = False,
    n_calib: int = 0,
) -> Path:
    """Write one category; returns its folder."""
    folder = out_dir / category
    _prepare_category_folder(folder, overwrite)
    for split, count in (("train", n_train), ("good", n_test_good), ("calib", n_calib)):
        sub = folder.joinpath(*_NORMAL_FOLDERS[split])
        for i in range(count):
            _save_png(normal_image(category, _rng(seed, category, split, i), size)[0], sub / f"{i:03d}.png")
    for kind in DEFECT_TYPES:
        for i in range(n_test_defect_per_type):
            rng = _rng(seed, category, kind, i)
            image, mask = add_defect(*normal_image(category, rng, size), kind, rng)
            _save_png(image, folder / "test" / kind / f"{i:03d}.png")
            _save_png(mask.astype(np.uint8) * 255, folder / "ground_truth" / kind / f"{i:03d}_mask.png")
    return folder


def make_dataset(
    out_dir,
    categories: Sequence[str] = CATEGORIES,
    n_train: int = 60,
    n_test_good: int = 10,
    n_test_defect_per_type: int = 5,
    size: int = 256,
    seed: int = 0,
    overwrite: bool = False,
    n_calib: int = 0,
) -> Path:
    """Generate the dataset under out_dir (one folder per category); returns out_dir.

    n_calib: defect-free images in <category>/calib/good/, each from its own random stream (so unlike
    every training and test image) for calibrating a deployed model on parts it never saw.
    Raises ValueError for an unknown category, a size below 64 or a count below its minimum
    (n_train >= 1, the rest >= 0), and FileExistsError when a category folder is already there
    and not empty (unless overwrite, which replaces that category folder).
    """
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"unknown or no categories {list(unknown)}; expected some of {CATEGORIES}")
    if len(set(categories)) != len(categories):
        raise ValueError(f"categories {list(categories)} repeat a name")
    if size < 64:
        raise ValueError(f"size must be >= 64 (defects are drawn at 256-pixel scale), got {size}")
    if n_train < 1 or n_test_good < 0 or n_test_defect_per_type < 0 or n_calib < 0:
        raise ValueError(
            f"need n_train >= 1, n_test_good >= 0, n_test_defect_per_type >= 0, n_calib >= 0; got "
            f"{n_train}, {n_test_good}, {n_test_defect_per_type}, {n_calib}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for category in categories:
        make_category(out_dir, category, n_train, n_test_good, n_test_defect_per_type, size, seed, overwrite, n_calib)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmad.samples.make_dataset",
        description="Generate a small synthetic defect dataset in MVTec AD layout.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (one subfolder per category)")
    parser.add_argument(
        "--categories",
        nargs="+",
        default=list(CATEGORIES),
        choices=CATEGORIES,
        help=f"which categories to generate (default: {' '.join(CATEGORIES)})",
    )
    parser.add_argument("--n-train", type=int, default=60, help="defect-free training images per category")
    parser.add_argument("--n-test-good", type=int, default=10, help="defect-free test images per category")
    parser.add_argument(
        "--n-test-defect-per-type",
        type=int,
        default=5,
        help=f"defective test images per category and type ({', '.join(DEFECT_TYPES)})",
    )
    parser.add_argument(
        "--n-calib",
        type=int,
        default=0,
        help="extra defect-free images per category in <category>/calib/good, for mmad calibrate (default 0)",
    )
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same images")
    parser.add_argument("--overwrite", action="store_true", help="replace existing category folders")
    args = parser.parse_args(argv)
    try:
        out = make_dataset(
            args.out,
            args.categories,
            args.n_train,
            args.n_test_good,
            args.n_test_defect_per_type,
            args.size,
            args.seed,
            args.overwrite,
            args.n_calib,
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    per_category = args.n_train + args.n_test_good + len(DEFECT_TYPES) * args.n_test_defect_per_type + args.n_calib
    print(f"wrote {len(args.categories)} categories x {per_category} images to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

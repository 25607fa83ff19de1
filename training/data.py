"""Datasets: image decoding, layout discovery (MVTec AD, VisA, plain folders) and torch Datasets.

Pipeline (MODEL_SPEC §4, §6): decode to uint8 RGB -> resize bilinear to image_size x image_size ->
float [3, H, W] with ImageNet mean/std. No augmentation. Masks: binarised (> 0) at load, resized
bilinear, re-binarised at 0.5.

Layouts understood by `find_categories`:

    MVTec AD   <category>/train/good/*.png
               <category>/test/<good|defect>/<stem>.png
               <category>/ground_truth/<defect>/<stem>_mask.png
               (a folder of such categories is a dataset)
    VisA       <root>/split_csv/1cls.csv with columns object,split,label,image,mask
               (paths relative to <root>; label normal|anomaly)
    folder     any folder of images (searched recursively): a training-only category
"""

from __future__ import annotations

import csv
import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence, TypeVar, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from mmad.runtime.contract import IMAGENET_MEAN, IMAGENET_STD

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUTS = ("mvtec", "visa", "folder")
GOOD = "good"  # MVTec's name for the defect-free test folder; also the `defect` of every normal item
VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")

PathLike = Union[str, Path]
T = TypeVar("T")


class DataError(ValueError):
    """Bad or missing data. The message names the file or folder and what was expected."""


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------
# Errors Pillow (and the codecs under it) raise for unreadable, truncated or hostile files.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


def _open_decoded(path: PathLike, what: str) -> Image.Image:
    """Open and fully decode an image file (first frame), upright per its EXIF orientation."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected {what}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; expected {what}")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated data fails here and not in a worker later
            # Camera JPEGs store rotation in EXIF; OpenCV's imread applies it too.
            return ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot decode ({type(e).__name__}: {e}); expected {what}") from None


def _sixteen_bit_to_8(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by dropping the low byte: the rule Pillow itself applies to 16-bit colour
    PNGs, so 16-bit gray and 16-bit colour files map the same way (full range -> full range)."""
    return (values.astype(np.uint32) >> 8).astype(np.uint8)


def load_image(path: PathLike) -> np.ndarray:
    """Decode an image file to uint8 RGB, shape [H, W, 3].

    Conversions: gray ("1", "L") is replicated to 3 channels; palette images are mapped through
    their palette; CMYK/YCbCr use Pillow's conversion. Alpha (LA, RGBA, PA, transparent palette)
    is *dropped*, keeping the colour channels unchanged, as PIL's convert("RGB") and OpenCV's
    imread(IMREAD_COLOR) do, so training and deployment see the same pixels. 16-bit data (I;16*,
    16-bit PNG gray or colour, 32-bit "I" holding 16-bit values) is scaled by its bit depth,
    v >> 8, never clipped. Float images and 32-bit values above 65535 are refused.

    Raises DataError naming the file when it is missing, empty, corrupt or of an unsupported mode.
    """
    im = _open_decoded(path, "an image (png, jpg, bmp, tif)")
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: integer image with values outside 0..65535; expected 8- or 16-bit data")
        return np.repeat(_sixteen_bit_to_8(values)[..., None], 3, axis=2)
    if mode in ("RGBA", "RGBa", "RGBX", "LA", "La", "PA", "P"):
        # Via RGBA: Pillow warns when a palette with per-entry alpha goes straight to RGB.
        rgba = im if mode in ("RGBA", "RGBX") else im.convert("RGBA")
        return np.ascontiguousarray(np.asarray(rgba)[..., :3], dtype=np.uint8)
    if mode in ("RGB", "L", "1", "CMYK", "YCbCr"):
        return np.array(im.convert("RGB"), dtype=np.uint8)
    raise DataError(
        f"{path}: unsupported pixel mode '{mode}'; expected gray, RGB(A), palette, CMYK, or 16-bit gray/colour"
    )


def load_mask(path: PathLike) -> np.ndarray:
    """Decode a ground-truth mask to bool [H, W]: any value > 0 is defect (MODEL_SPEC §6).

    Multi-channel masks: a pixel is defect when any colour channel is > 0 (alpha is ignored).
    Palette masks: index > 0 is defect (index 0 is background, the segmentation convention).
    """
    im = _open_decoded(path, "a mask image (0 = good, > 0 = defect)")
    if im.mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LA", "PA"):
        if im.mode in ("CMYK", "YCbCr"):
            im = im.convert("RGB")
        channels = np.asarray(im)
        colour = channels[..., :1] if im.mode in ("LA", "PA") else channels[..., :3]
        return np.ascontiguousarray(colour.max(axis=2) > 0)
    if im.mode == "F":
        raise DataError(f"{path}: float mask; expected an integer mask image (0 = good, > 0 = defect)")
    return np.asarray(im) > 0  # "1", "L", "P" (indices), "I", "I;16*"


# ------------------------------------------------------------------------------------------------
# Layout discovery
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestItem:
    """One test image. label: 0 good, 1 defective; mask is None for good images."""

    __test__ = False  # not a pytest class

    path: Path
    label: int
    mask: Path | None
    defect: str  # "good" for normal images; the defect type (MVTec folder) or "anomaly" (VisA)


@dataclass
class Category:
    """One category (object or texture class) of a dataset: its defect-free training images and
    its labelled test images."""

    name: str
    root: Path
    layout: str  # one of LAYOUTS
    train: list[Path] = field(default_factory=list)
    test: list[TestItem] = field(default_factory=list)

    def __repr__(self) -> str:  # the default one would print every path
        n_bad = sum(item.label for item in self.test)
        return (
            f"Category({self.name!r}, layout={self.layout!r}, train={len(self.train)}, "
            f"test={len(self.test) - n_bad} good + {n_bad} defective, root='{self.root}')"
        )


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """Image files in a folder, sorted; hidden files (macOS '._x.png' and the like) skipped."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in candidates
        if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def find_categories(roots: PathLike | Sequence[PathLike]) -> list[Category]:
    """Discover the categories under one root, or under several roots as one multi-class dataset.

    Each root is, in order of precedence: a VisA root (split_csv/1cls.csv), an MVTec category
    (train/good/), an MVTec dataset (subfolders with train/good/), or a folder of images.
    Raises DataError naming the file/folder for a root that matches no layout, a category without
    training images, a defective test image without its mask, or a category name used twice.
    """
    if isinstance(roots, (str, Path)):
        roots = [roots]
    if len(roots) == 0:
        raise DataError("no dataset root given; expected at least one folder")
    categories: list[Category] = []
    seen: dict[str, Path] = {}
    for root in roots:
        for category in _categories_in_root(Path(root)):
            if category.name in seen:
                raise DataError(
                    f"category name '{category.name}' is used twice: {seen[category.name]} "
                    f"and {category.root}; expected unique category names across roots"
                )
            seen[category.name] = category.root
            categories.append(category)
    return categories


def _categories_in_root(root: Path) -> list[Category]:
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a dataset root folder")
    if (root / VISA_CSV).is_file():
        return _visa_categories(root)
    if _is_mvtec_category(root):
        return [_mvtec_category(root)]
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if any(_is_mvtec_category(p) for p in subfolders):
        for p in subfolders:
            if not _is_mvtec_category(p) and (p / "test").is_dir():
                raise DataError(f"{p}: has test/ but no train/good/; expected an MVTec category <category>/train/good/")
        return [_mvtec_category(p) for p in subfolders if _is_mvtec_category(p)]
    images = _images_in(root, recursive=True)
    if images:
        return [Category(root.name, root, "folder", train=images)]
    raise DataError(
        f"{root}: matches no dataset layout; expected <category>/train/good/ (MVTec AD), "
        f"a folder of such categories, {VISA_CSV.as_posix()} (VisA), or a folder of "
        f"images ({', '.join(IMAGE_EXTENSIONS)})"
    )


def _is_mvtec_category(folder: Path) -> bool:
    return (folder / "train" / "good").is_dir()


def _mvtec_category(folder: Path) -> Category:
    train = _images_in(folder / "train" / "good", recursive=False)
    if not train:
        raise DataError(
            f"{folder / 'train' / 'good'}: no training images; expected at least one "
            f"image ({', '.join(IMAGE_EXTENSIONS)})"
        )
    test: list[TestItem] = []
    test_root = folder / "test"
    if test_root.is_dir():
        for defect_dir in sorted(p for p in test_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            defect = defect_dir.name
            for image in _images_in(defect_dir, recursive=False):
                if defect == GOOD:
                    test.append(TestItem(image, 0, None, GOOD))
                else:
                    test.append(TestItem(image, 1, _mvtec_mask(folder, defect, image), defect))
    return Category(folder.name, folder, "mvtec", train=train, test=test)


def _mvtec_mask(folder: Path, defect: str, image: Path) -> Path:
    """The mask of a defective MVTec test image: ground_truth/<defect>/<stem>_mask.<ext>
    (MVTec AD), or ground_truth/<defect>/<stem>.<ext> (BTAD and other MVTec-like sets)."""
    gt = folder / "ground_truth" / defect
    for stem in (f"{image.stem}_mask", image.stem):
        for ext in IMAGE_EXTENSIONS:
            for candidate in (gt / f"{stem}{ext}", gt / f"{stem}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    raise DataError(f"{image}: defective test image without a mask; expected {gt / (image.stem + '_mask.png')}")


def _visa_categories(root: Path) -> list[Category]:
    csv_path = root / VISA_CSV
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in VISA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {missing}; expected columns {','.join(VISA_COLUMNS)}")
        by_object: dict[str, Category] = {}
        for line, row in enumerate(reader, start=2):
            _add_visa_row(root, csv_path, line, row, by_object)
    if not by_object:
        raise DataError(f"{csv_path}: no rows; expected one row per image")
    for category in by_object.values():
        if not category.train:
            raise DataError(
                f"{csv_path}: object '{category.name}' has no training rows; expected at least one row with split=train"
            )
    return list(by_object.values())


def _add_visa_row(root: Path, csv_path: Path, line: int, row: dict, by_object: dict[str, Category]) -> None:
    where = f"{csv_path}, line {line}"
    name, split, label = (row["object"] or "").strip(), (row["split"] or "").strip(), (row["label"] or "").strip()
    if not name:
        raise DataError(f"{where}: empty 'object'; expected a category name")
    if split not in ("train", "test"):
        raise DataError(f"{where}: split '{split}'; expected 'train' or 'test'")
    if label not in ("normal", "anomaly"):
        raise DataError(f"{where}: label '{label}'; expected 'normal' or 'anomaly'")
    image = root / (row["image"] or "").strip()
    if not is_image_file(image):
        raise DataError(f"{where}: image {image} not found; expected an image file (path relative to {root})")
    category = by_object.setdefault(name, Category(name, root / name, "visa"))
    if split == "train":
        if label != "normal":
            raise DataError(f"{where}: training row labelled '{label}'; expected only normal training images")
        category.train.append(image)
        return
    if label == "normal":
        category.test.append(TestItem(image, 0, None, GOOD))
        return
    mask_rel = (row["mask"] or "").strip()
    mask = root / mask_rel if mask_rel else None
    if mask is None or not mask.is_file():
        raise DataError(
            f"{image}: defective test image without a mask ({where}); expected the "
            f"'mask' column to name an existing file relative to {root}"
        )
    category.test.append(TestItem(image, 1, mask, "anomaly"))


def select_categories(categories: Sequence[Category], names: Iterable[str] | None) -> list[Category]:
    """The categories named in `names` (all when None), in dataset order."""
    if names is None:
        return list(categories)
    wanted = list(names)
    available = [c.name for c in categories]
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise DataError(f"unknown category {unknown}; expected some of {available}")
    return [c for c in categories if c.name in wanted]


# ------------------------------------------------------------------------------------------------
# Transform
# ------------------------------------------------------------------------------------------------
@dataclass
class ImageTransform:
    """Resize (bilinear, as PIL/torchvision do) to image_size x image_size, then normalise.
    No augmentation (MODEL_SPEC §4)."""

    image_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN  # on 0..1 pixel values
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0; got mean={self.mean}, std={self.std}")

    @classmethod
    def from_model_config(cls, model_config) -> "ImageTransform":
        """From a training.config.ModelConfig (anything with image_size, mean, std)."""
        return cls(model_config.image_size, tuple(model_config.mean), tuple(model_config.std))

    def resize(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> uint8 [S, S, 3], S = image_size."""
        size = (self.image_size, self.image_size)
        if image.shape[:2] == size:
            return image
        return np.array(Image.fromarray(image).resize(size, Image.BILINEAR))

    def normalize(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> float32 [3, H, W], (x / 255 - mean) / std."""
        x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (x - mean) / std

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> float32 [3, S, S]."""
        return self.normalize(self.resize(image))

    def resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """bool [H, W] -> bool [S, S]: as 0/255 uint8, resized bilinear, then > 0.5 (of 255), the
        same steps as ToTensor on a resized 'L' mask followed by > 0.5 (MODEL_SPEC §6)."""
        size = (self.image_size, self.image_size)
        if mask.shape == size:
            return mask.astype(bool, copy=False)
        as_u8 = Image.fromarray(mask.astype(np.uint8) * 255)
        return np.asarray(as_u8.resize(size, Image.BILINEAR)) / 255.0 > 0.5

    def mask_tensor(self, mask: np.ndarray) -> torch.Tensor:
        """bool [H, W] -> float32 [1, S, S] with values {0, 1}."""
        return torch.from_numpy(self.resize_mask(mask).astype(np.float32))[None]


# ------------------------------------------------------------------------------------------------
# torch Datasets
# ------------------------------------------------------------------------------------------------
class _CachedImages(Dataset):
    """Lazily decoded, resized images, optionally kept in memory.

    The cache holds resized uint8 arrays (S*S*3 bytes each: 192 KiB at 256). With DataLoader
    workers each worker fills its own copy; call `preload()` before the workers start to fill it
    once and share it copy-on-write.
    """

    def __init__(self, paths: list[Path], transform: ImageTransform | None, cache: bool):
        self.paths = paths
        self.transform = transform or ImageTransform()
        self._cache: dict[int, object] | None = {} if cache else None

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

    def __init__(
        self,
        categories: Sequence[Category],
        transform: ImageTransform | None = None,
        only: Iterable[str] | None = None,
        cache: bool = False,
    ):
        chosen = select_categories(categories, only)
        self.categories = [c.name for c in chosen]
        self.item_categories = [c.name for c in chosen for _ in c.train]
        super().__init__([p for c in chosen for p in c.train], transform, cache)

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

    def __init__(
        self,
        categories: Sequence[Category],
        transform: ImageTransform | None = None,
        only: Iterable[str] | None = None,
        cache: bool = False,
    ):
        chosen = select_categories(categories, only)
        self.categories = [c.name for c in chosen]
        self.items = [item for c in chosen for item in c.test]
        self.item_categories = [c.name for c in chosen for _ in c.test]
        super().__init__([item.path for item in self.items], transform, cache)

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


# ------------------------------------------------------------------------------------------------
# Normal hold-out (for a threshold set from normal images only)
# ------------------------------------------------------------------------------------------------
def split_normal_holdout(train_items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Deterministically hold out round(fraction * n) items (at least 1 when fraction > 0).

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
    n_held = 0 if fraction == 0 else max(1, round(fraction * n))
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
    categories: Sequence[Category], fraction: float, seed: int
) -> tuple[list[Category], list[Category]]:
    """Per-category normal hold-out, so every category contributes to the threshold.

    Returns (training categories, hold-out categories). A hold-out category has the held-out
    normals as its `train` list (use it with TrainDataset) and no test items. Each category's
    split depends only on (seed, its name), not on the other categories.
    """
    kept, held = [], []
    for category in categories:
        category_seed = [seed, zlib.crc32(category.name.encode())]  # stable across processes
        keep, hold = split_normal_holdout(category.train, fraction, category_seed)
        kept.append(replace(category, train=keep))
        held.append(replace(category, train=hold, test=[]))
    return kept, held


def describe(categories: Sequence[Category]) -> str:
    """A one-line-per-category summary for logs."""
    return "\n".join(repr(c) for c in categories)


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
    "describe",
    "IMAGE_EXTENSIONS",
    "is_image_file",
]

"""Dataset layouts: which images of a folder are training images, which are test images with which
labels and masks.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mmad.training.images import DataError, PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUTS = ("mvtec", "visa", "folder")
GOOD = "good"  # MVTec's name for the defect-free test folder; also the `defect` of every normal item
VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")


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


def describe(categories: Sequence[Category]) -> str:
    """A one-line-per-category summary for logs."""
    return "\n".join(repr(c) for c in categories)

"""training/layouts.py: MVTec AD, VisA and plain-folder layouts, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from image_files import random_u8
from PIL import Image

from mmad.samples.make_dataset import DEFECT_TYPES, make_dataset
from mmad.training.data import TestDataset, TrainDataset
from mmad.training.images import DataError, load_image, load_mask
from mmad.training.layouts import Category, find_categories

N_TRAIN = 6  # training images per category of the conftest's generated_dataset


def test_mvtec_dataset_of_categories(generated_dataset):
    categories = find_categories(generated_dataset)
    assert [c.name for c in categories] == ["object", "texture"]
    for c in categories:
        assert c.layout == "mvtec" and c.root == generated_dataset / c.name
        assert len(c.train) == N_TRAIN and all(p.parent == c.root / "train" / "good" for p in c.train)
        good = [item for item in c.test if item.label == 0]
        bad = [item for item in c.test if item.label == 1]
        assert len(good) == 2 and all(item.mask is None and item.defect == "good" for item in good)
        assert sorted(item.defect for item in bad) == sorted(DEFECT_TYPES)
        for item in bad:
            assert item.mask == c.root / "ground_truth" / item.defect / f"{item.path.stem}_mask.png"


def test_mvtec_single_category(generated_dataset):
    (category,) = find_categories(str(generated_dataset / "texture"))
    assert category.name == "texture" and len(category.train) == N_TRAIN and len(category.test) == 5


def test_two_roots_make_one_dataset(generated_dataset, tmp_path):
    other = make_dataset(
        tmp_path / "other", categories=("texture",), n_train=2, n_test_good=1, n_test_defect_per_type=0, size=64
    )
    (other / "texture").rename(other / "fabric")
    categories = find_categories([generated_dataset / "object", other])
    assert [c.name for c in categories] == ["object", "fabric"]
    train = TrainDataset(categories)
    assert set(train.item_categories) == {"object", "fabric"} and len(train) == N_TRAIN + 2


def test_category_name_used_twice(generated_dataset):
    with pytest.raises(DataError, match="'object' is used twice") as info:
        find_categories([generated_dataset, generated_dataset / "object"])
    assert str(generated_dataset / "object") in str(info.value)


def test_defective_image_without_mask(tmp_path):
    root = make_dataset(tmp_path, categories=("object",), n_train=1, n_test_good=0, n_test_defect_per_type=1, size=64)
    (root / "object" / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(DataError, match="without a mask") as info:
        find_categories(root)
    assert str(root / "object" / "test" / "hole" / "000.png") in str(info.value)


def test_mask_named_like_the_image_is_accepted(tmp_path):
    root = make_dataset(tmp_path, categories=("object",), n_train=1, n_test_good=0, n_test_defect_per_type=1, size=64)
    gt = root / "object" / "ground_truth" / "hole"
    (gt / "000_mask.png").rename(gt / "000.png")
    items = [i for i in find_categories(root)[0].test if i.defect == "hole"]
    assert items[0].mask == gt / "000.png"


def test_empty_category(tmp_path):
    root = make_dataset(tmp_path, categories=("object",), n_train=1, n_test_good=1, n_test_defect_per_type=0, size=64)
    (root / "object" / "train" / "good" / "000.png").unlink()
    with pytest.raises(DataError, match="no training images") as info:
        find_categories(root)
    assert str(root / "object" / "train" / "good") in str(info.value)


def test_subfolder_with_test_but_no_train(generated_dataset, tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "object").symlink_to(generated_dataset / "object", target_is_directory=True)
    (root / "broken" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="no train/good") as info:
        find_categories(root)
    assert str(root / "broken") in str(info.value)


@pytest.mark.parametrize("content", ["nothing", "text only", "missing"])
def test_root_matching_no_layout(tmp_path, content):
    root = tmp_path / "root"
    if content != "missing":
        root.mkdir()
    if content == "text only":
        (root / "notes.txt").write_text("no images here")
        (root / "sub").mkdir()
    with pytest.raises(DataError, match="expected") as info:
        find_categories(root)
    assert str(root) in str(info.value)


def test_no_roots():
    with pytest.raises(DataError):
        find_categories([])


def test_plain_folder_is_a_training_only_category(tmp_path):
    root = tmp_path / "my_parts"
    (root / "day" / "cam1").mkdir(parents=True)
    (root / "night").mkdir()
    files = [
        root / "a.png",
        root / "day" / "b.JPG",
        root / "day" / "cam1" / "c.jpeg",
        root / "night" / "d.bmp",
        root / "night" / "e.tif",
    ]
    for i, f in enumerate(files):
        Image.fromarray(random_u8((8, 8, 3), i)).save(f, format={".JPG": "JPEG", ".jpeg": "JPEG"}.get(f.suffix))
    (root / "readme.txt").write_text("not an image")
    (root / "night" / "._d.bmp").write_bytes(b"macOS resource fork")
    (category,) = find_categories(root)
    assert (category.name, category.layout, category.test) == ("my_parts", "folder", [])
    assert sorted(category.train) == sorted(files)
    assert all(load_image(p).shape == (8, 8, 3) for p in category.train)


def _write_visa(root: Path, rows: list[str]) -> Path:
    for name, size in (
        ("candle/Data/Images/Normal/0000.JPG", 40),
        ("candle/Data/Images/Normal/0001.JPG", 40),
        ("candle/Data/Images/Normal/0002.JPG", 40),
        ("candle/Data/Images/Anomaly/000.JPG", 40),
        ("pcb1/Data/Images/Normal/0000.JPG", 30),
        ("pcb1/Data/Images/Anomaly/000.JPG", 30),
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_u8((size, size + 10, 3))).save(root / name, format="JPEG")
    for name, size in (("candle/Data/Masks/Anomaly/000.png", 40), ("pcb1/Data/Masks/Anomaly/000.png", 30)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        mask = np.zeros((size, size + 10), np.uint8)
        mask[5:9, 5:20] = 255
        Image.fromarray(mask).save(root / name)
    (root / "split_csv").mkdir(exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(["object,split,label,image,mask", *rows]) + "\n")
    return root


VISA_ROWS = [
    "candle,train,normal,candle/Data/Images/Normal/0000.JPG,",
    "candle,train,normal,candle/Data/Images/Normal/0001.JPG,",
    "candle,test,normal,candle/Data/Images/Normal/0002.JPG,",
    "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png",
    "pcb1,train,normal,pcb1/Data/Images/Normal/0000.JPG,",
    "pcb1,test,anomaly,pcb1/Data/Images/Anomaly/000.JPG,pcb1/Data/Masks/Anomaly/000.png",
]


def test_visa_layout(tmp_path):
    root = _write_visa(tmp_path / "visa", VISA_ROWS)
    categories = find_categories(root)
    assert [(c.name, c.layout, len(c.train), len(c.test)) for c in categories] == [
        ("candle", "visa", 2, 2),
        ("pcb1", "visa", 1, 1),
    ]
    candle = categories[0]
    assert candle.train[1] == root / "candle/Data/Images/Normal/0001.JPG"
    normal, anomaly = candle.test
    assert (normal.label, normal.mask, normal.defect) == (0, None, "good")
    assert (anomaly.label, anomaly.mask, anomaly.defect) == (1, root / "candle/Data/Masks/Anomaly/000.png", "anomaly")
    # VisA images are not square: the transform distorts them to 256x256 (README "Training recipe").
    item = TestDataset(categories, only=["candle"])[1]
    assert item["image"].shape == (3, 256, 256) and item["mask"].sum() > 0 and item["label"] == 1


@pytest.mark.parametrize(
    "bad_row, match",
    [
        ("candle,test,broken,candle/Data/Images/Normal/0002.JPG,", "label 'broken'"),
        ("candle,val,normal,candle/Data/Images/Normal/0002.JPG,", "split 'val'"),
        ("candle,test,normal,candle/Data/Images/Normal/9999.JPG,", "not found"),
        ("candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,", "without a mask"),
        ("candle,train,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png", "only normal"),
    ],
)
def test_visa_bad_rows(tmp_path, bad_row, match):
    root = _write_visa(tmp_path / "visa", [*VISA_ROWS, bad_row])
    with pytest.raises(DataError, match=match) as info:
        find_categories(root)
    assert "1cls.csv" in str(info.value) and "line 8" in str(info.value)


def test_visa_missing_column(tmp_path):
    root = _write_visa(tmp_path / "visa", [])
    (root / "split_csv" / "1cls.csv").write_text("object,split,image\ncandle,train,x.JPG\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['label', 'mask'\]"):
        find_categories(root)


def test_real_data_layouts(real_dataset):
    """MVTec AD's bottle and the magnetic-tile set (70 % of its defect-free images for training, four
    defect images with empty masks left out), as the real test data holds them."""
    bottle, tile = find_categories([real_dataset("bottle"), real_dataset("magnetic_tile")])
    assert (bottle.name, len(bottle.train)) == ("bottle", 209)
    assert (tile.name, len(tile.train)) == ("magnetic_tile", 666)

    def defects(category: Category) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in category.test:
            counts[item.defect] = counts.get(item.defect, 0) + 1
        return counts

    assert defects(bottle) == {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}
    assert defects(tile) == {"good": 286, "blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 98}
    assert all(item.mask is not None and item.mask.is_file() for item in tile.test if item.label)
    # The folder holding them is itself a dataset of categories (a README.md there is not a category).
    root = bottle.root.parent
    names = [c.name for c in find_categories(root)]
    assert names == sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
    assert {"bottle", "magnetic_tile"} <= set(names)
    # Magnetic tile is grayscale: three equal channels; its masks match the images.
    test = TestDataset([tile])
    defective = next(i for i, item in enumerate(test.items) if item.label)
    image = test.raw_image(defective)
    assert image.shape == (256, 256, 3) and (image[..., 0] == image[..., 2]).all()
    np.testing.assert_array_equal(test.raw_mask(defective), load_mask(test.items[defective].mask))

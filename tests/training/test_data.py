"""training/data.py: decoding and its conversions, layout discovery, the transform, the torch
Datasets and the normal hold-out."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmad.runtime.contract import IMAGENET_MEAN, IMAGENET_STD
from mmad.samples.make_dataset import DEFECT_TYPES, make_dataset
from mmad.training.data import (
    Category,
    DataError,
    ImageTransform,
    TestDataset,
    TrainDataset,
    find_categories,
    load_image,
    load_mask,
    select_categories,
    split_categories_holdout,
    split_normal_holdout,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_png(path: Path, array: np.ndarray, bit_depth: int, colour_type: int) -> Path:
    """A PNG written byte by byte (no filtering), so 16-bit colour files can be made without
    relying on the decoder under test. colour_type: 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA."""
    height, width = array.shape[:2]
    raw = array.astype(">u2" if bit_depth == 16 else "u1").reshape(height, -1).tobytes()
    row_bytes = len(raw) // height
    scanlines = b"".join(b"\x00" + raw[r * row_bytes : (r + 1) * row_bytes] for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b"")
    )
    return path


def mode_of(path: Path) -> str:
    with Image.open(path) as im:
        return im.mode


def random_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A small generated MVTec-layout dataset (read-only for the tests that share it)."""
    return make_dataset(tmp_path_factory.mktemp("syn"), n_train=4, n_test_good=2, n_test_defect_per_type=1, size=96)


# ------------------------------------------------------------------------------------------------
# Decoding and conversions
# ------------------------------------------------------------------------------------------------
def test_rgb_is_unchanged(tmp_path):
    rgb = random_u8((5, 7, 3))
    Image.fromarray(rgb).save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_is_replicated(tmp_path):
    gray = random_u8((6, 4))
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), np.stack([gray] * 3, axis=2))


def test_one_bit_is_0_or_255(tmp_path):
    bits = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(load_image(tmp_path / "b.png")[..., 1], bits * 255)


def test_gray_alpha_drops_alpha(tmp_path):
    gray, alpha = random_u8((4, 5), 1), random_u8((4, 5), 2)
    Image.fromarray(np.stack([gray, alpha], axis=2), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), np.stack([gray] * 3, axis=2))


def test_rgba_drops_alpha(tmp_path):
    rgba = random_u8((4, 5, 4), 3)
    rgba[0, 0, 3] = 0  # fully transparent: the colour is still kept
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgba[..., :3])


@pytest.mark.parametrize("transparency", [None, 1, bytes([255, 0, 128])])
def test_palette_maps_through_the_palette(tmp_path, transparency):
    palette = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 7]], dtype=np.uint8)
    indices = np.array([[0, 1, 2], [2, 2, 1]], dtype=np.uint8)
    im = Image.fromarray(indices, mode="P")
    im.putpalette(palette.flatten().tolist())
    im.save(tmp_path / "p.png", **({} if transparency is None else {"transparency": transparency}))
    assert mode_of(tmp_path / "p.png") == "P"
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), palette[indices])


def test_16bit_gray_png_is_scaled_by_bit_depth(tmp_path):
    values = np.array([[0, 255, 256, 1000], [30000, 40000, 65280, 65535]], dtype=np.uint16)
    out = load_image(write_png(tmp_path / "g16.png", values, 16, 0))
    expected = values // 256  # 16 -> 8 bits: the high byte; 65535 -> 255, nothing clipped
    np.testing.assert_array_equal(out, np.stack([expected] * 3, axis=2))
    assert out[1, 3, 0] == 255 and out[0, 1, 0] == 0 and out[1, 0, 0] == 117


def test_16bit_gray_pillow_tiff(tmp_path):
    values = np.random.default_rng(4).integers(0, 65536, (8, 9)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.tif")
    assert mode_of(tmp_path / "g16.tif").startswith("I;16")
    np.testing.assert_array_equal(load_image(tmp_path / "g16.tif")[..., 2], values // 256)


@pytest.mark.parametrize("colour_type, channels", [(2, 3), (6, 4)])
def test_16bit_colour_png_is_scaled_by_bit_depth(tmp_path, colour_type, channels):
    values = np.random.default_rng(5).integers(0, 65536, (6, 5, channels)).astype(np.uint16)
    values[0, 0, :3] = (65535, 256, 255)
    out = load_image(write_png(tmp_path / "c16.png", values, 16, colour_type))
    np.testing.assert_array_equal(out, values[..., :3] // 256)
    assert tuple(out[0, 0]) == (255, 1, 0)


def test_int32_image_with_16bit_values(tmp_path):
    values = np.array([[0, 512, 65535]], dtype=np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "i.tif")
    assert mode_of(tmp_path / "i.tif") == "I"
    np.testing.assert_array_equal(load_image(tmp_path / "i.tif")[0, :, 0], [0, 2, 255])


def test_cmyk(tmp_path):
    cmyk = np.zeros((1, 3, 4), dtype=np.uint8)
    cmyk[0, 0] = (10, 100, 200, 0)  # no black: RGB = 255 - CMY
    cmyk[0, 1] = (10, 100, 200, 255)  # full black
    cmyk[0, 2] = (0, 0, 0, 0)  # paper white
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    out = load_image(tmp_path / "c.tif")
    np.testing.assert_array_equal(out[0], [[245, 155, 55], [0, 0, 0], [255, 255, 255]])


def test_exif_orientation_is_applied(tmp_path):
    im = Image.fromarray(random_u8((20, 40, 3)))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (40, 20, 3)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.fromarray(random_u8((64, 64, 3))).save(good)
    data = good.read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all" * 10)
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "folder.png").mkdir()
    Image.fromarray(np.ones((3, 3), np.float32), mode="F").save(tmp_path / "float.tif")
    Image.fromarray(np.array([[0, 70000]], np.int32), mode="I").save(tmp_path / "int32.tif")
    names = ["empty.png", "garbage.png", "truncated.png", "folder.png", "float.tif", "int32.tif", "missing.png"]
    return {name: tmp_path / name for name in names}


@pytest.mark.parametrize(
    "name", ["empty.png", "garbage.png", "truncated.png", "folder.png", "float.tif", "int32.tif", "missing.png"]
)
def test_bad_image_raises_data_error_naming_the_file(tmp_path, name):
    path = _bad_files(tmp_path)[name]
    with pytest.raises(DataError, match="expected") as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["empty.png", "garbage.png", "truncated.png", "missing.png", "float.tif"])
def test_bad_mask_raises_data_error_naming_the_file(tmp_path, name):
    path = _bad_files(tmp_path)[name]
    with pytest.raises(DataError) as info:
        load_mask(path)
    assert str(path) in str(info.value)


def test_mask_binarised_above_zero(tmp_path):
    values = np.array([[0, 1, 2], [128, 255, 0]], dtype=np.uint8)
    Image.fromarray(values, mode="L").save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png")
    assert mask.dtype == bool and mask.shape == (2, 3)
    np.testing.assert_array_equal(mask, values > 0)


def test_mask_colour_palette_and_16bit(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1, 0] = 200  # a red defect pixel
    rgb[1, 1, 2] = 1
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "rgb.png"), [[False, True], [False, True]])

    indices = np.array([[0, 1], [2, 0]], np.uint8)
    im = Image.fromarray(indices, mode="P")
    im.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0])
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "p.png"), indices > 0)

    sixteen = np.array([[0, 1], [300, 65535]], np.uint16)
    np.testing.assert_array_equal(load_mask(write_png(tmp_path / "m16.png", sixteen, 16, 0)), sixteen > 0)


# ------------------------------------------------------------------------------------------------
# Transform
# ------------------------------------------------------------------------------------------------
def test_transform_normalises_with_imagenet_statistics():
    t = ImageTransform()
    assert (t.image_size, t.mean, t.std) == (256, IMAGENET_MEAN, IMAGENET_STD)
    image = np.empty((256, 256, 3), np.uint8)
    image[...] = (0, 128, 255)
    x = t(image)
    assert x.shape == (3, 256, 256) and x.dtype == torch.float32
    expected = [(v / 255 - m) / s for v, m, s in zip((0, 128, 255), IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(x[:, 100, 17], torch.tensor(expected, dtype=torch.float32))


def test_transform_resizes_any_shape():
    image = random_u8((200, 300, 3))
    t = ImageTransform(image_size=64)
    assert t.resize(image).shape == (64, 64, 3)
    assert t(image).shape == (3, 64, 64)
    # Bilinear resize of a constant image stays constant.
    flat = np.full((37, 53, 3), 77, np.uint8)
    assert set(np.unique(t.resize(flat)).tolist()) == {77}


def test_mask_downsize_halves_a_block():
    mask = np.zeros((512, 512), bool)
    mask[100:200, 50:150] = True
    small = ImageTransform().resize_mask(mask)
    expected = np.zeros((256, 256), bool)
    expected[50:100, 25:75] = True
    np.testing.assert_array_equal(small, expected)


def test_mask_upsize_doubles_a_block_and_tensor_is_0_or_1():
    mask = np.zeros((128, 128), bool)
    mask[32:64, 10:20] = True
    m = ImageTransform().mask_tensor(mask)
    assert m.shape == (1, 256, 256) and m.dtype == torch.float32
    expected = torch.zeros(1, 256, 256)
    expected[0, 64:128, 20:40] = 1
    torch.testing.assert_close(m, expected)


def test_mask_resize_drops_sub_pixel_specks():
    mask = np.zeros((512, 512), bool)
    mask[300, 300] = True  # one pixel covers a quarter of an output pixel: below 0.5
    assert not ImageTransform().resize_mask(mask).any()


@pytest.mark.parametrize("kwargs", [dict(image_size=0), dict(std=(1.0, 0.0, 1.0)), dict(mean=(0.5, 0.5))])
def test_transform_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        ImageTransform(**kwargs)


# ------------------------------------------------------------------------------------------------
# Layout discovery
# ------------------------------------------------------------------------------------------------
def test_mvtec_dataset_of_categories(synthetic):
    categories = find_categories(synthetic)
    assert [c.name for c in categories] == ["object", "texture"]
    for c in categories:
        assert c.layout == "mvtec" and c.root == synthetic / c.name
        assert len(c.train) == 4 and all(p.parent == c.root / "train" / "good" for p in c.train)
        good = [item for item in c.test if item.label == 0]
        bad = [item for item in c.test if item.label == 1]
        assert len(good) == 2 and all(item.mask is None and item.defect == "good" for item in good)
        assert sorted(item.defect for item in bad) == sorted(DEFECT_TYPES)
        for item in bad:
            assert item.mask == c.root / "ground_truth" / item.defect / f"{item.path.stem}_mask.png"


def test_mvtec_single_category(synthetic):
    (category,) = find_categories(str(synthetic / "texture"))
    assert category.name == "texture" and len(category.train) == 4 and len(category.test) == 5


def test_two_roots_make_one_dataset(synthetic, tmp_path):
    other = make_dataset(
        tmp_path / "other", categories=("texture",), n_train=2, n_test_good=1, n_test_defect_per_type=0, size=64
    )
    (other / "texture").rename(other / "fabric")
    categories = find_categories([synthetic / "object", other])
    assert [c.name for c in categories] == ["object", "fabric"]
    train = TrainDataset(categories)
    assert set(train.item_categories) == {"object", "fabric"} and len(train) == 4 + 2


def test_category_name_used_twice(synthetic):
    with pytest.raises(DataError, match="'object' is used twice") as info:
        find_categories([synthetic, synthetic / "object"])
    assert str(synthetic / "object") in str(info.value)


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


def test_subfolder_with_test_but_no_train(synthetic, tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "object").symlink_to(synthetic / "object", target_is_directory=True)
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
    # VisA images are not square: the transform distorts them to 256x256 (MODEL_SPEC §4).
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


@pytest.mark.skipif(
    not (SHARED_DATA / "bottle").is_dir() or not (SHARED_DATA / "magnetic_tile").is_dir(),
    reason="shared data not present",
)
def test_shared_data_layouts():
    """Counts from shared/data/README.md."""
    bottle, tile = find_categories([SHARED_DATA / "bottle", SHARED_DATA / "magnetic_tile"])
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
    # The shared folder itself is a dataset of categories (its README.md is not a category).
    assert [c.name for c in find_categories(SHARED_DATA)] == ["bottle", "magnetic_tile"]
    # Magnetic tile is grayscale: three equal channels; its masks match the images.
    test = TestDataset([tile])
    defective = next(i for i, item in enumerate(test.items) if item.label)
    image = test.raw_image(defective)
    assert image.shape == (256, 256, 3) and (image[..., 0] == image[..., 2]).all()
    np.testing.assert_array_equal(test.raw_mask(defective), load_mask(test.items[defective].mask))


# ------------------------------------------------------------------------------------------------
# torch Datasets
# ------------------------------------------------------------------------------------------------
def test_train_dataset_items(synthetic):
    categories = find_categories(synthetic)
    data = TrainDataset(categories)
    assert len(data) == 8 and data.categories == ["object", "texture"]
    item = data[5]
    assert set(item) == {"image", "category", "path"}
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
    assert item["category"] == "texture" and item["path"] == str(categories[1].train[1])
    raw = data.raw_image(5)
    assert raw.shape == (256, 256, 3) and raw.dtype == np.uint8
    torch.testing.assert_close(item["image"], ImageTransform()(raw))
    with pytest.raises(IndexError):
        data[8]


def test_test_dataset_items(synthetic):
    categories = find_categories(synthetic)
    data = TestDataset(categories, transform=ImageTransform(image_size=96))
    assert len(data) == 10
    assert data.labels == [item.label for c in categories for item in c.test]
    for i in range(len(data)):
        item = data[i]
        assert set(item) == {"image", "mask", "label", "category", "path", "defect"}
        assert item["image"].shape == (3, 96, 96) and item["mask"].shape == (1, 96, 96)
        assert item["mask"].dtype == torch.float32 and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        source = data.items[i]
        if source.label == 0:
            assert item["mask"].sum() == 0 and item["defect"] == "good"
        else:
            # At the native size the mask is the file's mask, unchanged.
            expected = torch.from_numpy(load_mask(source.mask).astype(np.float32))[None]
            torch.testing.assert_close(item["mask"], expected)
            assert item["defect"] == source.defect != "good"


def test_category_filter(synthetic):
    categories = find_categories(synthetic)
    assert TrainDataset(categories, only=["texture"]).categories == ["texture"]
    assert set(TestDataset(categories, only=["object"]).item_categories) == {"object"}
    assert [c.name for c in select_categories(categories, ["texture", "object"])] == ["object", "texture"]
    with pytest.raises(DataError, match="unknown category"):
        TrainDataset(categories, only=["carpet"])


def test_dataloader_batches(synthetic):
    data = TestDataset(find_categories(synthetic))
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch["image"].shape == (4, 3, 256, 256) and batch["mask"].shape == (4, 1, 256, 256)
    assert batch["label"].tolist() == data.labels[:4] and len(batch["category"]) == 4


def test_cache_keeps_decoded_images(tmp_path):
    root = make_dataset(
        tmp_path / "d", categories=("object",), n_train=2, n_test_good=1, n_test_defect_per_type=1, size=64
    )
    categories = find_categories(root)
    cached, uncached = TrainDataset(categories, cache=True), TrainDataset(categories)
    test = TestDataset(categories, cache=True)
    first = cached[0]["image"]
    test.preload(progress=False)
    for category in categories:
        for path in category.train + [item.path for item in category.test]:
            path.unlink()  # from now on, only the cache can serve these
    torch.testing.assert_close(cached[0]["image"], first)
    assert all(test[i]["image"].shape == (3, 256, 256) for i in range(len(test)))
    with pytest.raises(DataError, match="no such file") as info:
        uncached[0]
    assert str(categories[0].train[0]) in str(info.value)
    with pytest.raises(DataError):
        cached[1]  # never read before the files went away


def test_mask_of_a_different_size_is_an_error(tmp_path):
    root = make_dataset(tmp_path, categories=("object",), n_train=1, n_test_good=0, n_test_defect_per_type=1, size=64)
    mask = root / "object" / "ground_truth" / "hole" / "000_mask.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
    data = TestDataset(find_categories(root))
    with pytest.raises(DataError, match="expected equal sizes") as info:
        data[[item.defect for item in data.items].index("hole")]
    assert str(mask) in str(info.value)


# ------------------------------------------------------------------------------------------------
# Normal hold-out
# ------------------------------------------------------------------------------------------------
def test_split_normal_holdout_is_a_deterministic_partition():
    items = [f"img{i:03d}" for i in range(209)]
    kept, held = split_normal_holdout(items, 0.1, seed=42)
    assert len(held) == round(0.1 * 209) and len(kept) + len(held) == 209
    assert set(kept).isdisjoint(held) and set(kept) | set(held) == set(items)
    assert kept == sorted(kept) and held == sorted(held)  # input order kept
    assert split_normal_holdout(items, 0.1, seed=42) == (kept, held)
    assert split_normal_holdout(items, 0.1, seed=43)[1] != held


def test_split_normal_holdout_edges():
    assert split_normal_holdout(["a", "b", "c"], 0.0, 0) == (["a", "b", "c"], [])
    assert len(split_normal_holdout(["a", "b", "c"], 0.01, 0)[1]) == 1  # at least one
    with pytest.raises(DataError, match="at least 2"):
        split_normal_holdout(["a"], 0.1, 0)
    for fraction in (-0.1, 1.0):
        with pytest.raises(ValueError, match="fraction"):
            split_normal_holdout(["a", "b"], fraction, 0)


def test_split_categories_holdout(synthetic):
    categories = find_categories(synthetic)
    kept, held = split_categories_holdout(categories, 0.25, seed=1)
    for original, k, h in zip(categories, kept, held):
        assert (k.name, h.name) == (original.name, original.name)
        assert len(h.train) == 1 and h.test == [] and k.test == original.test
        assert sorted(k.train + h.train) == sorted(original.train)
    # A category's split does not depend on which other categories are present.
    _, held_alone = split_categories_holdout(categories[1:], 0.25, seed=1)
    assert held_alone[0].train == held[1].train
    assert len(TrainDataset(held)) == 2
    with pytest.raises(TypeError, match="split_categories_holdout"):
        split_normal_holdout(categories, 0.25, seed=1)

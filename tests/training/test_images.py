"""training/images.py: decoding and its conversions, and the transform to the model input (the
contract's resize, compared with the runtime's pre-processing and with the PIL bilinear resize it
replaced)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from image_files import mode_of, random_u8, write_png
from PIL import Image

from mmad.runtime.contract import IMAGENET_MEAN, IMAGENET_STD, resize_to_input
from mmad.runtime.processing import full_frame, model_input
from mmad.training.images import DataError, ImageTransform, load_image, load_mask


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
    # Resizing a constant image leaves it constant.
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
# The resize to the model input: the contract's, shared with the runtime
# ------------------------------------------------------------------------------------------------
def pil_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """The resize training used before it called contract.resize_to_input (PIL, bilinear)."""
    return np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def gray_level_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """(mean, max) of |a - b| over every pixel and channel, in gray levels (0..255)."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(diff.mean()), int(diff.max())


def generated_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB: a smooth colour field, 3.3-pixel stripes (fine texture that aliases when a 900-pixel
    side is shrunk to 256 without averaging) and noise."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    field = np.stack([128 + 100 * np.sin(6 * x + c) * np.cos(4 * y) for c in range(3)], axis=-1)
    stripes = 30 * np.sin(2 * np.pi * x * max(height, width) / 3.3)[..., None]
    noise = np.random.default_rng(seed).normal(0, 10, field.shape)
    return np.clip(field + stripes + noise, 0, 255).astype(np.uint8)


def test_transform_resizes_with_the_contract():
    image = generated_photo(300, 200)
    np.testing.assert_array_equal(ImageTransform().resize(image), resize_to_input(image, (256, 256)))
    square = random_u8((256, 256, 3))
    assert ImageTransform().resize(square) is square  # already the input size: untouched


def test_resize_against_the_old_pil_bilinear_on_a_generated_image():
    """900x900 (MVTec AD's size) to 256. Measured: mean |new - old| 1.49 gray levels, max 7; on the
    smooth field alone 0.06, max 1. INTER_AREA averages every input pixel an output pixel covers, PIL's
    bilinear weights them with a triangle: they differ on fine texture only."""
    image = generated_photo(900, 900)
    mean, largest = gray_level_difference(resize_to_input(image, (256, 256)), pil_bilinear(image, 256))
    assert 0.5 < mean < 2.0 and largest <= 10
    y, x = np.mgrid[0:900, 0:900] / 900
    smooth = np.stack([128 + 100 * np.sin(6 * x + c) * np.cos(4 * y) for c in range(3)], -1).astype(np.uint8)
    mean, largest = gray_level_difference(resize_to_input(smooth, (256, 256)), pil_bilinear(smooth, 256))
    assert mean < 0.2 and largest <= 1


def test_resize_against_the_old_pil_bilinear_on_a_real_bottle_image(real_dataset):
    """The test copy of bottle is stored at 256x256, where both resizes are the identity: training on it
    is unchanged. Enlarged with Lanczos to MVTec AD's 900x900 and shrunk back (000.png), measured: mean
    |new - old| 0.275 gray levels, max 11 (0.23-0.32, max 10-17 over 8 images); the new resize lands
    nearer the stored Lanczos copy (mean 0.37) than the old one (0.63)."""
    stored = load_image(real_dataset("bottle") / "train" / "good" / "000.png")
    assert stored.shape == (256, 256, 3)
    np.testing.assert_array_equal(ImageTransform().resize(stored), pil_bilinear(stored, 256))
    original_size = np.array(Image.fromarray(stored).resize((900, 900), Image.LANCZOS))
    new, old = resize_to_input(original_size, (256, 256)), pil_bilinear(original_size, 256)
    mean, largest = gray_level_difference(new, old)
    assert 0.1 < mean < 0.4 and largest <= 20
    assert gray_level_difference(new, stored)[0] < gray_level_difference(old, stored)[0]


@pytest.mark.parametrize("height, width", [(900, 900), (480, 640), (256, 256), (120, 90)])
def test_training_and_the_runtime_feed_the_model_the_same_pixels(tmp_path, height, width):
    """The same PNG through training (PIL decode, ImageTransform) and through the runtime (an OpenCV
    BGR frame, full-frame ROI, processing.model_input): identical uint8 model input."""
    path = tmp_path / "frame.png"
    Image.fromarray(generated_photo(height, width)).save(path)
    training = ImageTransform().resize(load_image(path))
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    runtime = model_input(frame, full_frame(frame), (256, 256), color_order="BGR")
    assert training.dtype == runtime.dtype == np.uint8
    np.testing.assert_array_equal(training, runtime)

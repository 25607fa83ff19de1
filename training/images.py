"""Images in: decoding files to uint8 RGB and masks to bool, and the transform to the model's input.

    load_image(path)       uint8 RGB [H, W, 3] (gray, palette, 16-bit, CMYK, alpha: see its docstring)
    load_mask(path)        bool [H, W]: any value > 0 is defect
    ImageTransform         resize to the model input (contract.resize_to_input, as the runtime does),
                           ImageNet normalisation; masks resized as the metrics protocol says

The protocol (resize, normalisation, mask binarisation) is training/README.md's "Training recipe"
and "Metrics protocol".
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps

from mmad.runtime.contract import IMAGENET_MEAN, IMAGENET_STD, resize_to_input

PathLike = Union[str, Path]


class DataError(ValueError):
    """Bad or missing data. The message names the file or folder and what was expected."""


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
    """Decode a ground-truth mask to bool [H, W]: any value > 0 is defect (README "Metrics protocol").

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


@dataclass
class ImageTransform:
    """Resize to image_size x image_size as every runtime does (contract.resize_to_input), then
    normalise. No augmentation (training/README.md, "Training recipe").

    The published recipe resizes bilinearly (PIL); the contract's resize averages the pixels each
    output pixel covers when shrinking (INTER_AREA), so fine texture does not alias, and it is the
    same function the runtime calls, so a deployed model sees its training images' pixels.
    Masks keep the metrics protocol's bilinear resize (resize_mask): the runtime never sees them.
    """

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
        """uint8 [H, W, 3] -> uint8 [S, S, 3], S = image_size (the image itself when it has that size)."""
        return resize_to_input(image, (self.image_size, self.image_size))

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
        same steps as ToTensor on a resized 'L' mask followed by > 0.5 (README "Metrics protocol")."""
        size = (self.image_size, self.image_size)
        if mask.shape == size:
            return mask.astype(bool, copy=False)
        as_u8 = Image.fromarray(mask.astype(np.uint8) * 255)
        return np.asarray(as_u8.resize(size, Image.BILINEAR)) / 255.0 > 0.5

    def mask_tensor(self, mask: np.ndarray) -> torch.Tensor:
        """bool [H, W] -> float32 [1, S, S] with values {0, 1}."""
        return torch.from_numpy(self.resize_mask(mask).astype(np.float32))[None]

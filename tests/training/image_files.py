"""Image files for the data tests, written without the decoders under test where it matters."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


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

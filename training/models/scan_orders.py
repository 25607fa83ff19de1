"""Scan orders of the hybrid scanning (training/README.md, "Scan orders and directions"): 5 curves × 8 directions.

A curve is a permutation `curve` of 0..S²-1 over the flat (row·S + col) index of an S×S map:
encoding is `seq[p] = flat[curve[p]]`, decoding scatters `seq[p]` back to `curve[p]`.
Each of the 8 directions is a view of the map (as is, transpose, rot90, mirror), flattened
row-major and put through the curve, plus the 4 reversed sequences. We fold view, curve and
reversal into one gather index per direction, so the model (and the exported ONNX graph) does
one constant Gather per direction to encode and one to decode.
"""

from __future__ import annotations

import numpy as np

CURVES = ("sweep", "scan", "zorder", "zigzag", "hilbert")


def _check_size(size: int, curve: str) -> None:
    if size < 1:
        raise ValueError(f"scan order: size must be >= 1, got {size}")
    if curve in ("hilbert", "zorder") and size & (size - 1):
        raise ValueError(f"scan order '{curve}' needs a power-of-two side, got {size}")


def snake_curve(size: int) -> np.ndarray:
    """Boustrophedon: odd rows reversed."""
    grid = np.arange(size * size).reshape(size, size)
    grid[1::2] = grid[1::2, ::-1]
    return grid.reshape(-1)


def zorder_curve(size: int) -> np.ndarray:
    """Morton order: even bits of z give the row r, odd bits the column c; flat = c·S + r."""
    z = np.arange(size * size)
    r = np.zeros_like(z)
    c = np.zeros_like(z)
    for bit in range(max(1, int(np.log2(size)))):
        r |= ((z >> (2 * bit)) & 1) << bit
        c |= ((z >> (2 * bit + 1)) & 1) << bit
    return c * size + r


def zigzag_curve(size: int) -> np.ndarray:
    """JPEG-style anti-diagonal traversal: even diagonals run bottom-left → top-right."""
    out = []
    for i in range(2 * size - 1):
        for j in range(max(0, i - size + 1), min(i, size - 1) + 1):
            row, col = (i - j, j) if i % 2 == 0 else (j, i - j)
            out.append(row * size + col)
    return np.asarray(out)


def hilbert_curve(size: int) -> np.ndarray:
    """Skilling's Hilbert decode ("Programming the Hilbert curve", AIP 2004) in 2-D; flat = x + y·S."""
    nbits = int(np.log2(size))
    if nbits == 0:
        return np.zeros(1, dtype=np.int64)
    h = np.arange(size * size)
    # Transposed form: bit j (from the top) of h goes to axis j % 2, bit position nbits-1 - j//2.
    axes = [np.zeros_like(h), np.zeros_like(h)]
    for j in range(2 * nbits):
        bit = (h >> (2 * nbits - 1 - j)) & 1
        axes[j % 2] |= bit << (nbits - 1 - j // 2)
    x, y = axes
    # Gray decode.
    t = y >> 1
    y = y ^ x
    x = x ^ t
    # Undo the excess work (Skilling's loop over axes y, then x, for n = 2).
    q = 2
    while q != (1 << nbits):
        p = q - 1
        y_hit = (y & q) != 0
        swap = np.where(y_hit, 0, (x ^ y) & p)
        x = np.where(y_hit, x ^ p, x ^ swap)
        y = y ^ swap
        x = np.where((x & q) != 0, x ^ p, x)
        q <<= 1
    return x + y * size


def curve_order(curve: str, size: int) -> np.ndarray:
    """The permutation `curve` (int64, length S²) for one of CURVES."""
    _check_size(size, curve)
    if curve == "sweep":
        order = np.arange(size * size)
    elif curve == "scan":
        order = snake_curve(size)
    elif curve == "zorder":
        order = zorder_curve(size)
    elif curve == "zigzag":
        order = zigzag_curve(size)
    elif curve == "hilbert":
        order = hilbert_curve(size)
    else:
        raise ValueError(f"unknown scan curve '{curve}', expected one of {CURVES}")
    return order.astype(np.int64)


def _view_to_source(size: int) -> list[np.ndarray]:
    """For each of the 4 views, the source flat index of every view flat index."""
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    s = size - 1
    return [
        (i * size + j).reshape(-1),  # k=0: as is
        (j * size + i).reshape(-1),  # k=1: transpose
        (j * size + (s - i)).reshape(-1),  # k=2: rot90(+1): out[i][j] = in[j][S-1-i]
        (i * size + (s - j)).reshape(-1),  # k=3: transpose(rot90) = left-right mirror
    ]


def direction_indices(curve: str, size: int, num_directions: int = 8) -> np.ndarray:
    """Gather indices [K, L]: sequence k at step p reads flat position idx[k, p] of the map."""
    if num_directions not in (1, 2, 4, 8):
        raise ValueError(f"num_directions must be 1, 2, 4 or 8, got {num_directions}")
    order = curve_order(curve, size)
    views = _view_to_source(size)
    n_views = max(1, num_directions // 2) if num_directions > 1 else 1
    forward = [views[k][order] for k in range(n_views)]
    backward = [f[::-1] for f in forward] if num_directions > 1 else []
    return np.stack(forward + backward).astype(np.int64)


def inverse_indices(indices: np.ndarray) -> np.ndarray:
    """Per direction, the step p at which each flat position is visited: decode by gathering."""
    return np.argsort(indices, axis=-1).astype(np.int64)

"""A tiny synthetic anomaly model in the exported model's I/O contract, for tests and benchmarks.

It scores how far a pixel is from mid-grey, which is exactly what separates the defects of the
generated video (mmad.runtime.synthetic_video: dark scratches and stains) from its normal
frames (within +-30 grey levels):

    anomaly_map = AveragePool_k( mean_c |image - 128| / 128 )      [B, 1, H, W] float32
    score       = max over the map                                  [B] float32

Input, outputs and metadata follow the contract (mmad.runtime.contract: uint8 NHWC `image`,
`anomaly_map`, `score`, metadata written by its metadata_props), so the runtime loads it exactly
like a real export.
Building it needs the `onnx` package (a development dependency, not a runtime one).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mmad.runtime.contract import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_DTYPE,
    INPUT_LAYOUT,
    INPUT_NAME,
    OUTPUT_MAP,
    OUTPUT_SCORE,
    metadata_props,
)

REFERENCE_GREY = 128.0
# The generated video keeps normal pixels within 30/128 = 0.23 of mid-grey and draws defects at >= 0.5 after
# pooling; 0.35 sits between them.
SYNTHETIC_THRESHOLD = 0.35


def synthetic_metadata(image_size: int, threshold: float) -> dict[str, object]:
    """The synthetic model's metadata, as the exporter writes a real model's (contract.META_KEYS)."""
    return {
        "threshold": threshold,
        "threshold_f1": threshold,
        "image_size": image_size,
        "input_layout": INPUT_LAYOUT,
        "input_dtype": INPUT_DTYPE,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "encoder": "none",
        "arch": "synthetic",
        "model_version": "0",
        "weights_sha256": "",
        "scan": "portable",
        "precision": "fp32",
    }


def _graph(image_size: int, pool: int):
    """The ONNX graph: uint8 NHWC image -> distance from grey -> pooled map -> its max."""
    from onnx import TensorProto, helper

    half = pool // 2
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["pixels", "grey"], ["offset"]),
        helper.make_node("Abs", ["offset"], ["distance"]),
        helper.make_node("ReduceMean", ["distance"], ["mean_rgb"], axes=[3], keepdims=1),  # [B, H, W, 1]
        helper.make_node("Transpose", ["mean_rgb"], ["nchw"], perm=[0, 3, 1, 2]),  # [B, 1, H, W]
        helper.make_node("Mul", ["nchw", "scale"], ["raw_map"]),
        helper.make_node(
            "AveragePool", ["raw_map"], [OUTPUT_MAP], kernel_shape=[pool, pool], pads=[half] * 4, count_include_pad=0
        ),
        helper.make_node("ReduceMax", [OUTPUT_MAP], [OUTPUT_SCORE], axes=[1, 2, 3], keepdims=0),
    ]
    return helper.make_graph(
        nodes,
        "mmad_synthetic",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", image_size, image_size, 3])],
        [
            helper.make_tensor_value_info(OUTPUT_MAP, TensorProto.FLOAT, ["batch", 1, image_size, image_size]),
            helper.make_tensor_value_info(OUTPUT_SCORE, TensorProto.FLOAT, ["batch"]),
        ],
        initializer=[
            helper.make_tensor("grey", TensorProto.FLOAT, [], [REFERENCE_GREY]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / REFERENCE_GREY]),
        ],
    )


def synthetic_model(
    path: str | Path,
    image_size: int = 256,
    pool: int = 7,
    threshold: float = SYNTHETIC_THRESHOLD,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write the synthetic ONNX model (opset 17, dynamic batch) to `path` and return the path.

    pool: odd side of the average-pooling window, which smooths sensor noise out of the map.
    metadata: contract.META_KEYS entries added to (or replacing) synthetic_metadata's; None removes one
        (e.g. {"category_thresholds": {...}, "threshold": None}).
    """
    import onnx
    from onnx import helper

    if pool % 2 == 0:
        raise ValueError(f"pool={pool}: expected an odd window")
    model = helper.make_model(
        _graph(image_size, pool), opset_imports=[helper.make_opsetid("", 17)], producer_name="mmad.runtime.synthetic"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    values = {**synthetic_metadata(image_size, threshold), **(metadata or {})}
    for key, value in metadata_props({k: v for k, v in values.items() if v is not None}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def synthetic_reference(images: np.ndarray, pool: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic model in plain numpy (float64): uint8 [B, H, W, 3] -> (maps [B, H, W], scores [B]).

    AveragePool with count_include_pad=0: each output is the mean over the window's in-image pixels.
    """
    raw = np.abs(images.astype(np.float64) - REFERENCE_GREY).mean(axis=3) / REFERENCE_GREY
    half = pool // 2
    padded = np.pad(raw, ((0, 0), (half, half), (half, half)))
    ones = np.pad(np.ones(raw.shape[1:]), half)

    # Box sums through a 2-D cumulative sum (summed-area table).
    def box(a: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.cumsum(a, axis=-2), axis=-1)
        c = np.pad(c, [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])
        return c[..., pool:, pool:] - c[..., :-pool, pool:] - c[..., pool:, :-pool] + c[..., :-pool, :-pool]

    maps = box(padded) / box(ones)
    return maps, maps.reshape(maps.shape[0], -1).max(axis=1)

"""FP16 and INT8 variants of an exported graph, made on a CPU machine.

    fp16 = to_fp16(onnx.load("model.onnx"))
    int8 = to_int8(onnx.load("model.onnx"), calibration_images(["data/bottle"], 32))

FP16: activations and weights float16 (onnxruntime's float16 converter), except the selective scan:
its node keeps float32 I/O behind Cast nodes, so A, D, delta_bias and the state are float32 as
the contract requires. Input (uint8) and outputs (float32) keep their types.

INT8: onnxruntime.quantization in QDQ format: explicit QuantizeLinear/DequantizeLinear pairs
(symmetric int8, per-channel weights, the form TensorRT's explicit quantization reads) on the
inputs of Conv, MatMul and Gemm only; the scan, normalisations, the cosine distance and the
map's fixed blur stay float.
Calibration runs normal training images through onnxruntime. onnxruntime's calibrator cannot load
custom ops, so it runs the graph's portable twin (identical tensor names outside the scans) and
the ranges it finds are applied to the custom-op graph through a calibration cache.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from mmad.export.command import CALIBRATION_METHODS, DEFAULT_CALIBRATION_IMAGES, ExportError
from mmad.export.onnx_graph import (
    check_graph,
    read_metadata,
    remove_unused,
    save_onnx,
    scan_nodes,
    topological_sort,
    write_metadata,
)
from mmad.export.portable import make_portable
from mmad.runtime.contract import INPUT_NAME, SCAN_OP_TYPE

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


# --- FP16 ------------------------------------------------------------------------------------------
def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of a float32 MMAD graph (the scan and the graph's I/O types unchanged)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    _require_precision(model, "fp32", "FP16 conversion")
    fp16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, SCAN_OP_TYPE])
    topological_sort(fp16)
    if read_metadata(fp16):
        write_metadata(fp16, {"precision": "fp16"})
    check_graph(fp16, "FP16 graph")
    return fp16


# --- INT8 ------------------------------------------------------------------------------------------
def calibration_images(
    data: Sequence[str | Path], count: int = DEFAULT_CALIBRATION_IMAGES, image_size: int = 256
) -> np.ndarray:
    """uint8 [count, S, S, 3]: normal training images of the dataset roots `data`, evenly spread.

    Roots are what `mmad train --data` takes (an MVTec category or dataset, VisA, a folder of images).
    """
    from mmad.training.data import ImageTransform, find_categories, load_image

    paths = [p for c in find_categories([str(d) for d in data]) for p in c.train]
    if not paths:
        raise ExportError(
            f"calibration data {', '.join(map(str, data))}: no normal training images found "
            "(expected <category>/train/good/*.png or a folder of images)"
        )
    if count <= 0:
        raise ExportError(f"calibration image count must be positive, got {count}")
    chosen = [paths[i] for i in np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int)]
    transform = ImageTransform(image_size=image_size)
    return np.stack([transform.resize(load_image(p)) for p in chosen])


class _ImageReader:
    """onnxruntime's CalibrationDataReader protocol over uint8 images, one image per batch."""

    def __init__(self, images: np.ndarray):
        self.images = images
        self._it: Iterator[dict] | None = None
        self.rewind()

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = ({INPUT_NAME: image[None]} for image in self.images)

    def __len__(self) -> int:
        return len(self.images)


def _supports_calibration_cache() -> bool:
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def to_int8(
    model: onnx.ModelProto, images: np.ndarray, *, per_channel: bool = True, method: str = "minmax"
) -> onnx.ModelProto:
    """An INT8 Q/DQ copy of a float32 MMAD graph, calibrated on `images` (uint8 [N, S, S, 3], normal).

    method: "minmax", "percentile" (99.999th) or "entropy" (onnxruntime's calibration methods).
    """
    from onnxruntime.quantization import quantize_static

    _require_precision(model, "fp32", "INT8 quantisation")
    _check_int8_request(images, method)
    has_scans = bool(scan_nodes(model))
    cache_supported = _supports_calibration_cache()
    if has_scans and not cache_supported:
        raise ExportError(
            "INT8 of a custom-op graph needs onnxruntime with quantize_static(calibration_cache_path=) "
            "(pip install -U onnxruntime); or quantise the portable graph"
        )
    options = _quantize_options(model, per_channel, method)
    with tempfile.TemporaryDirectory(prefix="mmad-int8-") as tmp, _quiet_preprocessing_advice():
        tmp = Path(tmp)
        save_onnx(model, tmp / "model.onnx")
        if cache_supported:
            cache = tmp / "ranges.json"
            _calibrate(make_portable(model) if has_scans else model, images, options["calibrate_method"], tmp, cache)
            quantize_static(
                str(tmp / "model.onnx"), str(tmp / "int8.onnx"), None, calibration_cache_path=str(cache), **options
            )
        else:
            quantize_static(str(tmp / "model.onnx"), str(tmp / "int8.onnx"), _ImageReader(images), **options)
        result = onnx.load(str(tmp / "int8.onnx"))
    float_for_other_readers(result)
    if read_metadata(result):
        write_metadata(result, {"precision": "int8"})
    check_graph(result, "INT8 graph")
    return result


def _check_int8_request(images: np.ndarray, method: str) -> None:
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"calibration method must be one of {sorted(CALIBRATION_METHODS)}, got {method!r}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise ExportError(
            f"calibration images must be uint8 [N, H, W, 3] with N > 0, got {images.dtype} {images.shape}"
        )


def _quantize_options(model: onnx.ModelProto, per_channel: bool, method: str) -> dict:
    """quantize_static's keyword arguments: symmetric int8 Q/DQ on Conv/MatMul/Gemm inputs, the map's blur float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    return {
        "quant_format": QuantFormat.QDQ,
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "per_channel": per_channel,
        "op_types_to_quantize": list(QUANTIZED_OPS),
        "calibrate_method": methods[method],
        # Symmetric int8 with zero points 0: what TensorRT's explicit quantisation accepts. Outputs are
        # quantised only where they are the input of another quantised op.
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        },
        "nodes_to_exclude": map_filter_nodes(model),
    }


def map_filter_nodes(model: onnx.ModelProto) -> list[str]:
    """The Conv nodes of the anomaly map's fixed Gaussian blur (one input and one output channel).
    They stay float: calibration sees normal images only, so a quantised blur would clip every
    anomalous map at the largest normal value (seen on MVTec bottle: every defect scored the same)."""
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and len(n.input) > 1 and weights.get(n.input[1], [0, 0])[:2] == [1, 1]
    ]


def float_for_other_readers(model: onnx.ModelProto) -> None:
    """Only the Conv/MatMul/Gemm inputs read quantised values: onnxruntime puts Q/DQ on a tensor, so
    every other reader of it (an Add, a Sigmoid, the scan's inputs) would see rounded values too;
    point those readers back at the float tensor (in place)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":  # an activation's pair (weights have no Q)
                node.input[k] = q.input[0]
    remove_unused(model)


@contextlib.contextmanager
def _quiet_preprocessing_advice():
    """onnxruntime's quantiser advises its pre-processing step (symbolic shape inference and graph
    optimisation, for its own CPU kernels) on the root logger; the graph here is already
    shape-folded and meant for TensorRT too, so the advice is noise."""

    class Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    quiet = Filter()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _calibrate(model: onnx.ModelProto, images: np.ndarray, method, tmp: Path, cache: Path) -> None:
    """Run onnxruntime's calibrator over `images` on `model` (no custom ops) and save the ranges."""
    from onnxruntime.quantization import create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_onnx(model, tmp / "calibrate.onnx")
    calibrator = create_calibrator(
        str(tmp / "calibrate.onnx"),
        list(QUANTIZED_OPS),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=method,
    )
    calibrator.collect_data(_ImageReader(images))
    save_tensors_data(calibrator.compute_data(), cache, smooth_quant=False)


def _require_precision(model: onnx.ModelProto, wanted: str, what: str) -> None:
    current = read_metadata(model).get("precision", "fp32")
    if current != wanted:
        raise ExportError(f"{what} needs a {wanted} graph, this one is {current}")

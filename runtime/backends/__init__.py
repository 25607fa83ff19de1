"""Inference backends behind one small interface, and the choice of backend for a model file.

A backend loads a model, exposes its input spec (`info`, read from the model's metadata) and
runs a batch: uint8 RGB images [B, H, W, 3] -> anomaly maps float32 [B, H, W] and scores float32 [B].

    with load_backend("model.onnx") as backend:
        maps, scores = backend.infer(images)

Backends: "tensorrt" (a serialised engine + its JSON sidecar), "onnxruntime" (an ONNX file, on
the best execution provider present: TensorRT, CUDA, then CPU) and "openvino" (an ONNX file on the CPU,
FP32 or "openvino-fp16"). "auto" runs an engine in TensorRT, and an ONNX file in onnxruntime where it has
a GPU execution provider, else in OpenVINO when it is installed, else in onnxruntime on the CPU. Each
backend module imports its library only when a model is loaded, so a Jetson without onnxruntime or a PC
without TensorRT can import this module.

The loaded backend's `info` carries the thresholds to run with: an on-site calibration beside the
model (`mmad calibrate`), else the model's metadata (model_info.with_thresholds).

    base.py             the Backend interface
    onnxruntime.py      an ONNX file in onnxruntime (registers the SelectiveScan op's kernel when needed)
    openvino.py         an ONNX file in OpenVINO on the CPU (adds the SelectiveScan op's extension when needed)
    tensorrt.py         a TensorRT engine and its sidecar
    tensorrt_plugin.py  the SelectiveScan TensorRT plugin library: which one may be loaded, and loading it
    cuda_memory.py      device memory for the TensorRT backend (Polygraphy's libcudart wrapper, else pycuda)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mmad.runtime.backends.base import Backend
from mmad.runtime.errors import ConfigError
from mmad.runtime.model_info import with_thresholds

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)

# --backend values. "onnxruntime" takes the best execution provider present; the suffixed forms pin one.
BACKEND_CHOICES = (
    "auto",
    "tensorrt",
    "onnxruntime",
    "onnxruntime-cpu",
    "onnxruntime-cuda",
    "onnxruntime-tensorrt",
    "openvino",
    "openvino-fp16",
)
ONNX_BACKENDS = ("onnxruntime", "openvino")  # the backend families that run an ONNX file


def backend_kind_for_file(path: str | Path) -> str:
    """ "tensorrt" for an engine file, "onnxruntime" for an ONNX file; ConfigError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if suffix in ONNX_SUFFIXES:
        return "onnxruntime"
    raise ConfigError(
        f"--model {path}: unknown model type {suffix!r}; expected an ONNX file (.onnx) or a TensorRT engine "
        f"({', '.join(ENGINE_SUFFIXES)})"
    )


def auto_family(kind: str) -> str:
    """The backend "auto" picks for a model file of `kind`: TensorRT for an engine; for an ONNX file onnxruntime
    where it has a GPU execution provider, else OpenVINO when installed, else onnxruntime on the CPU."""
    if kind != "onnxruntime" or importlib.util.find_spec("openvino") is None:
        return kind
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        gpu = {"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(onnxruntime.get_available_providers())
        if gpu:
            return "onnxruntime"
    return "openvino"


def load_backend(
    model: str | Path,
    backend: str = "auto",
    *,
    op_library: str | None = None,
    plugin_library: str | None = None,
    allow_foreign_engine: bool = False,
    threads: int = 0,
    calibration: str | Path | bool | None = None,
    category: str | None = None,
) -> Backend:
    """Load `model` with the named backend, or with the best one for its file type ("auto").

    op_library: the SelectiveScan op's library for a graph with the op: an onnxruntime custom-op library, or
        for OpenVINO its extension (default: the project's CPU kernel, through onnxruntime-extensions or the
        project's OpenVINO extension, added when the graph needs it).
    plugin_library: the TensorRT plugin library (default: named in the engine's sidecar).
    allow_foreign_engine: try an engine whose sidecar says it was built with another TensorRT or GPU.
    threads: onnxruntime's intra-op or OpenVINO's inference CPU threads (0: its default); TensorRT ignores it.
    calibration: None uses the calibration file beside the model when there is one
        (contract.calibration_path), else the model's metadata; a path must exist; False: the metadata only.
    category: that category's thresholds (its calibration file, else the metadata's "category_thresholds").
    The backend's `info` then has threshold, pixel_threshold, threshold_source and categories
    (model_info.with_thresholds).
    Raises ConfigError for a missing file, an unknown backend or a model the backend cannot run, and for a
    calibration that is unreadable, made for another model file, or an unknown category.
    """
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"--model {path}: no such file")
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"--backend {backend!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    kind = backend_kind_for_file(path)
    family = backend.partition("-")[0] if backend != "auto" else auto_family(kind)
    if family != kind and not (kind == "onnxruntime" and family in ONNX_BACKENDS):
        what = "TensorRT engine" if kind == "tensorrt" else "ONNX model"
        raise ConfigError(
            f"--backend {backend} cannot run {path.name}: it is a {what}"
            + ("; build an engine from it first (mmad export)" if kind == "onnxruntime" else "")
        )
    if family == "openvino":
        from mmad.runtime.backends.openvino import OpenVinoBackend

        precision = backend.partition("-")[2] or "fp32"
        loaded = OpenVinoBackend(path, precision=precision, extension=op_library, threads=threads)
    elif kind == "tensorrt":
        from mmad.runtime.backends.tensorrt import TensorRTBackend

        loaded = TensorRTBackend(path, plugin_library=plugin_library, allow_foreign_engine=allow_foreign_engine)
    else:
        from mmad.runtime.backends.onnxruntime import OnnxRuntimeBackend

        provider = backend.partition("-")[2] or "auto"
        loaded = OnnxRuntimeBackend(path, provider=provider, op_library=op_library, threads=threads)
    try:
        loaded.info = with_thresholds(loaded.info, path, calibration, category)
    except BaseException:
        loaded.close()
        raise
    return loaded

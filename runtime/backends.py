"""Inference backends behind one small interface, and the choice of backend for a model file.

A backend loads a model, exposes its input spec (`info`, read from the model's metadata) and
runs a batch: uint8 RGB images [B, H, W, 3] -> anomaly maps float32 [B, H, W] and scores float32 [B].

    with load_backend("model.onnx") as backend:
        maps, scores = backend.infer(images)

Backends: "tensorrt" (a serialised engine + its JSON sidecar) and "onnxruntime" (an ONNX file, on
the best execution provider present: TensorRT, CUDA, then CPU). Each backend module imports its
library only when a model is loaded, so a Jetson without onnxruntime or a PC without TensorRT can
import this module.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .model_info import ModelInfo

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)

# --backend values. "onnxruntime" takes the best execution provider present; the suffixed forms pin one.
BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")


class Backend(abc.ABC):
    """A loaded model. Subclasses set `info` and implement `infer`."""

    name: str = ""
    info: ModelInfo

    @abc.abstractmethod
    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB [B, H, W, 3], (H, W) = (info.height, info.width) -> (maps float32 [B, h, w], scores float32 [B]).

        The maps are at the model's output size (the input size for MMAD exports).
        """

    def describe(self) -> str:
        """One line for logs: backend, device / provider."""
        return self.name

    def close(self) -> None:
        """Release device memory and sessions; the backend is unusable afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_batch(self, images: np.ndarray) -> np.ndarray:
        """The batch as a C-contiguous uint8 array, or ValueError naming the expected shape."""
        expected = (self.info.height, self.info.width, 3)
        if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
            raise ValueError(
                f"{self.info.source}: expected uint8 images [B, {expected[0]}, {expected[1]}, 3], got {images.dtype} {list(images.shape)}"
            )
        return np.ascontiguousarray(images)


def backend_kind_for_file(path: str | Path) -> str:
    """ "tensorrt" for an engine file, "onnxruntime" for an ONNX file; ConfigError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if suffix in ONNX_SUFFIXES:
        return "onnxruntime"
    raise ConfigError(
        f"--model {path}: unknown model type {suffix!r}; expected an ONNX file (.onnx) or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})"
    )


def load_backend(
    model: str | Path,
    backend: str = "auto",
    *,
    op_library: str | None = None,
    plugin_library: str | None = None,
    allow_foreign_engine: bool = False,
) -> Backend:
    """Load `model` with the named backend, or with the best one for its file type ("auto").

    op_library: onnxruntime custom-op library for a graph with the SelectiveScan op.
    plugin_library: the TensorRT plugin library (default: named in the engine's sidecar).
    allow_foreign_engine: try an engine whose sidecar says it was built with another TensorRT or GPU.
    Raises ConfigError for a missing file, an unknown backend or a model the backend cannot run.
    """
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"--model {path}: no such file")
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"--backend {backend!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    kind = backend_kind_for_file(path)
    if backend != "auto" and not backend.startswith(kind):
        raise ConfigError(
            f"--backend {backend} cannot run {path.name}: it is a {'TensorRT engine' if kind == 'tensorrt' else 'ONNX model'}"
            + ("; build an engine from it first (mmad export)" if kind == "onnxruntime" else "")
        )
    if kind == "tensorrt":
        from .backend_tensorrt import TensorRTBackend

        return TensorRTBackend(path, plugin_library=plugin_library, allow_foreign_engine=allow_foreign_engine)
    from .backend_onnxruntime import OnnxRuntimeBackend

    provider = backend.partition("-")[2] or "auto"
    return OnnxRuntimeBackend(path, provider=provider, op_library=op_library)

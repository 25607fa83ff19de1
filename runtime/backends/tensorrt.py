"""TensorRT backend: a serialised engine, bound by tensor name, run on a CUDA stream.

Written against the TensorRT 10/11 Python API (named I/O tensors: set_input_shape,
set_tensor_address, execute_async_v3). Device memory comes from mmad.runtime.backends.cuda_memory
(Polygraphy's libcudart wrapper, else pycuda), used inside its `current()` so that the backend can be
created on one thread and run on another (GStreamer's streaming thread).

An engine only runs on the TensorRT version and GPU architecture it was built for, so the exporter
writes a JSON sidecar beside it, `<engine>.json` (the contract's EngineSidecar: TensorRT version,
GPU and compute capability, hardware compatibility, plugin library, the model's metadata). It is
checked against this machine before deserialising, so an engine built elsewhere fails with a
sentence that says so instead of a deserialisation error. The SelectiveScan plugin library is chosen
(only one the user trusts) and loaded by mmad.runtime.backends.tensorrt_plugin, which the exporter uses
too, before the engine is deserialised; engines never carry the library themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmad.runtime.backends.base import Backend
from mmad.runtime.backends.cuda_memory import cuda_memory
from mmad.runtime.backends.tensorrt_plugin import import_tensorrt, load_plugin_library, resolve_plugin_library
from mmad.runtime.contract import INPUT_NAME, OUTPUT_MAP, PLUGIN_ENV, EngineSidecar, read_sidecar
from mmad.runtime.errors import ConfigError
from mmad.runtime.model_info import model_info_from_keys
from mmad.runtime.processing import score_from_map

log = logging.getLogger(__name__)


def _release(version: str) -> tuple[str, ...]:
    """'10.3.0.26' -> ('10', '3', '0'): engines are tied to the major.minor.patch release."""
    return tuple(version.split(".")[:3])


def check_engine_compatibility(
    engine: Path, sidecar: EngineSidecar, trt_version: str, gpu: str, compute_capability: str
) -> list[str]:
    """Compare where the engine was built with this machine.

    Returns warnings (no sidecar, another GPU model of the same architecture); raises ConfigError
    when the engine cannot run here (another TensorRT release, another compute capability without
    hardware compatibility).
    """
    if sidecar.path is None:
        return [
            f"{engine.name}: no sidecar ({engine.name}.json); cannot check where it was built, and the threshold "
            "must come from --threshold"
        ]
    built = f"TensorRT {sidecar.tensorrt_version} on {sidecar.gpu} (compute capability {sidecar.compute_capability})"
    here = f"TensorRT {trt_version} on {gpu} (compute capability {compute_capability})"
    if sidecar.tensorrt_version and _release(sidecar.tensorrt_version) != _release(trt_version):
        raise ConfigError(
            f"{engine}: built elsewhere, with {built}; this machine has {here}. Rebuild the engine here (mmad export)."
        )
    same_arch = sidecar.compute_capability is None or sidecar.compute_capability == compute_capability
    if not same_arch and sidecar.hardware_compatibility == "none":
        raise ConfigError(
            f"{engine}: built elsewhere, for {built}; this machine has {here}. Rebuild the engine here (mmad export)."
        )
    if sidecar.gpu and sidecar.gpu != gpu:
        return [
            f"{engine.name}: built on {sidecar.gpu}, running on {gpu}; it works, but its kernels were tuned for "
            "the other GPU"
        ]
    return []


# --- The backend ---------------------------------------------------------------------------------
@dataclass
class _Binding:
    name: str
    dtype: np.dtype
    host: np.ndarray  # pinned, at the maximum batch
    device: int  # device pointer


class TensorRTBackend(Backend):
    """A TensorRT engine with one execution context, pinned host buffers and a CUDA stream."""

    name = "tensorrt"

    def __init__(self, path: str | Path, plugin_library: str | None = None, allow_foreign_engine: bool = False):
        trt = import_tensorrt()
        self.path = Path(path)
        self.trt = trt
        sidecar = read_sidecar(self.path)
        self.cuda = cuda_memory()
        try:
            with self.cuda.current():
                self._load(sidecar, plugin_library, allow_foreign_engine)
        except BaseException:
            self.cuda.close()
            raise

    def _load(self, sidecar: EngineSidecar, plugin_library: str | None, allow_foreign_engine: bool) -> None:
        trt = self.trt
        self.gpu = self._check_where_built(sidecar, allow_foreign_engine)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self._load_plugin(plugin_library, sidecar)

        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ConfigError(
                f"{self.path}: TensorRT could not deserialise the engine (see its log above); it may have been "
                "built elsewhere, or carry its own copy of the plugin (trtexec --setPluginsToSerialize), which "
                "TensorRT refuses once the library is loaded: build it with mmad export trt"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self.info = model_info_from_keys(
            sidecar.metadata,
            source=str(self.path),
            input_names=inputs,
            output_names=outputs,
            input_shape=[d if d > 0 else None for d in self.engine.get_tensor_shape(INPUT_NAME)],
        )
        self.max_batch = self._max_batch()
        self.context = self.engine.create_execution_context()
        self.bindings = {n: self._allocate(n) for n in names}
        for b in self.bindings.values():
            self.context.set_tensor_address(b.name, b.device)

    def _check_where_built(self, sidecar: EngineSidecar, allow_foreign_engine: bool) -> str:
        """Log the sidecar's warnings; ConfigError when the engine cannot run here (unless allowed). Returns the GPU."""
        gpu, capability = self.cuda.device_facts()
        try:
            warnings = check_engine_compatibility(self.path, sidecar, self.trt.__version__, gpu, capability)
        except ConfigError:
            if not allow_foreign_engine:
                raise
            warnings = [
                f"{self.path.name}: built for another TensorRT or GPU; trying it anyway (--allow-foreign-engine)"
            ]
        for w in warnings:
            log.warning(w)
        return gpu

    def _load_plugin(self, plugin_library: str | None, sidecar: EngineSidecar) -> None:
        """Register the SelectiveScan plugin before deserialising; ConfigError when a custom-op engine has none."""
        plugin = resolve_plugin_library(plugin_library, sidecar)
        if plugin is not None:
            load_plugin_library(self.trt, plugin)
            self.trt.init_libnvinfer_plugins(self.logger, "")  # TensorRT's own plugins, for engines that use them
        elif sidecar.metadata.get("scan") == "custom-op":
            raise ConfigError(
                f"{self.path}: the engine uses the SelectiveScan plugin; give its library with --plugin-library "
                f"or ${PLUGIN_ENV}"
            )

    def _max_batch(self) -> int:
        """The largest batch the engine accepts: its optimisation profile's maximum, or the static batch."""
        batch = self.engine.get_tensor_shape(INPUT_NAME)[0]
        if batch > 0:
            return int(batch)
        return int(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])

    def _allocate(self, name: str) -> _Binding:
        """Pinned host and device buffers for one I/O tensor at the maximum batch."""
        dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
        shape = [d for d in self.engine.get_tensor_shape(name)]
        if name == INPUT_NAME:
            shape = [self.max_batch, self.info.height, self.info.width, 3]
        else:  # outputs: batch first, other dims static per the contract
            shape = [self.max_batch] + [d if d > 0 else self._output_dim(name, i) for i, d in enumerate(shape[1:], 1)]
        host = self.cuda.pinned_empty(tuple(shape), dtype)
        return _Binding(name, dtype, host, self.cuda.device_alloc(host.nbytes))

    def _output_dim(self, name: str, axis: int) -> int:
        """A dynamic non-batch output dimension, read from the context at the maximum input shape."""
        context = self.engine.create_execution_context()
        context.set_input_shape(INPUT_NAME, (self.max_batch, self.info.height, self.info.width, 3))
        return int(context.get_tensor_shape(name)[axis])

    def describe(self) -> str:
        return f"tensorrt {self.trt.__version__} on {self.gpu} ({self.cuda.name})"

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = self.check_batch(images)
        maps, scores = [], []
        with self.cuda.current():  # the caller's thread may not be the one that loaded the engine
            for start in range(0, batch.shape[0], self.max_batch):
                m, s = self._infer_chunk(batch[start : start + self.max_batch])
                maps.append(m)
                scores.append(s)
        return np.concatenate(maps), np.concatenate(scores)

    def _infer_chunk(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = chunk.shape[0]
        inp = self.bindings[INPUT_NAME]
        inp.host[:n] = chunk
        self.context.set_input_shape(INPUT_NAME, chunk.shape)
        self.cuda.copy_to_device(inp.device, inp.host[:n])
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise RuntimeError(f"{self.path}: TensorRT execution failed (see its log above)")
        outputs = [b for b in self.bindings.values() if b.name != INPUT_NAME]
        for b in outputs:
            self.cuda.copy_to_host(b.host[:n], b.device)
        self.cuda.synchronize()
        out = self.bindings[OUTPUT_MAP].host[:n]
        maps = out.reshape(n, out.shape[-2], out.shape[-1]).astype(np.float32)
        if self.info.score_name:
            scores = self.bindings[self.info.score_name].host[:n].reshape(n).astype(np.float32)
        else:
            scores = score_from_map(maps)
        return maps, scores

    def close(self) -> None:
        # Release in reverse order of creation: context and engine before the memory they point to.
        with self.cuda.current():
            self.context = None
            self.engine = None
            self.runtime = None
        self.cuda.close()

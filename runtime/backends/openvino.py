"""OpenVINO backend: an ONNX file (the custom-op or the portable graph) on the CPU.

A graph with the SelectiveScan custom op needs the op's OpenVINO extension. With `extension` (--op-library) that
library is added to OpenVINO's Core; without it the backend adds the project's own when the graph turns out to
need it (mmad.plugins.selective_scan.openvino_ext: the C++ CPU scan, built with CMake on first use, cached) and
reads the graph again. A missing openvino package, compiler or CMake is a ConfigError naming the fix.

Precision: "fp32" pins OpenVINO's inference precision to f32 (its CPU default is bf16 on CPUs with AVX512-BF16 or
AMX, which would not meet the FP32 tolerance); "fp16" asks for f16, which OpenVINO runs where the CPU has FP16
arithmetic and otherwise lowers to bf16 (describe() says which, and info.metadata["precision"] becomes "fp16" or
"bf16": what `mmad bench` judges it as). The scan itself stays float32.

The model is compiled for a fixed batch size (static shapes run faster than the graph's dynamic batch on
OpenVINO's CPU plugin), batch 1 at load and any other size on its first batch. The ONNX file is what is deployed:
an OpenVINO IR (.xml/.bin) of the same model was measured to load no faster (read and compile alike).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from mmad.runtime.backends.base import Backend
from mmad.runtime.contract import INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE, SCAN_OP_TYPE
from mmad.runtime.errors import ConfigError
from mmad.runtime.model_info import model_info_from_metadata

PRECISIONS = {"fp32": "f32", "fp16": "f16"}  # --backend openvino[-fp16] -> INFERENCE_PRECISION_HINT
DEVICE = "CPU"  # the extension's evaluate() runs on the host: the CPU plugin is the one that calls it
_MAX_COMPILED_BATCHES = 4  # batch sizes kept compiled at once


def import_openvino():
    """The openvino module, or ConfigError naming the fix."""
    try:
        import openvino
    except ImportError:
        raise ConfigError("the openvino backend needs the openvino package: pip install openvino") from None
    return openvino


def _needs_extension(err: Exception) -> bool:
    return SCAN_OP_TYPE in str(err)


def _project_extension(path: Path) -> str:
    """The project's SelectiveScan extension for the installed OpenVINO, built on first use; ConfigError if not."""
    from mmad.plugins.selective_scan import openvino_ext

    try:
        return str(openvino_ext.extension_library())
    except openvino_ext.ExtensionUnavailable as err:
        raise ConfigError(
            f"--model {path} uses the custom op {SCAN_OP_TYPE}, and the project's OpenVINO extension for it cannot "
            f"be used here: {err}. Give an extension library with --op-library, or use the portable export"
        ) from None


def _shape(partial_shape) -> list[object]:
    """An OpenVINO PartialShape as a list: ints where static, the dimension's text ("?") where not."""
    return [d.get_length() if d.is_static else str(d) for d in partial_shape]


class OpenVinoBackend(Backend):
    """An ONNX model compiled by OpenVINO for the CPU."""

    name = "openvino"

    def __init__(
        self,
        path: str | Path,
        precision: str = "fp32",
        extension: str | None = None,
        threads: int = 0,
        compile_now: bool = True,
    ):
        """compile_now=False leaves compiling to the first batch (a caller that only reads `info`)."""
        ov = import_openvino()
        if precision not in PRECISIONS:
            raise ConfigError(f"openvino precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.path = Path(path)
        self.precision = precision
        self.core = ov.Core()
        self.model = self._read_model(extension)
        self._config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        framework = self.model.get_rt_info()["framework"] if self.model.has_rt_info(["framework"]) else {}
        meta = {key: value.astype(str) for key, value in framework.items()}
        inputs, outputs = self.model.inputs, self.model.outputs
        names = [o.get_any_name() for o in outputs]
        self.info = model_info_from_metadata(
            meta,
            source=str(self.path),
            input_names=[i.get_any_name() for i in inputs],
            output_names=names,
            input_shape=next((_shape(i.get_partial_shape()) for i in inputs if INPUT_NAME in i.get_names()), None),
            output_shapes={name: _shape(o.get_partial_shape()) for name, o in zip(names, outputs)},
        )
        self._requests: dict[int, object] = {}
        if compile_now:
            self._request(1)  # a model OpenVINO cannot compile fails at load, not on the first frame
        if precision != "fp32":  # the graph's "precision" says how it was exported; this is how it runs
            ran = {"f16": "fp16", "bf16": "bf16"}.get(self.runs_precision(), precision)
            self.info = replace(self.info, metadata={**self.info.metadata, "precision": ran})

    def _read_model(self, extension: str | None):
        """The model; a custom-op graph without `extension` gets the project's SelectiveScan extension."""
        if extension:
            if not Path(extension).is_file():
                raise ConfigError(f"--op-library {extension}: no such file")
            self._add_extension(extension)
        try:
            return self.core.read_model(str(self.path))
        except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own for bad graphs
            if not _needs_extension(err) or extension:
                raise ConfigError(f"--model {self.path}: OpenVINO cannot read it: {err}") from None
        self._add_extension(_project_extension(self.path))
        try:
            return self.core.read_model(str(self.path))
        except Exception as err:
            raise ConfigError(
                f"--model {self.path}: OpenVINO cannot read it even with the {SCAN_OP_TYPE} extension added: {err}"
            ) from None

    def _add_extension(self, library: str) -> None:
        try:
            self.core.add_extension(library)
        except Exception as err:  # a file that is not an OpenVINO extension, or built for another release
            raise ConfigError(
                f"--op-library {library}: OpenVINO cannot load it as an extension: {err}. It must be the "
                "SelectiveScan OpenVINO extension built for this OpenVINO (python -m "
                "mmad.plugins.selective_scan.openvino_ext builds it)"
            ) from None

    def _request(self, batch: int):
        """An infer request of the model compiled for `batch` images (compiled on first use, a few kept)."""
        if batch not in self._requests:
            if len(self._requests) >= _MAX_COMPILED_BATCHES:
                self._requests.pop(next(iter(self._requests)))
            model = self.model.clone()
            model.reshape({INPUT_NAME: [batch, self.info.height, self.info.width, 3]})
            try:
                compiled = self.core.compile_model(model, DEVICE, self._config)
            except Exception as err:
                raise ConfigError(f"--model {self.path}: OpenVINO cannot compile it for batch {batch}: {err}") from None
            self._requests[batch] = compiled.create_infer_request()
        return self._requests[batch]

    def runs_precision(self) -> str:
        """The precision OpenVINO chose for the compiled model: f32, f16 or bf16 ("?" before it is compiled)."""
        if not self._requests:
            return "?"
        request = next(iter(self._requests.values()))
        return request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def describe(self) -> str:
        import openvino

        version = openvino.__version__.split("-")[0]
        return f"openvino {version} {DEVICE} {self.precision} (runs {self.runs_precision()})"

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = self.check_batch(images)
        request = self._request(batch.shape[0])
        request.infer({INPUT_NAME: batch})
        maps = request.get_tensor(OUTPUT_MAP).data.copy()  # the request reuses its output buffers
        has_score = self.info.score_name == OUTPUT_SCORE
        scores = request.get_tensor(OUTPUT_SCORE).data.copy() if has_score else None
        return self.model_outputs(maps, scores)

    def op_times(self, images: np.ndarray, runs: int) -> tuple[str, dict[str, float]]:
        """ms per run by layer type from OpenVINO's performance counters (PERF_COUNT), on a second compiled
        copy after one untimed run (mmad.runtime.bench.profile)."""
        batch = self.check_batch(images)
        model = self.model.clone()
        model.reshape({INPUT_NAME: [batch.shape[0], self.info.height, self.info.width, 3]})
        request = self.core.compile_model(model, DEVICE, {**self._config, "PERF_COUNT": True}).create_infer_request()
        request.infer({INPUT_NAME: batch})
        # Extension ops (SelectiveScan) are counted as "Reference" layers: name them by the model's op type.
        op_types = {op.get_friendly_name(): op.get_type_name() for op in self.model.get_ops()}
        times: dict[str, float] = {}
        for _ in range(runs):
            request.infer({INPUT_NAME: batch})
            for layer in request.profiling_info:  # the counters of the last inference
                kind = (
                    op_types.get(layer.node_name, layer.node_type)
                    if layer.node_type == "Reference"
                    else layer.node_type
                )
                times[kind] = times.get(kind, 0.0) + layer.real_time.total_seconds() * 1000.0 / runs
        return "OpenVINO performance counters", times

    def close(self) -> None:
        self._requests.clear()
        self.model = None
        self.core = None

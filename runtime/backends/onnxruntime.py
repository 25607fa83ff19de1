"""ONNX Runtime backend: the portable graph on CPU, or the CUDA / TensorRT execution providers.

A graph exported with the SelectiveScan custom op (metadata scan = "custom-op") needs that op's
kernel. With `op_library` (--op-library) that custom-op library is registered with the session;
without it the backend registers the project's own kernel (mmad.plugins.selective_scan.onnxruntime_op:
the C++ CPU scan as an onnxruntime-extensions op) when the graph turns out to need it, and loads the
graph again. When onnxruntime-extensions or the C++ kernel is missing, that is a ConfigError saying so.
This is the one place the runtime does that; every caller (stream, bench, mmadinfer) loads through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from mmad.runtime.backends.base import Backend
from mmad.runtime.contract import INPUT_NAME, OUTPUT_MAP, SCAN_OP_DOMAIN, SCAN_OP_TYPE
from mmad.runtime.errors import ConfigError
from mmad.runtime.model_info import model_info_from_metadata

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
BEST_FIRST = ("tensorrt", "cuda", "cpu")


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "the onnxruntime backend needs the onnxruntime package: pip install 'mmad-edge[runtime]'"
        ) from None
    return onnxruntime


def choose_providers(preference: str, available: list[str]) -> list[str]:
    """Execution providers to ask for, best first, always ending with the CPU as a fallback.

    preference: "auto" (every one of TensorRT, CUDA, CPU present) or one of PROVIDERS.
    """
    if preference == "auto":
        return [PROVIDERS[k] for k in BEST_FIRST if PROVIDERS[k] in available]
    if preference not in PROVIDERS:
        raise ConfigError(f"onnxruntime provider {preference!r}: expected auto or one of {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[preference]
    if wanted not in available:
        raise ConfigError(f"onnxruntime here has no {wanted} (available: {', '.join(available)})")
    return [wanted] + ([PROVIDERS["cpu"]] if wanted != PROVIDERS["cpu"] else [])


def _provider_options(providers: list[str]) -> list[dict[str, object]]:
    """Per-provider options: the TensorRT provider caches the engines it builds, so only the first start is slow."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmad" / "ort-tensorrt"
    options: list[dict[str, object]] = []
    for p in providers:
        if p == PROVIDERS["tensorrt"]:
            options.append({"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)})
        else:
            options.append({})
    return options


def _needs_custom_op(err: Exception) -> bool:
    text = str(err)
    return SCAN_OP_TYPE in text or SCAN_OP_DOMAIN in text


class OnnxRuntimeBackend(Backend):
    """An ONNX model in an onnxruntime InferenceSession."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, provider: str = "auto", op_library: str | None = None, threads: int = 0):
        ort = _import_onnxruntime()
        self.path = Path(path)
        providers = choose_providers(provider, ort.get_available_providers())
        self.session = self._open_session(ort, providers, op_library, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = self.session.get_inputs()
        input_shape = next((i.shape for i in inputs if i.name == INPUT_NAME), None)
        self.info = model_info_from_metadata(
            meta,
            source=str(self.path),
            input_names=[i.name for i in inputs],
            output_names=[o.name for o in self.session.get_outputs()],
            input_shape=input_shape,
            output_shapes={o.name: o.shape for o in self.session.get_outputs()},
        )
        self._outputs = [OUTPUT_MAP] + ([self.info.score_name] if self.info.score_name else [])

    def _session(self, ort, extra_library: str | None = None, scan_op: bool = False, profile_prefix: str = ""):
        """A session of the model with this backend's providers and threads (profiling on with a prefix)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.log_severity_level = 3  # errors only: provider fall-back notices are expected on CPU machines
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        if extra_library:
            options.register_custom_ops_library(extra_library)
        if scan_op:
            options = _with_scan_op(options)
        providers = self._providers
        return ort.InferenceSession(
            str(self.path), sess_options=options, providers=providers, provider_options=_provider_options(providers)
        )

    def _open_session(self, ort, providers: list[str], op_library: str | None, threads: int):
        """The session; a custom-op graph without `op_library` gets the project's SelectiveScan op.
        Remembers how it was opened (self._how) so that op_times() can open a profiled twin."""
        self._providers, self._threads = providers, threads
        if op_library and not Path(op_library).is_file():
            raise ConfigError(f"--op-library {op_library}: no such file")
        self._how: dict[str, object] = {"extra_library": op_library}
        try:
            return self._session(ort, op_library)
        except Exception as err:  # onnxruntime raises its own exception types for bad graphs
            if not _needs_custom_op(err) or op_library:
                raise ConfigError(f"--model {self.path}: onnxruntime cannot load it: {err}") from None
        self._how = {"scan_op": True}
        try:
            return self._session(ort, scan_op=True)
        except ImportError as err:  # CustomOpUnavailable: onnxruntime-extensions or the C++ kernel is missing
            raise ConfigError(
                f"--model {self.path} uses the custom op {SCAN_OP_DOMAIN}:{SCAN_OP_TYPE}, and the project's kernel "
                f"for it cannot be used here: {err}. Give a kernel library with --op-library, or use the portable "
                "export"
            ) from None
        except Exception as err:
            raise ConfigError(
                f"--model {self.path}: onnxruntime cannot load it even with the {SCAN_OP_TYPE} op registered: {err}"
            ) from None

    def op_times(self, images: np.ndarray, runs: int) -> tuple[str, dict[str, float]]:
        """ms per run by op type over `runs` runs after one untimed run, from onnxruntime's profiler on a
        second, profiled session (mmad.runtime.bench.profile)."""
        ort = _import_onnxruntime()
        feed = {INPUT_NAME: self.check_batch(images)}
        with tempfile.TemporaryDirectory(prefix="mmad-ort-profile-") as folder:
            session = self._session(ort, profile_prefix=str(Path(folder) / "ort"), **self._how)
            for _ in range(runs + 1):
                session.run(self._outputs, feed)
            trace = json.loads(Path(session.end_profiling()).read_text())
        return "onnxruntime profiler", kernel_times(trace, skip_runs=1, runs=runs)

    def describe(self) -> str:
        return f"onnxruntime {self.session.get_providers()[0]}"

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = self.check_batch(images)
        results = self.session.run(self._outputs, {INPUT_NAME: batch})
        return self.model_outputs(results[0], results[1] if len(results) > 1 else None)

    def close(self) -> None:
        self.session = None


def kernel_times(trace: list[dict], skip_runs: int, runs: int) -> dict[str, float]:
    """ms per run by op type from an onnxruntime profile trace (its JSON events), leaving out the node
    events of the first `skip_runs` runs (warm-up)."""
    starts = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) < skip_runs + runs:
        raise RuntimeError(f"onnxruntime's profile holds {len(starts)} runs, expected {skip_runs + runs}")
    first = starts[skip_runs]
    times: dict[str, float] = {}
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= first:
            op = event["args"]["op_name"]
            times[op] = times.get(op, 0.0) + event["dur"] / 1000.0 / runs
    return times


def _with_scan_op(options):
    """Session options with the SelectiveScan op registered (onnxruntime-extensions running the C++ scan).

    ImportError (CustomOpUnavailable) naming what is missing: onnxruntime-extensions or the C++ kernel.
    """
    from mmad.plugins.selective_scan.onnxruntime_op import session_options_with_custom_ops

    return session_options_with_custom_ops(options)

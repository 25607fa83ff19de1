"""The SelectiveScan custom op for ONNX Runtime on a CPU, served through onnxruntime-extensions.

Torch-free (numpy, onnxruntime, onnxruntime-extensions), so the runtime can use it too:

    from mmad.plugins.selective_scan.onnxruntime_op import inference_session
    session = inference_session("model.onnx")          # works for custom-op and portable graphs

or, with options of its own:

    options = session_options_with_custom_ops(onnxruntime.SessionOptions())
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

The op (its contract: README.md beside this file) is registered as a Python op of onnxruntime-extensions in
the domain ai.onnx.contrib; its kernel is the project's C++ scan (mmad.plugins.selective_scan.cpu,
numpy in and out; the state is float32). Inputs are declared float32, which is what every graph
written by mmad.export feeds it (the FP16 graph keeps the scan in float32 behind casts).

Per call, onnxruntime-extensions copies each input into a new numpy array and hands the op's result back
through its invocation hook, whose stock version turns the output into a Python list of floats
(`tolist()`): ~120 ms for one [1, 256, 1024] scan that itself takes 6 ms. `register_selective_scan_op` puts
a hook in front of it that returns the numpy array as it is (the extension copies its buffer with one
memcpy) and passes every other Python op to the stock hook. onnxruntime's C/C++ headers are not installed
with its wheel, so a native custom-op library (no Python, no copies) is not built here; the OpenVINO
extension is the native CPU path.

Threads: the scan runs on the thread onnxruntime calls the node from, with `scan_threads` OpenMP threads
(session_options_with_custom_ops; default: the session's intra-op thread count). Its own threads and
onnxruntime's pool take turns rather than overlap, because onnxruntime runs one node at a time here and its
pool is told not to spin between nodes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from mmad.runtime.contract import SCAN_ATTR_SOFTPLUS, SCAN_INPUTS, SCAN_OP_TYPE

log = logging.getLogger(__name__)
_registered = False
_lock = threading.Lock()
_scan_threads = 1  # OpenMP threads of the scan: set by session_options_with_custom_ops, read at each call


class CustomOpUnavailable(ImportError):
    """onnxruntime-extensions (or the C++ scan it calls) is missing."""


def scan_cpu_module() -> ModuleType:
    """mmad.plugins.selective_scan.cpu: the C++ scan's torch-free numpy binding."""
    from mmad.plugins.selective_scan import cpu

    return cpu


def _extensions():
    try:
        import onnxruntime_extensions
    except ImportError:
        raise CustomOpUnavailable(
            f"running a graph with the {SCAN_OP_TYPE} custom op in onnxruntime needs onnxruntime-extensions: "
            "pip install onnxruntime-extensions (or use the portable graph)"
        ) from None
    return onnxruntime_extensions


def _scan_node(cpu: ModuleType) -> Callable[..., np.ndarray]:
    """The node's kernel: the seven inputs (float32 numpy arrays) and the node's attributes -> y."""

    def selective_scan(u, delta, A, B, C, D, delta_bias, **attrs):
        softplus = bool(int(attrs.get(SCAN_ATTR_SOFTPLUS, 1)))
        return cpu.scan_forward(u, delta, A, B, C, D, delta_bias, delta_softplus=softplus, n_threads=_scan_threads)

    return selective_scan


def _install_array_hook(ext: ModuleType, op_id: int, kernel: Callable[..., np.ndarray]) -> bool:
    """Answer the extension's calls of op `op_id` with the output array itself (no tolist()); other ops go
    to the hook that was installed before. False (nothing changed) where this extension has no such hook."""
    stock = getattr(getattr(ext, "_ocos", None), "_on_pyop_invocation", None)
    if stock is None:
        return False

    def invoke(k_id, feed, attributes):
        if k_id != op_id:
            return stock(k_id, feed, attributes)
        y = np.ascontiguousarray(kernel(*feed, **attributes))  # older extensions copy its buffer as it lies
        return k_id, y.shape, y

    ext.PyCustomOpDef.install_hooker(invoke)
    return True


def register_selective_scan_op() -> None:
    """Register SelectiveScan as an onnxruntime-extensions Python op (once per process)."""
    global _registered
    with _lock:
        if _registered:
            return
        ext = _extensions()
        cpu = scan_cpu_module()
        try:
            cpu.load_library()  # fail here, with the compiler's message, rather than inside a session run
        except cpu.ScanBuildError as err:
            raise CustomOpUnavailable(f"the {SCAN_OP_TYPE} op's C++ kernel is not available: {err}") from None
        f32, def_ = ext.PyCustomOpDef.dt_float, ext.PyCustomOpDef
        kernel = _scan_node(cpu)
        opdef = ext.onnx_op(
            op_type=SCAN_OP_TYPE,
            inputs=[f32] * len(SCAN_INPUTS),
            outputs=[f32],
            attrs={
                SCAN_ATTR_SOFTPLUS: def_.dt_int64,
                "plugin_namespace": def_.dt_string,
                "plugin_version": def_.dt_string,
            },
        )(kernel)
        if not _install_array_hook(ext, opdef._nativedef.obj_id, kernel):
            log.warning("onnxruntime-extensions has no invocation hook to replace: scan outputs go through a list")
        _registered = True


def set_scan_threads(threads: int) -> None:
    """OpenMP threads of every later SelectiveScan call in this process (the op is registered process-wide)."""
    global _scan_threads
    _scan_threads = max(1, int(threads))


def session_options_with_custom_ops(options=None, scan_threads: int | None = None):
    """`options` (a new onnxruntime.SessionOptions when None) with the SelectiveScan op registered.

    scan_threads: OpenMP threads of the scan (default: the options' intra_op_num_threads, else the CPUs this
    process may use). The session's pool is told not to spin after a node, so that the scan's threads find
    the cores idle.
    """
    import onnxruntime as ort

    register_selective_scan_op()
    options = options if options is not None else ort.SessionOptions()
    set_scan_threads(scan_threads or options.intra_op_num_threads or scan_cpu_module().default_threads())
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.register_custom_ops_library(_extensions().get_library_path())
    return options


def inference_session(
    path: str | Path,
    *,
    custom_ops: bool = True,
    threads: int = 0,
    optimize: bool = True,
    providers: list[str] | None = None,
):
    """An onnxruntime InferenceSession on the CPU (or `providers`) for an exported graph.

    custom_ops: register the SelectiveScan op (needed for custom-op graphs, harmless otherwise).
    threads: intra-op threads (0: onnxruntime's default). optimize: False disables graph optimisations.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if custom_ops:
        options = session_options_with_custom_ops(options)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])

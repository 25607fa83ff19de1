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
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import ModuleType

from mmad.runtime.contract import SCAN_ATTR_SOFTPLUS, SCAN_INPUTS, SCAN_OP_TYPE

_registered = False
_lock = threading.Lock()


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

        def selective_scan(u, delta, A, B, C, D, delta_bias, **attrs):
            softplus = bool(int(attrs.get(SCAN_ATTR_SOFTPLUS, 1)))
            return cpu.scan_forward(u, delta, A, B, C, D, delta_bias, delta_softplus=softplus)

        ext.onnx_op(
            op_type=SCAN_OP_TYPE,
            inputs=[f32] * len(SCAN_INPUTS),
            outputs=[f32],
            attrs={
                SCAN_ATTR_SOFTPLUS: def_.dt_int64,
                "plugin_namespace": def_.dt_string,
                "plugin_version": def_.dt_string,
            },
        )(selective_scan)
        _registered = True


def session_options_with_custom_ops(options=None):
    """`options` (a new onnxruntime.SessionOptions when None) with the SelectiveScan op registered."""
    import onnxruntime as ort

    register_selective_scan_op()
    options = options if options is not None else ort.SessionOptions()
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

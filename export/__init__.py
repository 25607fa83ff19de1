"""Export: a training checkpoint -> ONNX (custom-op or portable; FP32, FP16, INT8) -> TensorRT engine.

Scripts (thin shells over typed configs; also `mmad export onnx|trt|verify|precisions`):
    to_onnx.py              checkpoint -> ONNX
    to_trt.py               ONNX -> TensorRT engine + JSON sidecar
    verify.py               PyTorch vs the exported graphs on test images
    evaluate_precisions.py  PyTorch / FP32 / FP16 / INT8 accuracy table on a CPU
    bench_portable.py       portable vs custom-op speed in onnxruntime

Modules:
    cli.py           mounts the scripts as `mmad export …` (light: argparse only)
    command.py       what the commands share: ExportError, defaults, options, EngineRequest, Script (light)
    onnx_export.py   tracing (torch), metadata, build_onnx()
    scan_routing.py  routes a model's scans to the SelectiveScan ONNX node (torch)
    portable.py      SelectiveScan nodes -> standard ONNX ops (torch-free)
    simplify.py      folds the traced shape arithmetic (torch-free)
    precision.py     FP16 conversion, INT8 Q/DQ calibration (torch-free but for the data loader)
    onnx_graph.py    loading, checking, metadata through the contract (torch-free)
    trt_engine.py    the TensorRT 10.x / 11.x build and the engine's sidecar (torch-free)

The op itself (its ONNX node, its onnxruntime kernel) is mmad.plugins.selective_scan's; loading the
TensorRT plugin library is mmad.runtime.backends.tensorrt_plugin's. This package's __init__ imports
nothing, so `mmad` and a torch-free machine can import its light modules.
"""

"""Export: a training checkpoint -> ONNX (custom-op or portable; FP32, FP16, INT8) -> TensorRT engine.

Scripts (thin argparse shells, also `mmad export onnx|trt|verify|precisions`):
    to_onnx.py              checkpoint -> ONNX
    to_trt.py               ONNX -> TensorRT engine + JSON sidecar
    verify.py               PyTorch vs the exported graphs on test images
    evaluate_precisions.py  PyTorch / FP32 / FP16 / INT8 accuracy table on a CPU
    bench_portable.py       portable vs custom-op speed in onnxruntime

Modules:
    onnx_export.py   tracing (torch), metadata, build_onnx()
    scan_routing.py  routes a model's scans to the SelectiveScan ONNX node (torch)
    portable.py      SelectiveScan nodes -> standard ONNX ops (torch-free)
    simplify.py      folds the traced shape arithmetic (torch-free)
    precision.py     FP16 conversion, INT8 Q/DQ calibration (torch-free but for the data loader)
    onnx_graph.py    loading, checking, metadata (torch-free)
    ort_ops.py       the SelectiveScan op for onnxruntime via onnxruntime-extensions (torch-free: the
                     runtime uses it)
    trt_engine.py    the TensorRT 10.x / 11.x build (torch-free)

This package's __init__ imports nothing, so the runtime can import mmad.plugins.selective_scan.onnxruntime_op without torch.
"""

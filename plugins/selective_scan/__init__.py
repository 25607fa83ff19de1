"""The selective scan (Mamba S6), one home for the op: its contract is README.md beside this file.

Python (torch-free unless marked):
    op.py              the public op `selective_scan(...)`: autograd, backend dispatch (torch)
    reference.py       the plain PyTorch loop every other path is tested against (torch)
    cpu.py             the C++ CPU kernel's numpy/ctypes binding, built with CMake on first use
    cuda.py            the CUDA kernel's ctypes binding on PyTorch CUDA tensors (torch)
    onnx_node.py       the op as one SelectiveScan ONNX node for torch.onnx.export (torch)
    onnxruntime_op.py  the op in onnxruntime on a CPU, via onnxruntime-extensions
    openvino_ext.py    the OpenVINO extension: built with CMake against the openvino wheel on first use, located
    build.py           the one CMake driver: configures and builds plugins/ (plugins/CMakeLists.txt)
    problems.py        MMAD's stage shapes, test and benchmark problems, the host harness's file protocol (torch)
    bench_cpu.py       C++ CPU kernel vs plain loop per MMAD stage shape (torch)
    bench_cuda.py      CUDA kernel per MMAD stage shape (torch, a CUDA GPU)

Native code (one CMake build: plugins/CMakeLists.txt, targets in CMakeLists.txt beside this file):
    native/cpu/        the C++ CPU forward and backward (mmad_selective_scan_cpu)
    native/cuda/       the CUDA kernel, its planner, C launcher (mmad_selective_scan) and host harness
    native/tensorrt/   the TensorRT IPluginV3 plugin (mmad_trt_plugins), its probe and testing/ stand-in
    native/openvino/   the OpenVINO op and its ONNX-frontend registration (mmad_openvino_extension)

The portable expansion of the op into standard ONNX ops is an export pass: mmad.export.portable.
Attributes load lazily, so `import mmad.plugins.selective_scan.cpu` does not import torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "selective_scan": "op",
    "resolve_backend": "op",
    "mamba_available": "op",
    "BACKENDS": "op",
    "selective_scan_ref": "reference",
    "check_shapes": "reference",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

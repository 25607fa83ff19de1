"""The native code of MMAD's custom op and its Python bindings.

    selective_scan/   the SelectiveScan op: its contract (README.md), its Python side (mmad.plugins.selective_scan)
                      and its native code (native/cpu, native/cuda, native/tensorrt)

The CMake project beside this file (CMakeLists.txt) builds every native piece of the op, in one build that
configures without a CUDA compiler. Nothing here imports torch at package import time, so the runtime can use
the torch-free parts (the C++ CPU kernel's binding, the onnxruntime custom op).
"""

"""The native code of MMAD's custom op and its Python bindings: mmad.plugins.selective_scan.

The CMake project beside this file (CMakeLists.txt) builds every native piece of the op; the
Python side is importable as `mmad.plugins.selective_scan.*`. Nothing here imports torch at package
import time, so the runtime can use the torch-free parts (the C++ CPU kernel's binding, the
onnxruntime custom op).
"""

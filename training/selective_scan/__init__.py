"""The selective scan (Mamba S6) of shared/docs/SELECTIVE_SCAN_OP.md: one home for the op.

    op.py                   the public op `selective_scan(...)`: autograd, backend dispatch
    reference.py            the plain PyTorch loop every other path is tested against
    cpu.py                  the C++ kernel's numpy/ctypes binding (torch-free: the runtime uses it)
    selective_scan_cpu.cpp  the C++ forward and backward
    bench.py                fast path vs plain loop, per MMAD stage shape

The CUDA kernel and the TensorRT plugin live in plugins/selective_scan/.

Attributes load lazily, so `import mmad.training.selective_scan.cpu` does not import torch.
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

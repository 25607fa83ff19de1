"""The selective scan (Mamba S6) of the op contract (README.md beside this file): the public op.

    selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=True, backend="auto") -> y

Shapes (https://arxiv.org/abs/2312.00752):
    u, delta      [B, D, L]      float16 / float32 / float64 (bfloat16 is treated like float16)
    A             [D, N]         float32 (real, negative in trained models)
    B, C          [B, G, N, L]   like u; channel d uses group g = d // (D // G)
    D, delta_bias [D]            float32
    y             [B, D, L]      dtype of u

Backends:
    "mamba"      mamba-ssm's CUDA `selective_scan_fn` (CUDA tensors; optional extra `mmad-edge[mamba]`)
    "cpu"        the C++ loop of native/cpu/selective_scan_cpu.cpp (CPU tensors; needs a C++ compiler and CMake once)
    "reference"  the plain PyTorch loop of reference.py (any device; slow)
    "auto"       mamba on CUDA when it imports, else cpu on CPU when it builds, else reference
    a callable   called as backend(u, delta, A, B, C, D, delta_bias, delta_softplus=...) after the checks
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from mmad.plugins.selective_scan import cpu
from mmad.plugins.selective_scan.reference import check_shapes, selective_scan_ref
from mmad.runtime.contract import SCAN_INPUTS

__all__ = ["BACKENDS", "mamba_available", "resolve_backend", "selective_scan", "selective_scan_ref"]

BACKENDS = ("auto", "cpu", "reference", "mamba")
_IO_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

log = logging.getLogger(__name__)
_warned_slow = False


@functools.lru_cache(maxsize=None)
def _mamba_scan_fn() -> Callable | None:
    """mamba-ssm's selective_scan_fn, imported on first need; None when it or its CUDA part is missing."""
    try:
        module = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception as exc:  # an ImportError, or an OSError from a CUDA extension built for another torch
        log.debug("mamba_ssm unavailable: %s", exc)
        return None
    # Recent mamba-ssm imports without its CUDA extension and only fails when called.
    if getattr(module, "selective_scan_cuda", True) is None:
        return None
    return getattr(module, "selective_scan_fn", None)


def mamba_available() -> bool:
    return _mamba_scan_fn() is not None


def _warn_slow_once(reason: str) -> None:
    global _warned_slow
    if not _warned_slow:
        _warned_slow = True
        log.warning("selective_scan: using the slow PyTorch reference loop (%s)", reason)


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend that `backend` means for tensors on `device`: "mamba", "cpu" or "reference".

    Raises ValueError for an unknown name or a backend that cannot take that device, and
    cpu.ScanBuildError / ImportError when an explicitly requested backend is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: backend must be one of {BACKENDS} or a callable, got {backend!r}")
    kind = torch.device(device).type
    if backend == "reference":
        return backend
    if backend == "mamba":
        if kind != "cuda":
            raise ValueError(f"selective_scan: backend='mamba' needs CUDA tensors, got {device}")
        if not mamba_available():
            raise ImportError(
                "selective_scan: backend='mamba' needs mamba-ssm with its CUDA extension "
                "(pip install 'mmad-edge[mamba]')"
            )
        return backend
    if backend == "cpu":
        if kind != "cpu":
            raise ValueError(f"selective_scan: backend='cpu' needs CPU tensors, got {device}")
        cpu.load_library()  # raises ScanBuildError with the compiler's message
        return backend
    if kind == "cuda" and mamba_available():
        return "mamba"
    if kind == "cpu" and cpu.is_available():
        return "cpu"
    reason = (
        "mamba-ssm not available" if kind == "cuda" else cpu.unavailable_reason() or f"no fast path for {kind} tensors"
    )
    _warn_slow_once(reason)
    return "reference"


def _check_inputs(tensors: tuple[torch.Tensor, ...]) -> None:
    device = tensors[0].device
    for name, t in zip(SCAN_INPUTS, tensors):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != device:
            raise ValueError(f"selective_scan: {name} is on {t.device} but u is on {device}")
    if tensors[0].dtype not in _IO_DTYPES:
        raise ValueError(f"selective_scan: u must be float16, float32 or float64, got {tensors[0].dtype}")


def _to_numpy(t: torch.Tensor, dtype: torch.dtype):
    return t.detach().to(dtype).contiguous().numpy()


class _CpuScan(torch.autograd.Function):
    """The C++ forward and backward; computes in float64 for float64 u and in float32 otherwise."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus: bool, n_threads: int):
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        ctx.delta_softplus, ctx.n_threads = delta_softplus, n_threads
        acc = torch.float64 if u.dtype == torch.float64 else torch.float32
        arrays = [_to_numpy(t, acc) for t in (u, delta, A, B, C, D, delta_bias)]
        y = cpu.scan_forward(*arrays, delta_softplus=delta_softplus, n_threads=n_threads)
        return torch.from_numpy(y).to(u.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        inputs = ctx.saved_tensors
        acc = torch.float64 if inputs[0].dtype == torch.float64 else torch.float32
        arrays = [_to_numpy(t, acc) for t in inputs]
        grads = cpu.scan_backward(
            *arrays, _to_numpy(dy, acc), delta_softplus=ctx.delta_softplus, n_threads=ctx.n_threads
        )
        return (*(torch.from_numpy(g).to(t.dtype) for g, t in zip(grads, inputs)), None, None)


def selective_scan(
    u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True, backend: str = "auto", n_threads: int | None = None
) -> torch.Tensor:
    """y [B, D, L] of the selective scan (shapes in the module docstring), differentiable.

    n_threads: OpenMP threads of the "cpu" backend (default torch.get_num_threads()).
    backend may also be a callable f(u, delta, A, B, C, D, delta_bias, delta_softplus=bool) -> y:
    export routes the scan through one that traces to its ONNX form (mmad.export.scan_routing).
    """
    tensors = (u, delta, A, B, C, D, delta_bias)
    _check_inputs(tensors)
    check_shapes(*tensors)
    if callable(backend):  # export's hook: a function that emits the ONNX node or standard ops
        return backend(*tensors, delta_softplus=bool(delta_softplus))
    chosen = resolve_backend(backend, u.device)
    if chosen == "mamba":
        return _mamba_scan_fn()(
            u,
            delta,
            A,
            B,
            C,
            D,
            z=None,
            delta_bias=delta_bias,
            delta_softplus=bool(delta_softplus),
            return_last_state=False,
        )
    if chosen == "cpu":
        return _CpuScan.apply(*tensors, bool(delta_softplus), int(n_threads or torch.get_num_threads()))
    return selective_scan_ref(*tensors, delta_softplus=bool(delta_softplus))

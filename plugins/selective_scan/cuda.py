"""The selective-scan CUDA kernel on any CUDA GPU, without TensorRT: ctypes over libmmad_selective_scan.so
(native/cuda/selective_scan_capi.cpp), i.e. the very launcher the TensorRT plugin calls, fed with PyTorch CUDA tensors.

    lib = ScanLibrary(build_dir / "selective_scan" / "libmmad_selective_scan.so")
    y = selective_scan_cuda(lib, u, delta, A, B, C, D, delta_bias, delta_softplus=True)

Shapes (the op contract, README.md beside this file): u, delta [B, D, L] float32/float16 on one CUDA device;
A [D, N] float32; B, C [B, G, N, L] like u; D, delta_bias [D] float32. Returns y [B, D, L] like u.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import torch


class ScanParams(ctypes.Structure):
    """Mirror of mmad::scan::SelectiveScanParams (native/cuda/selective_scan.h); checked against the library on load."""

    _fields_ = [
        ("batch", ctypes.c_int32),
        ("dim", ctypes.c_int32),
        ("seqlen", ctypes.c_int32),
        ("dstate", ctypes.c_int32),
        ("ngroups", ctypes.c_int32),
        ("delta_softplus", ctypes.c_int32),
        ("io_dtype", ctypes.c_int32),
        ("chunk_len", ctypes.c_int32),
        ("num_sms", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("u", ctypes.c_void_p),
        ("delta", ctypes.c_void_p),
        ("A", ctypes.c_void_p),
        ("Bmat", ctypes.c_void_p),
        ("Cmat", ctypes.c_void_p),
        ("Dskip", ctypes.c_void_p),
        ("delta_bias", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_size_t),
    ]


IO_DTYPES = {torch.float32: 0, torch.float16: 1}


class ScanLibrary:
    """libmmad_selective_scan.so loaded with ctypes; the struct layout is verified field by field."""

    def __init__(self, path: Path | str):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"selective-scan library not found: {path} (build target mmad_selective_scan)")
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        lib = self._lib
        lib.mmad_selective_scan_params_size.restype = ctypes.c_int32
        lib.mmad_selective_scan_params_offset.restype = ctypes.c_int64
        lib.mmad_selective_scan_params_offset.argtypes = [ctypes.c_char_p]
        lib.mmad_selective_scan_check.restype = ctypes.c_char_p
        lib.mmad_selective_scan_check.argtypes = [ctypes.POINTER(ScanParams)]
        lib.mmad_selective_scan_workspace_size.restype = ctypes.c_size_t
        lib.mmad_selective_scan_workspace_size.argtypes = [ctypes.POINTER(ScanParams)]
        lib.mmad_selective_scan_launch.restype = ctypes.c_int32
        lib.mmad_selective_scan_launch.argtypes = [ctypes.POINTER(ScanParams), ctypes.c_void_p]
        lib.mmad_selective_scan_layout.restype = ctypes.c_int32
        lib.mmad_selective_scan_layout.argtypes = [ctypes.POINTER(ScanParams), ctypes.POINTER(ctypes.c_int32)]
        lib.mmad_selective_scan_error_string.restype = ctypes.c_char_p
        lib.mmad_selective_scan_error_string.argtypes = [ctypes.c_int32]
        self._verify_layout()

    def _verify_layout(self) -> None:
        size = self._lib.mmad_selective_scan_params_size()
        if size != ctypes.sizeof(ScanParams):
            raise RuntimeError(
                f"{self.path}: SelectiveScanParams is {size} bytes, the ctypes mirror "
                f"{ctypes.sizeof(ScanParams)}: rebuild the library"
            )
        for name, _ in ScanParams._fields_:
            offset = self._lib.mmad_selective_scan_params_offset(name.encode())
            if offset != getattr(ScanParams, name).offset:
                raise RuntimeError(
                    f"{self.path}: field {name} at offset {offset}, the ctypes mirror has "
                    f"{getattr(ScanParams, name).offset}: rebuild the library"
                )

    def check(self, params: ScanParams) -> str | None:
        """None when the launcher accepts params, else its reason."""
        msg = self._lib.mmad_selective_scan_check(ctypes.byref(params))
        return msg.decode() if msg else None

    def workspace_size(self, params: ScanParams) -> int:
        return int(self._lib.mmad_selective_scan_workspace_size(ctypes.byref(params)))

    def layout(self, params: ScanParams) -> dict[str, int]:
        """How a launch of params is cut up (chunk_len, nchunks, block_channels, channel_tiles)."""
        out = (ctypes.c_int32 * 4)()
        if self._lib.mmad_selective_scan_layout(ctypes.byref(params), out) != 0:
            raise ValueError(self.check(params) or "selective_scan: cannot plan this launch")
        return dict(zip(("chunk_len", "nchunks", "block_channels", "channel_tiles"), out))

    def launch(self, params: ScanParams, stream: int) -> int:
        """Returns the cudaError_t code (0 = success)."""
        return int(self._lib.mmad_selective_scan_launch(ctypes.byref(params), ctypes.c_void_p(stream)))

    def error_string(self, code: int) -> str:
        return self._lib.mmad_selective_scan_error_string(code).decode()


def make_params(
    u, delta, A, B, C, D, delta_bias, y, delta_softplus: bool = True, chunk_len: int = 0, num_sms: int = 0
) -> ScanParams:
    """Fill ScanParams from tensors (shapes read off u, A and B; the library checks the rest)."""
    if u.dim() != 3 or A.dim() != 2 or B.dim() != 4:
        raise ValueError(
            f"selective_scan_cuda: u must be [B, D, L], A [D, N], B [B, G, N, L]; got "
            f"{tuple(u.shape)}, {tuple(A.shape)}, {tuple(B.shape)}"
        )
    return ScanParams(
        batch=u.shape[0],
        dim=u.shape[1],
        seqlen=u.shape[2],
        dstate=A.shape[1],
        ngroups=B.shape[1],
        delta_softplus=int(delta_softplus),
        io_dtype=IO_DTYPES[u.dtype],
        chunk_len=chunk_len,
        num_sms=num_sms,
        u=u.data_ptr(),
        delta=delta.data_ptr(),
        A=A.data_ptr(),
        Bmat=B.data_ptr(),
        Cmat=C.data_ptr(),
        Dskip=D.data_ptr(),
        delta_bias=delta_bias.data_ptr(),
        y=y.data_ptr(),
    )


def _check_tensors(u, delta, A, B, C, D, delta_bias) -> None:
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "delta_bias": delta_bias}
    if u.dtype not in IO_DTYPES:
        raise ValueError(f"selective_scan_cuda: u must be float32 or float16, got {u.dtype}")
    for name, t in named.items():
        want = u.dtype if name in ("u", "delta", "B", "C") else torch.float32
        if t.dtype != want:
            raise ValueError(f"selective_scan_cuda: {name} must be {want}, got {t.dtype}")
        if not t.is_cuda or t.device != u.device:
            raise ValueError(f"selective_scan_cuda: {name} must be on u's CUDA device {u.device}, got {t.device}")
        if not t.is_contiguous():
            raise ValueError(f"selective_scan_cuda: {name} must be contiguous")
    expected = {"delta": tuple(u.shape), "C": tuple(B.shape), "D": (u.shape[1],), "delta_bias": (u.shape[1],)}
    for name, shape in expected.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"selective_scan_cuda: {name} must have shape {shape}, got {tuple(named[name].shape)}")


@dataclass
class PreparedScan:
    """One problem bound to its buffers: launch() runs the kernel again on the same inputs into y."""

    lib: ScanLibrary
    params: ScanParams
    y: torch.Tensor
    workspace: torch.Tensor | None
    inputs: tuple[torch.Tensor, ...]  # held so that the raw pointers in params stay valid

    def layout(self) -> dict[str, int]:
        return self.lib.layout(self.params)

    def launch(self) -> None:
        """Enqueue the kernel on PyTorch's current stream of y's device."""
        code = self.lib.launch(self.params, torch.cuda.current_stream(self.y.device).cuda_stream)
        if code != 0:
            raise RuntimeError(f"selective_scan_cuda: launch failed: {self.lib.error_string(code)} (cudaError {code})")


def prepare_scan(
    lib: ScanLibrary,
    u,
    delta,
    A,
    B,
    C,
    D,
    delta_bias,
    delta_softplus: bool = True,
    chunk_len: int = 0,
    num_sms: int = 0,
) -> PreparedScan:
    """Check the tensors, allocate y and the workspace, fill the parameters."""
    _check_tensors(u, delta, A, B, C, D, delta_bias)
    y = torch.empty_like(u)
    params = make_params(u, delta, A, B, C, D, delta_bias, y, delta_softplus, chunk_len, num_sms)
    problem = lib.check(params)
    if problem:
        raise ValueError(problem)
    with torch.cuda.device(u.device):
        nbytes = lib.workspace_size(params)
        workspace = torch.empty(nbytes, dtype=torch.uint8, device=u.device) if nbytes else None
    params.workspace = workspace.data_ptr() if workspace is not None else None
    params.workspace_bytes = nbytes
    return PreparedScan(lib, params, y, workspace, (u, delta, A, B, C, D, delta_bias))


def selective_scan_cuda(lib: ScanLibrary, u, delta, A, B, C, D, delta_bias, **options) -> torch.Tensor:
    """y = selective scan of the contract, computed by the CUDA kernel on the current stream.

    options: delta_softplus (default True), chunk_len (0: planned), num_sms (0: the device's), as prepare_scan.
    """
    scan = prepare_scan(lib, u, delta, A, B, C, D, delta_bias, **options)
    with torch.cuda.device(u.device):
        scan.launch()
    return scan.y

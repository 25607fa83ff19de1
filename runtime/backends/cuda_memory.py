"""Device memory for the TensorRT backend: a stream, device and pinned host buffers, async copies.

Two providers, tried in this order by cuda_memory():
  * Polygraphy (`polygraphy.cuda`, the TensorRT extra's dependency): loads the machine's own libcudart
    through ctypes, so it always matches the installed CUDA (JetPack 6: 12.6) with no version pin, and
    uses CUDA's runtime API, whose primary context is current on every thread (GStreamer's streaming
    thread included).
  * pycuda, where installed (many JetPack users have it): its driver-API context is current only on the
    thread that pushed it, so every call runs inside `current()`, which pushes the device's primary
    context on the calling thread and pops it afterwards.
Any failure of a provider (not only a missing module: a libcudart that cannot be loaded, a CUDA
runtime newer than the driver) is caught and the next one tried; ConfigError lists every reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging

import numpy as np

from mmad.runtime.errors import ConfigError

log = logging.getLogger(__name__)

# cudaDeviceAttr values (CUDA runtime API, stable since CUDA 5)
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76
_DEVICE_PROP_BYTES = 8192  # more than any CUDA's cudaDeviceProp; only its first field (char name[256]) is read


class CudaMemory:
    """The few CUDA calls the backend needs. Call them inside `with memory.current():`."""

    name = ""

    def current(self) -> contextlib.AbstractContextManager:
        """Makes this provider's CUDA context current on the calling thread for the `with` block."""
        return contextlib.nullcontext()

    def device_alloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        raise NotImplementedError

    def copy_to_device(self, device_ptr: int, host: np.ndarray) -> None:
        raise NotImplementedError

    def copy_to_host(self, host: np.ndarray, device_ptr: int) -> None:
        raise NotImplementedError

    @property
    def stream_handle(self) -> int:
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def device_facts(self) -> tuple[str, str]:
        """(GPU name, compute capability 'major.minor') of the current device."""
        raise NotImplementedError

    def close(self) -> None:
        """Free every buffer allocated through this object."""


class PolygraphyMemory(CudaMemory):
    """polygraphy.cuda: its libcudart wrapper, stream and device arrays. Polygraphy has no pinned host
    allocator and no device query, so cudaMallocHost/cudaFreeHost and the device's name and compute
    capability are called here on the libcudart it loaded (wrapper().handle)."""

    name = "polygraphy"

    def __init__(self) -> None:
        from polygraphy import cuda as pg_cuda

        self.pg = pg_cuda
        self.cudart = pg_cuda.wrapper().handle
        self.cudart.cudaGetErrorString.restype = ctypes.c_char_p
        self._h2d, self._d2h = pg_cuda.MemcpyKind.HostToDevice, pg_cuda.MemcpyKind.DeviceToHost
        self.device_facts()  # fails here, not at the first frame, when the runtime cannot reach a GPU
        self.stream = pg_cuda.Stream()
        self._device: list[object] = []
        self._pinned: list[int] = []

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            why = self.cudart.cudaGetErrorString(status).decode()
            raise RuntimeError(f"{what} failed: CUDA error {status} ({why})")

    def device_alloc(self, nbytes: int) -> int:
        array = self.pg.DeviceArray.raw((max(nbytes, 1),))
        self._device.append(array)  # kept alive here: freed by close()
        return int(array.ptr)

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape))
        nbytes = max(count * np.dtype(dtype).itemsize, 1)
        ptr = ctypes.c_void_p()
        self._check(self.cudart.cudaMallocHost(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), "cudaMallocHost")
        self._pinned.append(ptr.value)
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr.value)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def copy_to_device(self, device_ptr: int, host: np.ndarray) -> None:
        self.pg.wrapper().memcpy(device_ptr, host.ctypes.data, host.nbytes, self._h2d, self.stream.ptr)

    def copy_to_host(self, host: np.ndarray, device_ptr: int) -> None:
        self.pg.wrapper().memcpy(host.ctypes.data, device_ptr, host.nbytes, self._d2h, self.stream.ptr)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.ptr)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def device_facts(self) -> tuple[str, str]:
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        self._check(self.cudart.cudaGetDevice(ctypes.byref(device)), "cudaGetDevice")
        for value, attr in ((major, _ATTR_CC_MAJOR), (minor, _ATTR_CC_MINOR)):
            self._check(self.cudart.cudaDeviceGetAttribute(ctypes.byref(value), attr, device), "cudaDeviceGetAttribute")
        props = ctypes.create_string_buffer(_DEVICE_PROP_BYTES)
        get_props = getattr(self.cudart, "cudaGetDeviceProperties_v2", None) or self.cudart.cudaGetDeviceProperties
        self._check(get_props(props, device), "cudaGetDeviceProperties")
        return props.raw[:256].split(b"\0")[0].decode(errors="replace"), f"{major.value}.{minor.value}"

    def close(self) -> None:
        for array in self._device:
            array.free()
        for ptr in self._pinned:
            self.cudart.cudaFreeHost(ctypes.c_void_p(ptr))
        self._device.clear()
        self._pinned.clear()
        if self.stream is not None:
            self.stream.free()
            self.stream = None


class PyCudaMemory(CudaMemory):
    """pycuda, on the device's primary context (the one TensorRT's runtime API uses), made current on
    whichever thread calls (see current())."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.context = cuda.Device(0).retain_primary_context()
        self._device_buffers: list[object] = []
        with self.current():
            self.stream = cuda.Stream()

    @contextlib.contextmanager
    def current(self):
        self.context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def device_alloc(self, nbytes: int) -> int:
        buf = self.cuda.mem_alloc(max(nbytes, 1))
        self._device_buffers.append(buf)  # kept alive here: freed when this object drops them
        return int(buf)

    def pinned_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def copy_to_device(self, device_ptr: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(device_ptr, host, self.stream)

    def copy_to_host(self, host: np.ndarray, device_ptr: int) -> None:
        self.cuda.memcpy_dtoh_async(host, device_ptr, self.stream)

    @property
    def stream_handle(self) -> int:
        return self.stream.handle

    def synchronize(self) -> None:
        self.stream.synchronize()

    def device_facts(self) -> tuple[str, str]:
        device = self.cuda.Context.get_device()
        major, minor = device.compute_capability()
        return device.name(), f"{major}.{minor}"

    def close(self) -> None:
        with self.current():
            for buf in self._device_buffers:
                buf.free()
        self._device_buffers.clear()


PROVIDERS: tuple[type[CudaMemory], ...] = (PolygraphyMemory, PyCudaMemory)


def cuda_memory() -> CudaMemory:
    """The first provider of PROVIDERS that starts; ConfigError with every provider's reason when none does."""
    reasons = []
    for provider in PROVIDERS:
        try:
            memory = provider()
        except Exception as err:  # noqa: BLE001 -- any failure (import, libcudart, driver) means: try the next
            reasons.append(f"{provider.name}: {type(err).__name__}: {err}")
            continue
        if reasons:
            log.warning("device memory through %s (%s)", provider.name, "; ".join(reasons))
        return memory
    raise ConfigError(
        "the TensorRT backend cannot reach the GPU's memory: "
        + "; ".join(reasons)
        + ". Install the TensorRT extra (pip install '.[tensorrt]': Polygraphy, which loads this machine's "
        "libcudart) or pycuda, and check that the CUDA runtime (libcudart.so) is on the loader's path"
    )

"""Stand-ins for TensorRT, the CUDA runtime (libcudart) and pycuda that behave as those libraries document,
refusals included, and the tests that hold them to it. Other TensorRT tests import them from here:

    FakeTensorRT       the `tensorrt` module: an IPluginRegistry (load_library returns None when a creator of the
                       library is registered already; get_creator finds IPluginV3 creators by name, version and
                       namespace, the deprecated get_plugin_creator does not), a Runtime whose deserialisation fails
                       for an engine whose plugin creator is not registered and for one carrying its own plugin
                       library (engine host code is refused by default), and an engine that runs the synthetic model
                       on the device memory it is given
    plugin_library()   a file standing in for a plugin library: the libnvinfer.so.<major> it was built for and the
                       creators its getCreators returns
    fake_cudart()      a libcudart.so.12 (C, built here) on host memory: device allocations are tracked and a copy
                       whose direction does not match its pointers, or an unknown stream, is refused as CUDA does;
                       $FAKE_CUDART_ERROR=<code> makes every call return that error (35: a runtime newer than the
                       driver, what a CUDA 13 build gives on JetPack 6)
    FakePyCuda         pycuda.driver: a context is current only on the thread that pushed it, and every call that
                       needs one fails without it ("invalid device context"), as CUDA's driver API does

`python tests/runtime/bench_tensorrt_overhead.py` times the TensorRT backend's own Python on these stand-ins.
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from mmad.runtime.synthetic import synthetic_reference

SCAN = ("SelectiveScan", "1", "mmad")


# --- TensorRT ----------------------------------------------------------------------------------------------
def plugin_library(path: Path, major: int = 10, creators=(SCAN,)) -> Path:
    """A file standing in for a plugin library: the soname of the libnvinfer it was built for (in its read-only
    data, as in the real one) and the creators its getCreators returns."""
    names = b"".join(b"creator:%s/%s/%s\0" % tuple(p.encode() for p in c) for c in creators)
    path.write_bytes(b"\x7fELF\0rodata\0libnvinfer.so.%d\0" % major + names)
    return path


class PluginRegistry:
    """IPluginRegistry as NvInferRuntimeCommon.h (TensorRT 10) documents it."""

    def __init__(self, log: list[str]):
        self.creators: dict[tuple[str, str, str], str] = {}  # (name, version, namespace) -> library path
        self.loaded: list[str] = []
        self.log = log

    def load_library(self, path: str):
        """Registers every creator of the library; None (and an error in the log) when the library cannot be
        opened, has no creators, or "any of the plugins are already registered"."""
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            self.log.append(f"ERROR: cannot open {path}: {err}")
            return None
        found = [tuple(p.decode() for p in m) for m in re.findall(rb"creator:([^/\0]+)/([^/\0]+)/([^\0]*)\0", data)]
        if not found:
            self.log.append(f"ERROR: {path}: no getCreators")
            return None
        if any(c in self.creators for c in found):
            self.log.append(f"ERROR: {path}: a plugin creator of this library is already registered")
            return None
        self.creators.update({c: path for c in found})
        self.loaded.append(path)
        return types.SimpleNamespace(path=path)

    def get_creator(self, name: str, version: str, namespace: str = ""):
        path = self.creators.get((name, version, namespace))
        return None if path is None else types.SimpleNamespace(name=name, library=path)

    def get_plugin_creator(self, name: str, version: str, namespace: str = ""):
        return None  # deprecated in 10.0: returns nullptr for a creator that is not an IPluginCreator (V2)


def engine_bytes(size: int, max_batch: int, plugins=(SCAN,), serialized_library: str | None = None) -> bytes:
    """A stand-in engine: the plugins its layers use, and the library it carries (setPluginsToSerialize)."""
    desc = {"standin_engine": 1, "size": size, "max_batch": max_batch, "plugins": [list(p) for p in plugins]}
    return json.dumps({**desc, "serialized_library": serialized_library}).encode()


class FakeTensorRT(types.SimpleNamespace):
    """The tensorrt module. `memory` reads and writes device pointers: read(ptr, nbytes) -> bytes, write(ptr, data)."""

    def __init__(self, memory, version: str = "10.3.0.26"):
        log: list[str] = []
        registry = PluginRegistry(log)
        super().__init__(__version__=version, log=log, registry=registry, memory=memory)
        self.get_plugin_registry = lambda: registry
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
        self.nptype = lambda dtype: dtype
        self.init_libnvinfer_plugins = lambda logger, namespace: True
        self.Runtime = lambda logger: FakeRuntime(self)


class FakeRuntime:
    def __init__(self, trt: FakeTensorRT):
        self.trt = trt
        self.engine_host_code_allowed = False  # IRuntime::setEngineHostCodeAllowed: "The default value is false."

    def deserialize_cuda_engine(self, data: bytes):
        try:
            desc = json.loads(data)
            assert desc["standin_engine"] == 1
        except (ValueError, KeyError, AssertionError, TypeError):
            self.trt.log.append("ERROR: the file is not a serialized engine")
            return None
        if desc["serialized_library"]:
            if not self.engine_host_code_allowed:
                self.trt.log.append("ERROR: engine carries plugin host code, which this runtime does not allow")
                return None
            if self.trt.registry.load_library(desc["serialized_library"]) is None:
                return None  # "creator exists already"
        for plugin in map(tuple, desc["plugins"]):
            if self.trt.registry.get_creator(*plugin) is None:
                self.trt.log.append(f"ERROR: plugin creator not found: {plugin}")
                return None
        return FakeEngine(self.trt.memory, desc["size"], desc["max_batch"])


class FakeEngine:
    """The synthetic model (mmad.runtime.synthetic) with a dynamic batch up to max_batch."""

    num_io_tensors = 3
    DTYPES = {"image": np.uint8, "anomaly_map": np.float32, "score": np.float32}

    def __init__(self, memory, size: int, max_batch: int):
        self.memory, self.size, self.max_batch = memory, size, max_batch
        self.shapes = {"image": (-1, size, size, 3), "anomaly_map": (-1, 1, size, size), "score": (-1,)}

    def get_tensor_name(self, i):
        return list(self.shapes)[i]

    def get_tensor_mode(self, name):
        return "in" if name == "image" else "out"

    def get_tensor_dtype(self, name):
        return self.DTYPES[name]

    def get_tensor_shape(self, name):
        return self.shapes[name]

    def get_tensor_profile_shape(self, name, profile):
        return [(1, self.size, self.size, 3), (1, self.size, self.size, 3), (self.max_batch, self.size, self.size, 3)]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine, self.addresses, self.batch, self.streams = engine, {}, None, []

    def set_input_shape(self, name, shape):
        e = self.engine
        if name != "image" or tuple(shape[1:]) != (e.size, e.size, 3) or not 1 <= shape[0] <= e.max_batch:
            return False  # TensorRT returns false for a shape outside the profile
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, name):
        return (self.batch,) + self.engine.shapes[name][1:]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream):
        self.streams.append(stream)
        n, size, memory = self.batch, self.engine.size, self.engine.memory
        raw = memory.read(self.addresses["image"], n * size * size * 3)
        maps, scores = synthetic_reference(np.frombuffer(raw, np.uint8).reshape(n, size, size, 3))
        memory.write(self.addresses["anomaly_map"], maps.astype(np.float32).tobytes())
        memory.write(self.addresses["score"], scores.astype(np.float32).tobytes())
        return True


class HostPointers:
    """Device pointers that are host addresses (fake_cudart's): read and written in place."""

    @staticmethod
    def read(ptr: int, nbytes: int) -> bytes:
        return ctypes.string_at(ptr, nbytes)

    @staticmethod
    def write(ptr: int, data: bytes) -> None:
        ctypes.memmove(ptr, data, len(data))


# --- libcudart ---------------------------------------------------------------------------------------------
FAKE_CUDART_C = r"""
#include <stdlib.h>
#include <string.h>
enum { OK = 0, INVALID_VALUE = 1, INVALID_DEVICE_POINTER = 17, INVALID_HANDLE = 400 };
#define MAXN 4096
static void* dev[MAXN]; static size_t devn[MAXN]; static void* streams[64];
static int forced(void) { const char* e = getenv("FAKE_CUDART_ERROR"); return e ? atoi(e) : 0; }
static int on_device(const void* p, size_t n) {
    for (int i = 0; i < MAXN; ++i)
        if (dev[i] && (const char*)p >= (char*)dev[i] && (const char*)p + n <= (char*)dev[i] + devn[i]) return 1;
    return 0;
}
static int known_stream(void* s) { for (int i = 0; i < 64; ++i) if (s && streams[i] == s) return 1; return s == 0; }
int cudaGetDevice(int* d) { if (forced()) return forced(); *d = 0; return OK; }
int cudaDeviceGetAttribute(int* v, int attr, int d) {
    if (forced()) return forced();
    if (d != 0) return 101;
    *v = attr == 75 ? 8 : attr == 76 ? 7 : attr == 16 ? 16 : 0; return OK;
}
int cudaGetDeviceProperties_v2(char* p, int d) { if (forced()) return forced(); strcpy(p, "Fake Orin"); return OK; }
const char* cudaGetErrorString(int e) {
    return e == 35 ? "CUDA driver version is insufficient for CUDA runtime version" : "fake error";
}
int cudaMalloc(void** p, size_t n) {
    if (forced()) return forced();
    for (int i = 0; i < MAXN; ++i) if (!dev[i]) { dev[i] = calloc(1, n); devn[i] = n; *p = dev[i]; return OK; }
    return 2;
}
int cudaFree(void* p) {
    if (!p) return OK;
    for (int i = 0; i < MAXN; ++i) if (dev[i] == p) { free(p); dev[i] = 0; return OK; }
    return INVALID_DEVICE_POINTER;
}
int cudaMallocHost(void** p, size_t n) { if (forced()) return forced(); *p = calloc(1, n); return OK; }
int cudaFreeHost(void* p) { free(p); return OK; }
int cudaStreamCreate(void** s) {
    if (forced()) return forced();
    for (int i = 0; i < 64; ++i) if (!streams[i]) { streams[i] = malloc(1); *s = streams[i]; return OK; }
    return 2;
}
int cudaStreamDestroy(void* s) {
    for (int i = 0; i < 64; ++i) if (s && streams[i] == s) { free(s); streams[i] = 0; return OK; }
    return INVALID_HANDLE;
}
int cudaStreamSynchronize(void* s) { return known_stream(s) ? OK : INVALID_HANDLE; }
int cudaMemcpyAsync(void* dst, const void* src, size_t n, int kind, void* s) {
    if (!known_stream(s)) return INVALID_HANDLE;
    int wrong_h2d = kind == 1 && (!on_device(dst, n) || on_device(src, n));
    int wrong_d2h = kind == 2 && (!on_device(src, n) || on_device(dst, n));
    if (wrong_h2d || wrong_d2h) return INVALID_VALUE;
    memcpy(dst, src, n); return OK;
}
int cudaMemcpy(void* dst, const void* src, size_t n, int kind) { return cudaMemcpyAsync(dst, src, n, kind, 0); }
"""


def build_fake_cudart(folder: Path) -> Path:
    """Compile FAKE_CUDART_C into folder/libcudart.so.12 (what Polygraphy looks for on LD_LIBRARY_PATH)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the libcudart stand-in")
    source = folder / "fake_cudart.c"
    source.write_text(FAKE_CUDART_C)
    lib = folder / "libcudart.so.12"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(lib), str(source)], check=True)
    return lib


@pytest.fixture(scope="session")
def fake_cudart(tmp_path_factory) -> Path:
    return build_fake_cudart(tmp_path_factory.mktemp("cudart"))


def use_fake_cudart(monkeypatch, lib: Path) -> None:
    """Make Polygraphy load `lib` as the CUDA runtime (it searches $LD_LIBRARY_PATH first, once per process)."""
    polygraphy_cuda = pytest.importorskip("polygraphy.cuda.cuda", reason="polygraphy is not installed")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    monkeypatch.setattr(polygraphy_cuda, "G_CUDA", None)


# --- pycuda ------------------------------------------------------------------------------------------------
class LogicError(RuntimeError):
    """pycuda.driver.LogicError"""


class FakePyCuda:
    """pycuda.driver over dict memory, with CUDA's per-thread current context."""

    def __init__(self):
        self.local = threading.local()
        self.memory: dict[int, bytearray] = {}
        driver = self
        self.context = types.SimpleNamespace(push=lambda: self._stack().append("primary"))
        self.Context = types.SimpleNamespace(pop=self._pop, get_device=self._get_device)
        self.Device = lambda n: types.SimpleNamespace(retain_primary_context=lambda: driver.context)
        self.device = types.SimpleNamespace(name=lambda: "Fake Orin", compute_capability=lambda: (8, 7))

    def _stack(self) -> list:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def _pop(self):
        if not self._stack():
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        self._stack().pop()

    def _need_context(self, call: str) -> None:
        if not self._stack():
            raise LogicError(f"{call} failed: invalid device context")

    def _get_device(self):
        self._need_context("cuCtxGetDevice")
        return self.device

    def init(self):
        pass

    def Stream(self):  # noqa: N802 -- pycuda's name
        self._need_context("cuStreamCreate")
        return types.SimpleNamespace(handle=0x5, synchronize=lambda: self._need_context("cuStreamSynchronize"))

    def mem_alloc(self, nbytes: int):
        self._need_context("cuMemAlloc")
        ptr = _Allocation(0x1000 * (len(self.memory) + 1))
        self.memory[ptr] = bytearray(nbytes)
        ptr.free = lambda: self._need_context("cuMemFree")
        return ptr

    def pagelocked_empty(self, shape, dtype):
        self._need_context("cuMemHostAlloc")
        return np.empty(shape, dtype)

    def memcpy_htod_async(self, dst, src: np.ndarray, stream):
        self._need_context("cuMemcpyHtoDAsync")
        self.write(int(dst), np.ascontiguousarray(src).tobytes())

    def memcpy_dtoh_async(self, dst: np.ndarray, src, stream):
        self._need_context("cuMemcpyDtoHAsync")
        dst.reshape(-1).view(np.uint8)[:] = np.frombuffer(self.read(int(src), dst.nbytes), np.uint8)

    def read(self, ptr: int, nbytes: int) -> bytes:
        return bytes(self.memory[ptr][:nbytes])

    def write(self, ptr: int, data: bytes) -> None:
        self.memory[ptr][: len(data)] = data


class _Allocation(int):
    """A device allocation that converts to its pointer, as pycuda's DeviceAllocation does."""


def install_fake_pycuda(monkeypatch) -> FakePyCuda:
    """Put a FakePyCuda behind `import pycuda.driver` and `import pycuda.autoprimaryctx` (whose import pushes
    the primary context on the importing thread, as pycuda's does: done here, the test's thread)."""
    fake = FakePyCuda()
    driver = types.ModuleType("pycuda.driver")
    for name in ("init", "Stream", "mem_alloc", "pagelocked_empty", "memcpy_htod_async", "memcpy_dtoh_async"):
        setattr(driver, name, getattr(fake, name))
    driver.Context, driver.Device, driver.LogicError = fake.Context, fake.Device, LogicError
    auto = types.ModuleType("pycuda.autoprimaryctx")
    package = types.ModuleType("pycuda")
    package.driver, package.autoprimaryctx = driver, auto
    for name, module in (("pycuda", package), ("pycuda.driver", driver), ("pycuda.autoprimaryctx", auto)):
        monkeypatch.setitem(sys.modules, name, module)
    fake.context.push()
    return fake


# --- The stand-ins keep TensorRT's and CUDA's refusals ----------------------------------------------------
def test_registry_refuses_a_library_whose_creator_is_registered(tmp_path):
    trt = FakeTensorRT(HostPointers)
    registry = trt.get_plugin_registry()
    first, copy = plugin_library(tmp_path / "a.so"), plugin_library(tmp_path / "b.so")
    assert registry.get_creator(*SCAN) is None
    assert registry.load_library(str(first)) is not None and registry.get_creator(*SCAN).library == str(first)
    assert registry.get_plugin_creator(*SCAN) is None  # a V3 creator is not found by the deprecated lookup
    assert registry.load_library(str(first)) is None and registry.load_library(str(copy)) is None
    assert "already registered" in trt.log[-1]
    assert registry.load_library(str(tmp_path / "missing.so")) is None


def test_runtime_refuses_engines_it_cannot_run(tmp_path):
    trt = FakeTensorRT(HostPointers)
    runtime = trt.Runtime(None)
    assert runtime.deserialize_cuda_engine(b"garbage") is None
    assert runtime.deserialize_cuda_engine(engine_bytes(8, 1)) is None  # plugin creator not registered
    lib = plugin_library(tmp_path / "lib.so")
    carrying = engine_bytes(8, 1, serialized_library=str(lib))
    assert runtime.deserialize_cuda_engine(carrying) is None and "host code" in trt.log[-1]
    runtime.engine_host_code_allowed = True
    trt.registry.load_library(str(lib))
    assert runtime.deserialize_cuda_engine(carrying) is None  # its creator exists already
    assert runtime.deserialize_cuda_engine(engine_bytes(8, 1)) is not None


def test_fake_cudart_refuses_wrong_copies(fake_cudart):
    cudart = ctypes.CDLL(str(fake_cudart))
    dev, stream = ctypes.c_void_p(), ctypes.c_void_p()
    assert cudart.cudaMalloc(ctypes.byref(dev), ctypes.c_size_t(16)) == 0
    assert cudart.cudaStreamCreate(ctypes.byref(stream)) == 0
    host = np.arange(16, dtype=np.uint8)
    back = np.zeros(16, np.uint8)
    h2d, d2h = ctypes.c_int(1), ctypes.c_int(2)
    assert cudart.cudaMemcpyAsync(dev, host.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(16), h2d, stream) == 0
    assert cudart.cudaMemcpyAsync(back.ctypes.data_as(ctypes.c_void_p), dev, ctypes.c_size_t(16), d2h, stream) == 0
    assert (back == host).all()
    # host to device into host memory, a copy past the allocation, an unknown stream: refused
    ptr = back.ctypes.data_as(ctypes.c_void_p)
    assert cudart.cudaMemcpyAsync(ptr, ptr, ctypes.c_size_t(16), h2d, stream) == 1
    assert cudart.cudaMemcpyAsync(dev, ptr, ctypes.c_size_t(17), h2d, stream) == 1
    assert cudart.cudaMemcpyAsync(dev, ptr, ctypes.c_size_t(16), h2d, ctypes.c_void_p(0x1234)) == 400
    assert cudart.cudaFree(dev) == 0 and cudart.cudaFree(dev) == 17


def test_fake_pycuda_needs_a_current_context_per_thread(monkeypatch):
    fake = install_fake_pycuda(monkeypatch)
    fake.mem_alloc(8)  # the importing thread has the context autoprimaryctx pushed
    errors = []

    def other_thread():
        try:
            fake.mem_alloc(8)
        except LogicError as err:
            errors.append(str(err))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert errors == ["cuMemAlloc failed: invalid device context"]
    fake._pop()

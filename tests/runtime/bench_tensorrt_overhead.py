"""The Python overhead of one TensorRT backend infer(): Polygraphy's libcudart wrapper against plain ctypes calls,
both on the stand-in libcudart of test_tensorrt_standins.py (a benchmark run by hand, not a test):

    python tests/runtime/bench_tensorrt_overhead.py
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from test_tensorrt_standins import (  # noqa: E402
    FakeContext,
    FakeTensorRT,
    HostPointers,
    build_fake_cudart,
    engine_bytes,
    plugin_library,
)


class PlainCtypesMemory:
    """The least Python a hand-written binding can spend: ctypes calls with argtypes set once (the baseline)."""

    name = "plain ctypes"

    def __init__(self, lib: Path):
        from mmad.runtime.backends.cuda_memory import PolygraphyMemory

        self.cudart = ctypes.CDLL(str(lib))
        vp, size = ctypes.c_void_p, ctypes.c_size_t
        self.cudart.cudaMemcpyAsync.argtypes = [vp, vp, size, ctypes.c_int, vp]
        self.cudart.cudaStreamSynchronize.argtypes = [vp]
        stream = vp()
        self.cudart.cudaStreamCreate(ctypes.byref(stream))
        self.stream_handle = stream.value
        self.helper = PolygraphyMemory()  # allocations only, outside the timed calls

    def current(self):
        return contextlib.nullcontext()

    def copy_to_device(self, device_ptr, host):
        self.cudart.cudaMemcpyAsync(device_ptr, host.ctypes.data, host.nbytes, 1, self.stream_handle)

    def copy_to_host(self, host, device_ptr):
        self.cudart.cudaMemcpyAsync(host.ctypes.data, device_ptr, host.nbytes, 2, self.stream_handle)

    def synchronize(self):
        self.cudart.cudaStreamSynchronize(self.stream_handle)

    def __getattr__(self, name):  # device_alloc, pinned_empty, device_facts, close
        return getattr(self.helper, name)


def _bench(repeats: int = 3000) -> None:  # pragma: no cover -- a benchmark, run by hand
    """Median wall time of TensorRTBackend.infer() on one 256x256 image with an engine that computes nothing, so
    what is timed is the backend's Python, its three copies and one stream synchronisation on fake_cudart()."""
    import os
    import time
    from unittest import mock

    from mmad.runtime.backends import cuda_memory as cm
    from mmad.runtime.backends import tensorrt as trt_backend

    folder = Path(tempfile.mkdtemp())
    lib = build_fake_cudart(folder)
    os.environ["LD_LIBRARY_PATH"] = str(folder)
    plugin_library(folder / "libmmad_trt_plugins.so")
    engine = folder / "m.engine"
    engine.write_bytes(engine_bytes(256, 1, plugins=()))
    engine.with_name("m.engine.json").write_text(json.dumps({"metadata": {"mmad.image_size": "256"}}))
    image = np.zeros((1, 256, 256, 3), np.uint8)
    results = {}
    for name, make in (("polygraphy.cuda", cm.PolygraphyMemory), ("plain ctypes", lambda: PlainCtypesMemory(lib))):
        trt = FakeTensorRT(HostPointers)
        FakeContext.execute_async_v3 = lambda self, stream: True  # compute nothing: time the backend alone
        with mock.patch.object(trt_backend, "import_tensorrt", lambda: trt), mock.patch.object(
            trt_backend, "cuda_memory", make
        ):  # fmt: skip
            backend = trt_backend.TensorRTBackend(engine)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            backend.infer(image)
            times.append(time.perf_counter() - start)
        results[name] = float(np.median(times)) * 1e6
    base = results["plain ctypes"]
    print(f"TensorRTBackend.infer(), 1 image 256x256, engine computing nothing, stand-in libcudart, {repeats} calls:")
    for name, us in results.items():
        print(f"  {name:16s} median {us:7.1f} us  ({us / base:.2f}x, {us - base:+.1f} us vs plain ctypes)")


if __name__ == "__main__":
    _bench()

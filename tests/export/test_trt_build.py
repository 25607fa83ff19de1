"""mmad.export.trt_engine.build_engine against a TensorRT stand-in (issue 10 items 1, 6 and 8): several engines
built in one process load the plugin library once; the timing cache is reused by the next build and a cache from
another device is replaced; the engine carries no copy of the library, so the runtime (which loads the library
itself) can deserialise it; the build-time GPU query goes through the runtime's device memory.

The builder stand-in extends test_tensorrt_standins.FakeTensorRT with what TensorRT documents for the calls the
exporter makes: the ONNX parser fails on a node whose plugin creator is not registered (onnx-tensorrt's plugin
importer), set_timing_cache returns false for a cache made on another device unless told to ignore it, and a
serialised engine carries the libraries named in plugins_to_serialize."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from test_tensorrt_standins import (  # noqa: E402
    SCAN,
    FakeTensorRT,
    HostPointers,
    engine_bytes,
    fake_cudart,  # noqa: F401 -- a fixture
    plugin_library,
    use_fake_cudart,
)
from test_trt_engine import META  # noqa: E402

from mmad.export import trt_engine  # noqa: E402
from mmad.export.command import EngineRequest  # noqa: E402
from mmad.export.onnx_graph import save_onnx, write_metadata  # noqa: E402
from mmad.export.portable import single_scan_model  # noqa: E402
from mmad.runtime import contract  # noqa: E402
from mmad.runtime.backends import tensorrt_plugin  # noqa: E402

DEVICE = "Fake Orin sm87 trt10.3"  # what a timing cache is keyed to


class TimingCache:
    def __init__(self, data: bytes):
        device, _, entries = data.decode().rpartition(":") if data else ("", "", "0")
        self.device, self.entries = device, int(entries)

    def serialize(self) -> bytes:
        return f"{self.device}:{self.entries}".encode()


class BuilderConfig:
    def __init__(self):
        self.flags, self.profiles, self.plugins_to_serialize, self.cache = set(), [], [], None

    def set_memory_pool_limit(self, pool, size):
        self.workspace = size

    def set_flag(self, flag):
        self.flags.add(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes):
        return TimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        if cache.device not in ("", DEVICE) and not ignore_mismatch:
            return False  # "the cache was created on a different device or TensorRT version"
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


def fake_builder_trt() -> FakeTensorRT:
    trt = FakeTensorRT(HostPointers)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.built = []

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return types.SimpleNamespace(flags=flags, nodes=[])

        create_builder_config = staticmethod(BuilderConfig)

        def create_optimization_profile(self):
            profile = types.SimpleNamespace(shapes={})
            profile.set_shape = lambda name, *shapes: profile.shapes.__setitem__(name, shapes)
            return profile

        def build_serialized_network(self, network, config):
            config.cache.device, config.cache.entries = DEVICE, config.cache.entries + 1  # the kernels it timed
            low, opt, high = config.profiles[0].shapes["image"]
            trt.built.append(config)
            library = config.plugins_to_serialize[0] if config.plugins_to_serialize else None
            return engine_bytes(high[1], high[0], plugins=network.nodes, serialized_library=library)

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            for node in onnx.load(path).graph.node:
                if node.op_type == SCAN[0]:
                    if trt.registry.get_creator(*SCAN) is None:
                        self.errors.append(
                            f"Plugin not found, are the plugin name, version and namespace correct? {SCAN}"
                        )
                        return False
                    self.network.nodes.append(SCAN)
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


@pytest.fixture
def build(tmp_path, monkeypatch):
    """build(precision, out) with one TensorRT stand-in for the whole test (one process)."""
    trt = fake_builder_trt()
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_engine, "gpu_info", lambda: ("Fake Orin", "8.7"))
    monkeypatch.setattr(tensorrt_plugin, "_LOADED", {})
    monkeypatch.delenv(contract.PLUGIN_ENV, raising=False)
    model = single_scan_model(16, 4, 8, 64)
    write_metadata(model, {**META, "image_size": "64"})
    onnx_path = save_onnx(model, tmp_path / "scan.onnx")
    plugin = plugin_library(tmp_path / "libmmad_trt_plugins.so")
    logs = []

    def run(precision: str, out: Path, plugin_library: Path = plugin):
        request = EngineRequest(onnx=onnx_path, out=out, precision=precision, plugin_library=plugin_library)
        return trt_engine.build_engine(trt_engine.check_request(request), log=logs.append)

    run.trt, run.logs, run.plugin = trt, logs, plugin
    return run


def test_three_engines_in_one_process_load_the_library_once(build, tmp_path):
    """`mmad bench` builds fp32, fp16 and int8 in one run; a copy of the library elsewhere is not loaded either."""
    build("fp32", tmp_path / "m32.engine")
    build("fp16", tmp_path / "m16.engine")
    (tmp_path / "copy").mkdir()
    copy = plugin_library(tmp_path / "copy" / "lib.so")
    build("fp16", tmp_path / "copy" / "m16.engine", plugin_library=copy)
    assert build.trt.registry.loaded == [str(build.plugin)]
    assert not any("already registered" in line for line in build.trt.log)
    assert {"fp16"} == build.trt.built[1].flags


def test_timing_cache_is_reused_and_a_foreign_one_replaced(build, tmp_path):
    cache = tmp_path / trt_engine.TIMING_CACHE_NAME
    build("fp32", tmp_path / "a.engine")
    assert cache.read_bytes() == f"{DEVICE}:1".encode()
    build("fp16", tmp_path / "b.engine")
    assert cache.read_bytes() == f"{DEVICE}:2".encode()  # the second build started from the first one's timings
    assert any("reusing the kernel timings" in line for line in build.logs)
    cache.write_bytes(b"Some dGPU sm89 trt10.7:40")
    build("fp32", tmp_path / "c.engine")
    assert cache.read_bytes() == f"{DEVICE}:1".encode()
    assert any("for another GPU or TensorRT; starting a new one" in line for line in build.logs)


def test_built_engine_carries_no_library_and_runs_after_the_runtime_loads_it(build, tmp_path):
    sidecar = build("fp32", tmp_path / "m.engine")
    assert build.trt.built[0].plugins_to_serialize == []
    runtime = build.trt.Runtime(None)
    assert runtime.deserialize_cuda_engine((tmp_path / "m.engine").read_bytes()) is not None
    assert sidecar.plugin_library == build.plugin.name and sidecar.plugin_sha256 == contract.file_sha256(build.plugin)
    assert not any(line.startswith("note:") for line in build.logs)
    # A library outside the engine's folder is written as an absolute path, which the runtime loads only when named.
    sidecar = build("fp32", tmp_path / "engines" / "m.engine")
    assert sidecar.plugin_library == str(build.plugin.resolve())
    assert any("is outside the engine's folder: the runtime loads it only when named" in line for line in build.logs)


def test_gpu_query_goes_through_the_runtime_device_memory(fake_cudart, monkeypatch):  # noqa: F811
    use_fake_cudart(monkeypatch, fake_cudart)
    assert trt_engine.gpu_info() == ("Fake Orin", "8.7")
    monkeypatch.setenv("FAKE_CUDART_ERROR", "100")
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(trt_engine.NoGPU, match="no CUDA GPU available"):
        trt_engine.gpu_info()

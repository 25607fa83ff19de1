"""The TensorRT backend without a GPU: the sidecar, plugin resolution and loading
(mmad.runtime.backends.tensorrt_plugin), refusals, and binding logic against a stand-in engine (a GPU
test compares a real engine with onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_tensorrt_standins import FakeTensorRT, HostPointers, PluginRegistry, plugin_library

from mmad.runtime import contract
from mmad.runtime.backends import load_backend, tensorrt_plugin
from mmad.runtime.backends import tensorrt as trt_backend
from mmad.runtime.backends.cuda_memory import CudaMemory
from mmad.runtime.errors import ConfigError
from mmad.runtime.synthetic import synthetic_model, synthetic_reference

onnx = pytest.importorskip("onnx", reason="building the test models needs the onnx package")

TOL = 1e-5  # float32 graph vs float64 reference, on values in [0, 1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return synthetic_model(tmp_path_factory.mktemp("model") / "synthetic.onnx", image_size=64)


# --- TensorRT: everything that does not need a GPU ------------------------------------------
def _engine_with_sidecar(tmp_path: Path, **sidecar) -> Path:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not a real engine")
    (tmp_path / "model.engine.json").write_text(json.dumps(sidecar))
    return engine


def test_sidecar_is_read_and_checked(tmp_path):
    (tmp_path / "libscan.so").write_bytes(b"")
    engine = _engine_with_sidecar(
        tmp_path,
        tensorrt_version="10.3.0.30",
        gpu="Orin",
        compute_capability="8.7",
        plugin_library="libscan.so",
        metadata={"mmad.threshold": 0.5, "mmad.image_size": "256"},
    )
    sidecar = contract.read_sidecar(engine)
    assert sidecar.metadata == {"threshold": "0.5", "image_size": "256"}  # the contract's reader drops the prefix
    assert sidecar.plugin_path() == tmp_path / "libscan.so"
    check = trt_backend.check_engine_compatibility
    assert check(engine, sidecar, "10.3.0.26", "Orin", "8.7") == []  # same release, another build number
    with pytest.raises(ConfigError, match=r"built elsewhere.*TensorRT 10\.3\.0\.30.*TensorRT 10\.7\.0"):
        check(engine, sidecar, "10.7.0", "Orin", "8.7")
    with pytest.raises(ConfigError, match=r"built elsewhere.*compute capability 8\.7.*compute capability 9\.0"):
        check(engine, sidecar, "10.3.0", "NVIDIA H100", "9.0")
    warnings = check(engine, sidecar, "10.3.0", "Orin NX", "8.7")
    assert len(warnings) == 1 and "built on Orin, running on Orin NX" in warnings[0]
    portable = contract.read_sidecar(
        _engine_with_sidecar(
            tmp_path, tensorrt_version="10.3.0", compute_capability="8.0", hardware_compatibility="ampere+"
        )
    )
    assert check(engine, portable, "10.3.0", "NVIDIA A10", "8.6") == []


def test_missing_or_bad_sidecar(tmp_path):
    engine = tmp_path / "bare.plan"
    engine.write_bytes(b"")
    sidecar = contract.read_sidecar(engine)
    assert sidecar.path is None
    assert "no sidecar" in trt_backend.check_engine_compatibility(engine, sidecar, "10.3.0", "Orin", "8.7")[0]
    (tmp_path / "bare.json").write_text("[1, 2")  # the stem form of the sidecar name, broken
    with pytest.raises(ConfigError, match="bare.json"):
        contract.read_sidecar(engine)


def test_plugin_library_resolution(tmp_path, monkeypatch):
    resolve = tensorrt_plugin.resolve_plugin_library
    empty = contract.EngineSidecar()
    monkeypatch.delenv(contract.PLUGIN_ENV, raising=False)
    monkeypatch.setattr(contract, "PLUGIN_INSTALL_DIR", tmp_path / "installed")
    assert resolve(None, empty) is None
    with pytest.raises(ConfigError, match="no such file"):
        resolve(str(tmp_path / "nope.so"), empty)
    lib = tmp_path / "libscan.so"
    lib.write_bytes(b"")
    # The engine's sidecar: its path is relative to the sidecar's folder, and it must be the library the
    # engine was built with (its sha256).
    (tmp_path / "engines").mkdir()
    near = tmp_path / "engines" / "libnear.so"
    near.write_bytes(b"near")
    sidecar = contract.EngineSidecar(
        path=tmp_path / "engines" / "m.engine.json",
        plugin_library="libnear.so",
        plugin_sha256=contract.file_sha256(near),
    )
    assert resolve(None, sidecar) == near
    assert resolve(str(lib), sidecar) == lib
    # The variable is named by the user, so it comes before the sidecar.
    monkeypatch.setenv(contract.PLUGIN_ENV, str(lib))
    assert resolve(None, empty) == lib and resolve(None, sidecar) == lib
    # The exporter has no sidecar: the explicit library, else the variable, else the installed one.
    assert resolve(None) == lib
    monkeypatch.delenv(contract.PLUGIN_ENV)
    (tmp_path / "installed").mkdir()
    (tmp_path / "installed" / contract.PLUGIN_LIBRARY_NAME).write_bytes(b"")
    assert resolve(None) == tmp_path / "installed" / contract.PLUGIN_LIBRARY_NAME


def test_plugin_library_is_loaded_once_and_a_refusal_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorrt_plugin, "_LOADED", {})
    lib = plugin_library(tmp_path / "libmmad_trt_plugins.so")
    trt = FakeTensorRT(HostPointers)
    handle = tensorrt_plugin.load_plugin_library(trt, lib)
    assert handle is not None and trt.registry.loaded == [str(lib)]
    # TensorRT refuses a library whose creators are registered: a second engine must not load it again.
    assert tensorrt_plugin.load_plugin_library(trt, lib) is handle and trt.registry.loaded == [str(lib)]
    refused = tmp_path / "librefused.so"
    refused.write_bytes(b"")  # no creators: TensorRT's loadLibrary returns null
    with pytest.raises(ConfigError, match="librefused.so: TensorRT refused the library"):
        tensorrt_plugin.load_plugin_library(FakeTensorRT(HostPointers), refused)

    def broken(path):
        raise RuntimeError("undefined symbol: getPluginCreators")

    raising = FakeTensorRT(HostPointers)
    raising.registry.load_library = broken
    with pytest.raises(ConfigError, match="cannot load it .undefined symbol"):
        tensorrt_plugin.load_plugin_library(raising, refused)
    eleven = plugin_library(tmp_path / "lib11.so", major=11)
    never = FakeTensorRT(HostPointers)
    never.registry.load_library = lambda path: pytest.fail("must not load")
    with pytest.raises(ConfigError, match="built for TensorRT 11, this is TensorRT 10.3.0.26"):
        tensorrt_plugin.load_plugin_library(never, eleven)


def test_tensorrt_backend_without_tensorrt_says_what_to_install(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here; the GPU tests exercise the backend")
    engine = _engine_with_sidecar(tmp_path, tensorrt_version="10.3.0")
    with pytest.raises(ConfigError, match="tensorrt Python package"):
        load_backend(engine)
    with pytest.raises(ConfigError, match="TensorRT not available"):  # the message the exporter shows, too
        tensorrt_plugin.import_tensorrt()


def test_polygraphy_provides_every_call_the_backend_makes():
    """The installed Polygraphy has the API cuda_memory.PolygraphyMemory calls, with the same parameters."""
    import inspect

    pg_cuda = pytest.importorskip("polygraphy.cuda", reason="polygraphy is not installed")
    assert list(inspect.signature(pg_cuda.Cuda.memcpy).parameters) == ["self", "dst", "src", "nbytes", "kind",
                                                                       "stream_ptr"]  # fmt: skip
    assert callable(pg_cuda.wrapper) and callable(pg_cuda.DeviceArray.raw) and callable(pg_cuda.DeviceArray.free)
    assert callable(pg_cuda.Stream.synchronize) and callable(pg_cuda.Stream.free)
    assert pg_cuda.MemcpyKind.HostToDevice.value == 1 and pg_cuda.MemcpyKind.DeviceToHost.value == 2


@pytest.mark.gpu
def test_tensorrt_engine_matches_onnxruntime(tmp_path, model):
    """Build an engine from the synthetic ONNX here, run it through the backend, compare with onnxruntime."""
    trt = pytest.importorskip("tensorrt")
    cuda = trt_backend.cuda_memory()
    with cuda.current():
        gpu, capability = cuda.device_facts()
    cuda.close()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.read_bytes())
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 64, 64, 3), (2, 64, 64, 3), (4, 64, 64, 3))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    engine = tmp_path / "synthetic.engine"
    engine.write_bytes(bytes(builder.build_serialized_network(network, config)))
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    engine.with_name("synthetic.engine.json").write_text(
        json.dumps(
            {"tensorrt_version": trt.__version__, "gpu": gpu, "compute_capability": capability, "metadata": meta}
        )
    )
    images = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)  # > max batch: chunked
    with load_backend(engine) as backend:
        maps, scores = backend.infer(images)
    ref_maps, ref_scores = synthetic_reference(images)
    assert np.abs(maps - ref_maps).max() <= 1e-4 and np.abs(scores - ref_scores).max() <= 1e-4


# --- The TensorRT backend's binding logic, against a stand-in engine ---------------------------
class _FakeDevice(CudaMemory):
    """Device memory as numpy byte arrays keyed by fake pointers."""

    name = "fake"

    def __init__(self):
        self.memory: dict[int, np.ndarray] = {}

    def device_alloc(self, nbytes):
        ptr = 0x1000 * (len(self.memory) + 1)
        self.memory[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def pinned_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def copy_to_device(self, device_ptr, host):
        self.memory[device_ptr][: host.nbytes] = np.ascontiguousarray(host).reshape(-1).view(np.uint8)

    def copy_to_host(self, host, device_ptr):
        host.reshape(-1).view(np.uint8)[:] = self.memory[device_ptr][: host.nbytes]

    @property
    def stream_handle(self):
        return 7

    def synchronize(self):
        pass

    def device_facts(self):
        return "Fake GPU", "8.7"


def _fake_context_class(device: _FakeDevice, size: int, max_batch: int, shapes: dict) -> type:
    """An execution context that runs the synthetic model on the fake device's memory."""

    class Context:
        def __init__(self):
            self.addresses, self.batch = {}, None

        def set_input_shape(self, name, shape):
            assert name == "image" and shape[1:] == (size, size, 3) and 1 <= shape[0] <= max_batch
            self.batch = shape[0]

        def get_tensor_shape(self, name):
            return (self.batch,) + shapes[name][1:]

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            assert stream == 7
            n = self.batch
            images = device.memory[self.addresses["image"]][: n * size * size * 3].reshape(n, size, size, 3)
            maps, scores = synthetic_reference(images)
            for name, value in (("anomaly_map", maps.astype(np.float32)), ("score", scores.astype(np.float32))):
                device.memory[self.addresses[name]][: value.nbytes] = value.reshape(-1).view(np.uint8)
            return True

    return Context


def _fake_tensorrt(device: _FakeDevice, size: int, max_batch: int, loaded: list):
    """A stand-in for the tensorrt module whose engine computes the synthetic model on the fake device."""
    import types

    trt = types.SimpleNamespace(__version__="10.3.0.26")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: dtype
    # TensorRT's registry (load_library refuses a library whose creator is registered); `loaded` lists the loads
    registry = PluginRegistry([])
    registry.loaded = loaded
    trt.get_plugin_registry = lambda: registry
    trt.init_libnvinfer_plugins = lambda logger, namespace: None
    shapes = {"image": (-1, size, size, 3), "anomaly_map": (-1, 1, size, size), "score": (-1,)}
    dtypes = {"image": np.uint8, "anomaly_map": np.float32, "score": np.float32}

    Context = _fake_context_class(device, size, max_batch, shapes)

    class Engine:
        num_io_tensors = 3

        def get_tensor_name(self, i):
            return list(shapes)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return dtypes[name]

        def get_tensor_shape(self, name):
            return shapes[name]

        def get_tensor_profile_shape(self, name, profile):
            return [(1, size, size, 3), (1, size, size, 3), (max_batch, size, size, 3)]

        def create_execution_context(self):
            return Context()

    trt.Runtime = lambda logger: types.SimpleNamespace(
        deserialize_cuda_engine=lambda data: Engine() if data == b"engine" else None
    )
    return trt


def test_tensorrt_backend_binds_by_name_and_chunks_batches(tmp_path, monkeypatch):
    size, max_batch = 32, 2
    device, loaded = _FakeDevice(), []
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: _fake_tensorrt(device, size, max_batch, loaded))
    monkeypatch.setattr(trt_backend, "cuda_memory", lambda: device)
    monkeypatch.setattr(tensorrt_plugin, "_LOADED", {})
    monkeypatch.setattr(contract, "PLUGIN_INSTALL_DIR", tmp_path / "installed")
    lib = plugin_library(tmp_path / "libscan.so")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    sidecar = {
        "tensorrt_version": "10.3.0",
        "gpu": "Fake GPU",
        "compute_capability": "8.7",
        "plugin_library": "libscan.so",
        "plugin_sha256": contract.file_sha256(lib),
        "metadata": {"mmad.threshold": "0.3", "mmad.image_size": str(size), "mmad.scan": "custom-op"},
    }
    (tmp_path / "m.engine.json").write_text(json.dumps(sidecar))
    images = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)  # 5 > max batch 2
    with load_backend(engine) as backend:
        assert backend.max_batch == max_batch and backend.info.threshold == 0.3
        assert loaded == [str(tmp_path / "libscan.so")]  # the plugin was loaded before deserialising
        maps, scores = backend.infer(images)
    ref_maps, ref_scores = synthetic_reference(images)
    assert (
        maps.shape == (5, size, size)
        and np.abs(maps - ref_maps).max() <= TOL
        and np.abs(scores - ref_scores).max() <= TOL
    )

    engine.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="could not deserialise"):
        load_backend(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({**sidecar, "plugin_library": None}))
    monkeypatch.delenv(contract.PLUGIN_ENV, raising=False)
    with pytest.raises(ConfigError, match="SelectiveScan plugin"):
        load_backend(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({**sidecar, "compute_capability": "9.0"}))
    with pytest.raises(ConfigError, match="built elsewhere"):
        load_backend(engine)

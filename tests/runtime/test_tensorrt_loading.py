"""Which plugin library the TensorRT backend loads, and when (issue 10 items 1, 6, 7, 8; issue 13 item 2), against
the stand-ins of test_tensorrt_standins.py (a registry that refuses a library whose creator is registered, a
runtime that refuses engines it cannot run). A library may run code as it loads, so every refusal here also
checks that nothing was loaded."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from test_tensorrt_standins import SCAN, FakeTensorRT, engine_bytes, plugin_library

from mmad.runtime import contract
from mmad.runtime.backends import load_backend, tensorrt_plugin
from mmad.runtime.backends import tensorrt as trt_backend
from mmad.runtime.backends.cuda_memory import CudaMemory
from mmad.runtime.errors import ConfigError

SIZE, MAX_BATCH = 16, 2


class DictMemory(CudaMemory):
    """Device memory as byte arrays behind made-up pointers (the engine stand-in reads and writes them)."""

    name = "dict"

    def __init__(self):
        self.memory: dict[int, bytearray] = {}

    def device_alloc(self, nbytes):
        ptr = 0x1000 * (len(self.memory) + 1)
        self.memory[ptr] = bytearray(nbytes)
        return ptr

    def pinned_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def copy_to_device(self, device_ptr, host):
        self.write(device_ptr, np.ascontiguousarray(host).tobytes())

    def copy_to_host(self, host, device_ptr):
        host.reshape(-1).view(np.uint8)[:] = np.frombuffer(self.read(device_ptr, host.nbytes), np.uint8)

    def read(self, ptr, nbytes):
        return bytes(self.memory[ptr][:nbytes])

    def write(self, ptr, data):
        self.memory[ptr][: len(data)] = data

    stream_handle = 7

    def synchronize(self):
        pass

    def device_facts(self):
        return "Fake Orin", "8.7"


@pytest.fixture
def trt(monkeypatch, tmp_path):
    """A fresh TensorRT stand-in per test (its registry is the process's), no $MMAD_TRT_PLUGIN, an empty
    installed plugin folder, and nothing remembered as loaded."""
    memory = DictMemory()
    fake = FakeTensorRT(memory)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(trt_backend, "cuda_memory", lambda: memory)
    monkeypatch.setattr(tensorrt_plugin, "_LOADED", {})
    monkeypatch.delenv(contract.PLUGIN_ENV, raising=False)
    monkeypatch.setattr(contract, "PLUGIN_INSTALL_DIR", tmp_path / "installed", raising=False)
    return fake


def engine_in(folder: Path, plugin: str | None = None, sha: str | None = None, data: bytes | None = None) -> Path:
    """folder/m.engine (a stand-in engine using the SelectiveScan plugin) and its sidecar naming `plugin`."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / "m.engine"
    engine.write_bytes(engine_bytes(SIZE, MAX_BATCH) if data is None else data)
    sidecar = {
        "tensorrt_version": "10.3.0",
        "gpu": "Fake Orin",
        "compute_capability": "8.7",
        "plugin_library": plugin,
        "plugin_sha256": sha,
        "metadata": {"mmad.image_size": str(SIZE), "mmad.scan": "custom-op", "mmad.threshold": "0.5"},
    }
    (folder / "m.engine.json").write_text(json.dumps(sidecar))
    return engine


def engine_with_library(folder: Path, major: int = 10, data: bytes | None = None) -> tuple[Path, Path]:
    """folder/m.engine and, beside it, the plugin library its sidecar names with its sha256 (the exporter's way)."""
    folder.mkdir(parents=True, exist_ok=True)
    lib = plugin_library(folder / contract.PLUGIN_LIBRARY_NAME, major=major)
    return engine_in(folder, lib.name, contract.file_sha256(lib), data=data), lib


def runs(engine: Path, **kwargs) -> bool:
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    with load_backend(engine, **kwargs) as backend:
        maps, scores = backend.infer(images)
    return maps.shape == (3, SIZE, SIZE) and scores.shape == (3,)


# --- Issue 13.2: a sidecar may only name a library the user trusts ------------------------------------------
def test_sidecar_library_in_the_engine_folder_with_its_sha256_is_loaded(trt, tmp_path):
    engine, lib = engine_with_library(tmp_path / "models")
    assert runs(engine) and trt.registry.loaded == [str(lib)]


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_sidecar_library_outside_the_trusted_folders_is_refused(trt, tmp_path, where):
    planted = plugin_library(tmp_path / "elsewhere.so")
    models = tmp_path / "models"
    models.mkdir()
    name = {"absolute": str(planted), "dotdot": "../elsewhere.so", "symlink": "link.so"}[where]
    if where == "symlink":
        (models / "link.so").symlink_to(planted)
    engine = engine_in(models, name, contract.file_sha256(planted))
    with pytest.raises(ConfigError, match=r"outside the engine's folder.*--plugin-library .*elsewhere\.so") as err:
        load_backend(engine)
    assert contract.PLUGIN_ENV in str(err.value) and trt.registry.loaded == []


def test_sidecar_library_with_another_or_no_sha256_is_refused(trt, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    lib = plugin_library(models / "libmmad_trt_plugins.so")
    with pytest.raises(ConfigError, match="not the library the engine was built with.*--plugin-library"):
        load_backend(engine_in(models, lib.name, "0" * 64))
    with pytest.raises(ConfigError, match="records no plugin_sha256"):
        load_backend(engine_in(models, lib.name, None))
    assert trt.registry.loaded == []


def test_a_planted_library_is_not_loaded_even_for_random_bytes(trt, tmp_path):
    """The probe of issue 13.2: random bytes as the engine, a sidecar naming a library elsewhere."""
    planted = plugin_library(tmp_path / "planted.so")
    engine = engine_in(tmp_path / "models", str(planted), contract.file_sha256(planted), data=os.urandom(64))
    with pytest.raises(ConfigError, match="not loaded"):
        load_backend(engine)
    assert trt.registry.loaded == []


def test_library_in_the_installed_folder_is_trusted(trt, tmp_path):
    (tmp_path / "installed").mkdir()
    installed = plugin_library(tmp_path / "installed" / "libmmad_trt_plugins.so")
    engine = engine_in(tmp_path / "models", str(installed), contract.file_sha256(installed))
    assert runs(engine) and trt.registry.loaded == [str(installed)]


def test_a_library_the_user_names_wins_over_the_sidecar(trt, tmp_path, monkeypatch):
    """--plugin-library and $MMAD_TRT_PLUGIN are trusted as named, wherever the file is; the sidecar's
    (here one that would be refused) is then not even looked at."""
    planted = plugin_library(tmp_path / "planted.so")
    engine = engine_in(tmp_path / "models", str(planted), None)
    (tmp_path / "mine").mkdir()
    mine = plugin_library(tmp_path / "mine" / "lib.so")
    monkeypatch.setenv(contract.PLUGIN_ENV, str(mine))
    assert runs(engine) and trt.registry.loaded == [str(mine)]
    monkeypatch.delenv(contract.PLUGIN_ENV)
    monkeypatch.setattr(tensorrt_plugin, "_LOADED", {})
    trt.registry.creators.clear()
    assert runs(engine, plugin_library=str(mine)) and trt.registry.loaded[-1] == str(mine)


# --- Issue 10.7: a stale sidecar path falls through to the next candidate --------------------------------------
def test_stale_sidecar_path_falls_back_to_the_installed_library(trt, tmp_path, caplog):
    engine = engine_in(tmp_path / "models", "/home/someone/build/libmmad_trt_plugins.so", "a" * 64)
    with pytest.raises(ConfigError, match="uses the SelectiveScan plugin; give its library"):
        load_backend(engine)  # nothing installed: the engine cannot run, and the message says what to give
    (tmp_path / "installed").mkdir()
    installed = plugin_library(tmp_path / "installed" / contract.PLUGIN_LIBRARY_NAME)
    with caplog.at_level(logging.WARNING):
        assert runs(engine)
    assert trt.registry.loaded == [str(installed)] and "is not there" in caplog.text


def test_a_missing_library_the_user_named_is_an_error(trt, tmp_path, monkeypatch):
    (tmp_path / "installed").mkdir()
    plugin_library(tmp_path / "installed" / contract.PLUGIN_LIBRARY_NAME)
    engine = engine_in(tmp_path / "models")
    with pytest.raises(ConfigError, match="--plugin-library .*nope.so: no such file"):
        load_backend(engine, plugin_library=str(tmp_path / "nope.so"))
    monkeypatch.setenv(contract.PLUGIN_ENV, str(tmp_path / "env.so"))
    with pytest.raises(ConfigError, match=r"\$MMAD_TRT_PLUGIN .*env.so: no such file"):
        load_backend(engine)


# --- Issue 10.1: one load per process, whoever registered the creator first -------------------------------------
def test_second_engine_with_another_copy_of_the_library_loads_nothing(trt, tmp_path):
    """Two engine folders, each with its own copy of the library (what `mmad bench` builds): TensorRT would
    refuse the second copy, so it is not loaded, and the second engine runs on the registered creator."""
    engines = []
    for name in ("fp32", "fp16"):
        engines.append(engine_with_library(tmp_path / name)[0])
    assert runs(engines[0]) and runs(engines[1])
    assert trt.registry.loaded == [str(tmp_path / "fp32" / "libmmad_trt_plugins.so")]
    assert not any("already registered" in line for line in trt.log)


def test_library_that_registered_itself_on_load_is_accepted(trt, tmp_path):
    """MMAD_TRT_REGISTER_ON_LOAD=1 registers the creator as the library is opened; loadLibrary then returns
    None. That is not a failure: the creator is there."""
    lib = plugin_library(tmp_path / "lib.so")
    trt.registry.creators[SCAN] = str(lib)  # registered before anyone asked the registry to load it
    assert tensorrt_plugin.load_plugin_library(trt, lib) is None
    assert trt.registry.loaded == []


def test_a_refused_first_load_is_a_clear_error(trt, tmp_path):
    other = plugin_library(tmp_path / "libother.so", creators=(("Other", "1", ""),))
    not_plugin = tmp_path / "libnot.so"
    not_plugin.write_bytes(b"\x7fELF\0libnvinfer.so.10\0")
    with pytest.raises(ConfigError, match="refused the library and registered no SelectiveScan creator"):
        tensorrt_plugin.load_plugin_library(trt, not_plugin)
    # A library with other creators loads, but cannot serve the engine: deserialisation names the plugin.
    assert tensorrt_plugin.load_plugin_library(trt, other) is not None
    assert tensorrt_plugin.registered_scan_creator(trt) is None


# --- Issue 10.6: engines never carry the library ----------------------------------------------------------------
def test_engine_carrying_its_own_library_is_refused_with_the_rule(trt, tmp_path):
    lib = tmp_path / "models" / contract.PLUGIN_LIBRARY_NAME
    engine, _ = engine_with_library(lib.parent, data=engine_bytes(SIZE, MAX_BATCH, serialized_library=str(lib)))
    with pytest.raises(ConfigError, match="setPluginsToSerialize.*mmad export trt"):
        load_backend(engine)


# --- Issue 10.8: the runtime checks the TensorRT major the library was built for ------------------------------
def test_runtime_refuses_a_library_built_for_another_tensorrt(trt, tmp_path):
    engine, _ = engine_with_library(tmp_path / "models", major=11)
    with pytest.raises(ConfigError, match="built for TensorRT 11, this is TensorRT 10.3.0.26"):
        load_backend(engine)
    assert trt.registry.loaded == []


def test_engine_runs_the_model_on_the_stand_in(trt, tmp_path):
    from mmad.runtime.synthetic import synthetic_reference

    engine, _ = engine_with_library(tmp_path / "models")
    images = np.random.default_rng(1).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)  # 5 > max batch 2
    with load_backend(engine) as backend:
        maps, scores = backend.infer(images)
    ref_maps, ref_scores = synthetic_reference(images)
    assert np.abs(maps - ref_maps).max() <= 1e-5 and np.abs(scores - ref_scores).max() <= 1e-5

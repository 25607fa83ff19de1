"""Device memory for the TensorRT backend (mmad.runtime.backends.cuda_memory), issue 10 items 3 and 4: Polygraphy's
libcudart wrapper on a stand-in libcudart, pycuda with a context that is current per thread, and the fall-back
from one provider to the next on any failure. The engine is the TensorRT stand-in running the synthetic model
on the memory each provider hands it."""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_tensorrt_standins import (
    FakeTensorRT,
    HostPointers,
    LogicError,
    engine_bytes,
    fake_cudart,  # noqa: F401 -- a fixture
    install_fake_pycuda,
    plugin_library,
    use_fake_cudart,
)

from mmad.runtime import contract
from mmad.runtime.backends import cuda_memory as cm
from mmad.runtime.backends import load_backend, tensorrt_plugin
from mmad.runtime.backends import tensorrt as trt_backend
from mmad.runtime.errors import ConfigError
from mmad.runtime.synthetic import synthetic_reference

SIZE, MAX_BATCH = 16, 2


@pytest.fixture
def engine(tmp_path, monkeypatch):
    """A stand-in engine with its plugin library beside it; fresh plugin registrations."""
    monkeypatch.setattr(tensorrt_plugin, "_LOADED", {})
    monkeypatch.delenv(contract.PLUGIN_ENV, raising=False)
    lib = plugin_library(tmp_path / "libmmad_trt_plugins.so")
    path = tmp_path / "m.engine"
    path.write_bytes(engine_bytes(SIZE, MAX_BATCH))
    sidecar = {
        "tensorrt_version": "10.3.0",
        "compute_capability": "8.7",
        "plugin_library": lib.name,
        "plugin_sha256": contract.file_sha256(lib),
        "metadata": {"mmad.image_size": str(SIZE), "mmad.scan": "custom-op", "mmad.threshold": "0.5"},
    }
    (tmp_path / "m.engine.json").write_text(json.dumps(sidecar))
    return path


def infer_on(engine, thread: bool) -> tuple[np.ndarray, np.ndarray]:
    """Load the backend on this thread and infer 5 images (3 chunks of the max batch) here or on another thread,
    as mmadinfer does (loaded in do_start, run on GStreamer's streaming thread); checks against the reference."""
    images = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    result, errors = [], []
    with load_backend(engine) as backend:
        if thread:
            worker = threading.Thread(target=lambda: _collect(backend, images, result, errors))
            worker.start()
            worker.join()
        else:
            _collect(backend, images, result, errors)
    assert not errors, errors
    ref_maps, ref_scores = synthetic_reference(images)
    maps, scores = result[0]
    assert np.abs(maps - ref_maps).max() <= 1e-5 and np.abs(scores - ref_scores).max() <= 1e-5
    return maps, scores


def _collect(backend, images, result, errors):
    try:
        result.append(backend.infer(images))
    except Exception as err:  # noqa: BLE001 -- reported by the caller's assertion
        errors.append(f"{type(err).__name__}: {err}")


# --- Polygraphy on the stand-in libcudart ------------------------------------------------------------------
@pytest.mark.parametrize("thread", [False, True], ids=["same-thread", "streaming-thread"])
def test_polygraphy_memory_runs_the_engine(engine, fake_cudart, monkeypatch, thread):  # noqa: F811
    use_fake_cudart(monkeypatch, fake_cudart)
    trt = FakeTensorRT(HostPointers)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: trt)
    memory = cm.cuda_memory()
    assert isinstance(memory, cm.PolygraphyMemory) and memory.device_facts() == ("Fake Orin", "8.7")
    memory.close()
    infer_on(engine, thread)


def test_polygraphy_failures_fall_back_to_pycuda(fake_cudart, monkeypatch, caplog):  # noqa: F811
    """A CUDA runtime the driver cannot serve (error 35, a CUDA 13 runtime on JetPack 6) is not an ImportError:
    it is caught and pycuda is tried; with neither, the error names both reasons and what to install."""
    use_fake_cudart(monkeypatch, fake_cudart)
    monkeypatch.setenv("FAKE_CUDART_ERROR", "35")
    install_fake_pycuda(monkeypatch)
    memory = cm.cuda_memory()
    assert isinstance(memory, cm.PyCudaMemory) and "driver version is insufficient" in caplog.text
    memory.close()
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)  # pycuda not installed
    with pytest.raises(ConfigError, match=r"polygraphy: .*driver version is insufficient.*pycuda: .*pip install"):
        cm.cuda_memory()


# --- pycuda: the context is made current on the calling thread ----------------------------------------------
@pytest.mark.parametrize("thread", [False, True], ids=["same-thread", "streaming-thread"])
def test_pycuda_memory_runs_on_the_streaming_thread(engine, monkeypatch, thread):
    pycuda = install_fake_pycuda(monkeypatch)
    trt = FakeTensorRT(pycuda)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(cm, "PROVIDERS", (cm.PyCudaMemory,))
    infer_on(engine, thread)


def test_pycuda_context_is_popped_after_each_call(monkeypatch):
    pycuda = install_fake_pycuda(monkeypatch)
    pycuda._pop()  # no context current on this thread, as on a thread that did not import autoprimaryctx
    memory = cm.PyCudaMemory()
    with memory.current():
        buf = memory.device_alloc(4)
        memory.copy_to_device(buf, np.arange(4, dtype=np.uint8))
    assert pycuda._stack() == []
    with pytest.raises(LogicError, match="invalid device context"):
        memory.device_alloc(4)  # outside current(): what the old backend did on the streaming thread


# --- What `pip install .[tensorrt]` brings (issue 10 item 3) -------------------------------------------------
def test_tensorrt_extra_pins_polygraphy_and_no_cuda_binding():
    """The TensorRT extra installs the pinned Polygraphy the backend's device memory uses, and no cuda-python (whose
    builds for a newer CUDA than JetPack 6's 12.6 fail with cudaErrorInsufficientDriver)."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["tensorrt"]
    assert any(re.fullmatch(r"polygraphy==\d+\.\d+\.\d+", line) for line in extra), extra
    assert not any("cuda-python" in line for line in extra), extra

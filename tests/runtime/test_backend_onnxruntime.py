"""Runtime backends: onnxruntime against a numpy reference, backend choice, TensorRT logic without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmad.runtime.backends import backend_kind_for_file, load_backend
from mmad.runtime.backends.onnxruntime import PROVIDERS, choose_providers
from mmad.runtime.contract import (
    INPUT_NAME,
    OUTPUT_MAP,
    SCAN_ATTR_PLUGIN_NAMESPACE,
    SCAN_ATTR_PLUGIN_VERSION,
    SCAN_ATTR_SOFTPLUS,
    SCAN_INPUTS,
    SCAN_OP_DOMAIN,
    SCAN_OP_TYPE,
    metadata_props,
)
from mmad.runtime.errors import ConfigError
from mmad.runtime.inspector import FrameInspector
from mmad.runtime.synthetic import SYNTHETIC_THRESHOLD, synthetic_model, synthetic_reference

onnx = pytest.importorskip("onnx", reason="building the test models needs the onnx package")

TOL = 1e-5  # float32 graph vs float64 reference, on values in [0, 1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return synthetic_model(tmp_path_factory.mktemp("model") / "synthetic.onnx", image_size=64)


def test_onnxruntime_matches_the_numpy_reference(model):
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with load_backend(model, "onnxruntime") as backend:
        assert backend.name == "onnxruntime" and (backend.info.height, backend.info.width) == (64, 64)
        assert backend.info.threshold == pytest.approx(SYNTHETIC_THRESHOLD)
        maps, scores = backend.infer(images)
        single_map, single_score = backend.infer(images[1:2])  # the batch is dynamic
    ref_maps, ref_scores = synthetic_reference(images)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32 and scores.shape == (3,)
    assert np.abs(maps - ref_maps).max() <= TOL
    assert np.abs(scores - ref_scores).max() <= TOL
    assert np.abs(single_map[0] - maps[1]).max() <= TOL and single_score[0] == pytest.approx(scores[1], abs=TOL)


def test_infer_rejects_the_wrong_input(model):
    with load_backend(model, "onnxruntime") as backend:
        with pytest.raises(ValueError, match=r"uint8 images \[B, 64, 64, 3\]"):
            backend.infer(np.zeros((1, 32, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            backend.infer(np.zeros((1, 64, 64, 3), np.float32))


def test_inspector_threshold_override_and_roi(model):
    backend = load_backend(model, "onnxruntime")
    frame = np.full((120, 160, 3), 128, np.uint8)
    frame[10:30, 10:30] = 0  # a dark defect in the top-left corner
    assert FrameInspector(backend).inspect(frame).anomalous
    assert not FrameInspector(backend, threshold=5.0).inspect(frame).anomalous
    from mmad.runtime.processing import Roi

    assert not FrameInspector(backend, roi=Roi(60, 40, 100, 80)).inspect(frame).anomalous  # the defect is outside


def test_backend_choice_and_errors(model, tmp_path):
    assert backend_kind_for_file("a/model.engine") == "tensorrt"
    assert backend_kind_for_file("m.plan") == "tensorrt"
    assert backend_kind_for_file("m.ONNX") == "onnxruntime"
    with pytest.raises(ConfigError, match="unknown model type"):
        backend_kind_for_file("m.pt")
    with pytest.raises(ConfigError, match="no such file"):
        load_backend(tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="--backend 'magic'"):
        load_backend(model, "magic")
    with pytest.raises(ConfigError, match="build an engine"):
        load_backend(model, "tensorrt")
    assert load_backend(model, "onnxruntime-cpu").describe() == "onnxruntime CPUExecutionProvider"


def test_choose_providers_best_first():
    every = list(PROVIDERS.values())
    assert choose_providers("auto", every) == [PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]]
    assert choose_providers("auto", [PROVIDERS["cpu"]]) == [PROVIDERS["cpu"]]
    assert choose_providers("cuda", every) == [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    with pytest.raises(ConfigError, match="no CUDAExecutionProvider"):
        choose_providers("cuda", [PROVIDERS["cpu"]])


def scan_graph(path: Path, image_size: int | None = None) -> Path:
    """A graph with the SelectiveScan custom op: the bare op (image_size None), or a model in the contract's I/O
    whose anomaly map is the scan of the image's grey levels (u = delta, B = C = u, D = 1 channel, N = 1)."""
    from onnx import TensorProto, helper, numpy_helper

    scan_attrs = {SCAN_ATTR_SOFTPLUS: 1, SCAN_ATTR_PLUGIN_NAMESPACE: "mmad", SCAN_ATTR_PLUGIN_VERSION: "1"}
    if image_size is None:
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in SCAN_INPUTS]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        nodes = [helper.make_node(SCAN_OP_TYPE, list(SCAN_INPUTS), ["y"], domain=SCAN_OP_DOMAIN, **scan_attrs)]
        initializers, metadata = [], {}
    else:
        s = image_size
        inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", s, s, 3])]
        outputs = [helper.make_tensor_value_info(OUTPUT_MAP, TensorProto.FLOAT, ["batch", 1, s, s])]
        consts = {"A": [[-1.0]], "D": [0.5], "delta_bias": [0.0], "scale": 1 / 255}
        consts |= {"shape_u": [0, 1, -1], "shape_bc": [0, 1, 1, -1], "shape_map": [0, 1, s, s]}
        initializers = [
            numpy_helper.from_array(np.array(v, np.int64 if k.startswith("shape") else np.float32), k)
            for k, v in consts.items()
        ]
        nodes = [
            helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels"], ["grey"], axes=[3], keepdims=0),
            helper.make_node("Mul", ["grey", "scale"], ["grey01"]),
            helper.make_node("Reshape", ["grey01", "shape_u"], ["u"]),
            helper.make_node("Reshape", ["grey01", "shape_bc"], ["bc"]),
            helper.make_node(
                SCAN_OP_TYPE, ["u", "u", "A", "bc", "bc", "D", "delta_bias"], ["y"], domain=SCAN_OP_DOMAIN, **scan_attrs
            ),
            helper.make_node("Reshape", ["y", "shape_map"], [OUTPUT_MAP]),
        ]
        metadata = metadata_props({"image_size": s, "scan": "custom-op", "threshold": 0.5})
    graph = helper.make_graph(nodes, "scan", inputs, outputs, initializer=initializers)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SCAN_OP_DOMAIN, 1)])
    m.ir_version = 8
    for key, value in metadata.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(path))
    return path


def test_custom_op_graph_without_its_library_is_a_clear_error(tmp_path, monkeypatch):
    """Without onnxruntime-extensions (simulated) there is no kernel for the op: a ConfigError that says so."""
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # `import onnxruntime_extensions` fails
    path = scan_graph(tmp_path / "custom.onnx")
    with pytest.raises(ConfigError, match="custom.onnx") as err:
        load_backend(path, "onnxruntime")
    assert SCAN_OP_TYPE in str(err.value) or "onnxruntime-extensions" in str(err.value)
    assert "onnxruntime-extensions" in str(err.value) and "--op-library" in str(err.value)
    with pytest.raises(ConfigError, match="--op-library"):
        load_backend(path, "onnxruntime", op_library=str(tmp_path / "missing.so"))


def test_custom_op_graph_runs_on_the_projects_kernel(tmp_path):
    """No --op-library: the backend registers the project's C++ scan (onnxruntime-extensions) by itself."""
    pytest.importorskip("onnxruntime_extensions", reason="the project's custom-op kernel runs through it")
    from mmad.plugins.selective_scan import cpu

    if cpu.find_compiler() is None:
        pytest.skip("no C++ compiler for the CPU scan")
    images = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    with load_backend(scan_graph(tmp_path / "model.onnx", image_size=8), "onnxruntime", threads=1) as backend:
        assert backend.info.scan == "custom-op" and (backend.info.height, backend.info.width) == (8, 8)
        maps, scores = backend.infer(images)
    grey = (images.astype(np.float32).mean(axis=3) / 255).reshape(2, 1, 64)
    bc = grey.reshape(2, 1, 1, 64)
    one = np.float32
    expected = cpu.scan_forward(
        grey, grey, np.array([[-1.0]], one), bc, bc, np.array([0.5], one), np.array([0.0], one), delta_softplus=True
    ).reshape(2, 8, 8)
    assert maps.shape == (2, 8, 8) and np.abs(maps - expected).max() <= TOL * max(np.abs(expected).max(), 1.0)
    assert np.allclose(scores, expected.reshape(2, -1).max(axis=1))


def test_runtime_modules_never_import_torch(model):
    """Load and run a model through every non-GStreamer runtime module in a fresh interpreter."""
    code = (
        "import sys, numpy as np\n"
        "import mmad.runtime.cli, mmad.runtime.stream.command, mmad.runtime.bench.command, mmad.runtime.backends\n"
        "import mmad.runtime.backends.onnxruntime, mmad.runtime.contract, mmad.runtime.options\n"
        "import mmad.runtime.backends.tensorrt, mmad.runtime.processing, mmad.runtime.events, mmad.runtime.inspector\n"
        "import mmad.runtime.sources, mmad.runtime.stream, mmad.runtime.model_info\n"
        "from mmad.runtime.backends import load_backend\n"
        f"load_backend({str(model)!r}).infer(np.zeros((1, 64, 64, 3), np.uint8))\n"
        "mmad.runtime.cli.build_parser()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

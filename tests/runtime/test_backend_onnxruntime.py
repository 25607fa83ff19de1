"""Runtime backends: onnxruntime against a numpy reference, backend choice, TensorRT logic without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmad.runtime.backends import backend_kind_for_file, load_backend
from mmad.runtime.backends.onnxruntime import PROVIDERS, choose_providers
from mmad.runtime.contract import SCAN_OP_DOMAIN, SCAN_OP_TYPE
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
    with load_backend(model) as backend:
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
    with load_backend(model) as backend:
        with pytest.raises(ValueError, match=r"uint8 images \[B, 64, 64, 3\]"):
            backend.infer(np.zeros((1, 32, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            backend.infer(np.zeros((1, 64, 64, 3), np.float32))


def test_inspector_threshold_override_and_roi(model):
    backend = load_backend(model)
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


def test_custom_op_graph_without_its_library_is_a_clear_error(tmp_path):
    from onnx import TensorProto, helper

    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
        for n in ("u", "delta", "A", "B", "C", "D", "delta_bias")
    ]
    node = helper.make_node(SCAN_OP_TYPE, [i.name for i in inputs], ["y"], domain=SCAN_OP_DOMAIN, delta_softplus=1)
    graph = helper.make_graph([node], "scan", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SCAN_OP_DOMAIN, 1)])
    m.ir_version = 8
    path = tmp_path / "custom.onnx"
    onnx.save(m, str(path))
    with pytest.raises(ConfigError, match="custom.onnx") as err:
        load_backend(path)
    assert SCAN_OP_TYPE in str(err.value) or "onnxruntime-extensions" in str(err.value)
    with pytest.raises(ConfigError, match="--op-library"):
        load_backend(path, op_library=str(tmp_path / "missing.so"))


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

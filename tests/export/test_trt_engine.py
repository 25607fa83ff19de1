"""export/to_trt.py: every check that runs before TensorRT is needed (as a subprocess, exit code 2 and a
message naming the file or option), the "TensorRT not available" exit on machines without it, the
plugin-version and GPU checks, and the sidecar the runtime reads (the contract's EngineSidecar).
Building an engine needs TensorRT, a GPU and the plugin library ($MMAD_TRT_PLUGIN): that test is
marked gpu and skips elsewhere."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmad.export.command import EngineRequest, ExportError, parse_batch
from mmad.export.onnx_graph import save_onnx, write_metadata
from mmad.export.portable import make_portable, single_scan_model
from mmad.export.trt_engine import NoGPU, check_request, gpu_info, sidecar_for
from mmad.runtime import contract
from mmad.runtime.backends.tensorrt_plugin import load_plugin_library, plugin_tensorrt_major
from mmad.runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
META = {
    "image_size": "256",
    "input_layout": "NHWC",
    "input_dtype": "uint8",
    "mean": "[0.485, 0.456, 0.406]",
    "std": "[0.229, 0.224, 0.225]",
    "scan": "custom-op",
    "precision": "fp32",
    "threshold": "0.5",
    "encoder": "efficientnet_lite0",
    "arch": "mmad",
    "model_version": "0.1.0",
    "weights_sha256": "ab" * 32,
}


@pytest.fixture
def scan_onnx(tmp_path) -> Path:
    """A small graph with a SelectiveScan node and MMAD metadata (what the checks look at)."""
    model = single_scan_model(16, 4, 8, 64)
    write_metadata(model, META)
    return save_onnx(model, tmp_path / "scan.onnx")


@pytest.fixture
def plugin_file(tmp_path) -> Path:
    """Stands in for the plugin library where only its existence and version string are read."""
    path = tmp_path / "libmmad_trt_plugins.so"
    path.write_bytes(b"\x7fELF...rodata...libnvinfer.so.10\x00...")
    return path


def to_trt(onnx: Path, *args: str, plugin: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """python export/to_trt.py --onnx ONNX --out <its folder>/m.engine [--plugin-library PLUGIN] ARGS,
    with $MMAD_TRT_PLUGIN only as `env` sets it."""
    environ = {k: v for k, v in os.environ.items() if k != contract.PLUGIN_ENV}
    environ.update(env or {})
    options = ["--onnx", str(onnx), "--out", str(onnx.parent / "m.engine")]
    options += ["--plugin-library", str(plugin)] if plugin else []
    return subprocess.run(
        [sys.executable, "export/to_trt.py", *options, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=environ,
        check=False,
    )


def assert_clear_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_exits_2(scan_onnx, plugin_file, tmp_path):
    done = to_trt(scan_onnx, plugin=plugin_file)
    assert_clear_error(done, "TensorRT not available")
    assert not (tmp_path / "m.engine").exists()


def test_missing_onnx(tmp_path, plugin_file):
    done = to_trt(tmp_path / "nope.onnx", plugin=plugin_file)
    assert_clear_error(done, "nope.onnx: no such file")


def test_corrupt_onnx(tmp_path, plugin_file):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    done = to_trt(bad, plugin=plugin_file)
    assert_clear_error(done, "bad.onnx", "not a readable ONNX model")


def test_onnx_without_metadata(tmp_path, plugin_file):
    path = save_onnx(single_scan_model(16, 4, 8, 64), tmp_path / "plain.onnx")
    done = to_trt(path, plugin=plugin_file)
    assert_clear_error(done, "plain.onnx", "metadata lacks")


def test_int8_without_calibration_or_qdq(scan_onnx, plugin_file):
    done = to_trt(scan_onnx, "--precision", "int8", plugin=plugin_file)
    assert_clear_error(done, "--precision int8", "no Q/DQ nodes", "--calib-data")


def test_calibration_folder_missing(scan_onnx, plugin_file, tmp_path):
    done = to_trt(scan_onnx, "--precision", "int8", "--calib-data", str(tmp_path / "no-images"), plugin=plugin_file)
    assert_clear_error(done, "--calib-data", "no such folder")


def test_plugin_file_missing(scan_onnx, tmp_path):
    done = to_trt(scan_onnx, plugin=tmp_path / "lib.so")
    assert_clear_error(done, "--plugin-library", "lib.so: no such file")
    done = to_trt(scan_onnx, env={contract.PLUGIN_ENV: str(tmp_path / "env.so")})
    assert_clear_error(done, "$MMAD_TRT_PLUGIN", "env.so: no such file")


def test_custom_op_graph_needs_a_plugin(scan_onnx, tmp_path):
    done = to_trt(scan_onnx)
    assert_clear_error(done, "SelectiveScan", "--plugin-library")


def test_portable_graph_needs_no_plugin(scan_onnx, tmp_path):
    portable = make_portable(onnx.load(str(scan_onnx)))
    checked = check_request(EngineRequest(onnx=save_onnx(portable, tmp_path / "p.onnx"), out=tmp_path / "m.engine"))
    assert not checked.custom_op and checked.plugin is None and checked.precision == "fp32"


def test_precision_rules(scan_onnx, plugin_file, tmp_path):
    base = {"out": tmp_path / "m.engine", "plugin_library": plugin_file}
    assert check_request(EngineRequest(onnx=scan_onnx, precision="fp16", **base)).precision == "fp16"
    calibrated = check_request(EngineRequest(onnx=scan_onnx, precision="int8", calib_data=[tmp_path], **base))
    assert calibrated.precision == "int8" and calibrated.onnx_precision == "fp32"
    half = onnx.load(str(scan_onnx))
    write_metadata(half, {"precision": "fp16"})
    with pytest.raises(ExportError, match="is a fp16 graph"):
        check_request(EngineRequest(onnx=save_onnx(half, tmp_path / "h.onnx"), precision="fp32", **base))


def test_qdq_graph_is_int8_without_calibration(tmp_path, plugin_file):
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        helper.make_node("MatMul", ["dq", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [w, scale, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    write_metadata(model, {**META, "scan": "portable"})
    checked = check_request(
        EngineRequest(
            onnx=save_onnx(model, tmp_path / "q.onnx"),
            out=tmp_path / "m.engine",
            precision="int8",
            plugin_library=plugin_file,
        )
    )
    assert checked.onnx_precision == checked.precision == "int8"


@pytest.mark.parametrize("text", ["4,2,8", "0,1,2", "1,2", "a,b,c"])
def test_bad_batch_range(text, scan_onnx, plugin_file, tmp_path):
    with pytest.raises(ExportError, match="--batch"):
        parse_batch(text)
    done = to_trt(scan_onnx, "--batch", text, plugin=plugin_file)
    assert_clear_error(done, "--batch")


def test_plugin_built_for_another_tensorrt(plugin_file):
    assert plugin_tensorrt_major(plugin_file) == 10
    fake_trt = SimpleNamespace(__version__="11.1.0.5", get_plugin_registry=lambda: pytest.fail("must not load"))
    with pytest.raises(ConfigError, match="built for TensorRT 10, this is TensorRT 11.1.0.5"):
        load_plugin_library(fake_trt, plugin_file)


def test_no_gpu_is_a_clear_error():
    try:
        name, capability = gpu_info()
    except NoGPU as err:
        assert "no CUDA GPU available" in str(err)
    else:
        pytest.skip(f"a GPU is present here ({name}, sm {capability})")


def test_sidecar_is_what_the_runtime_reads(scan_onnx, plugin_file, tmp_path):
    engine = tmp_path / "m.engine"
    checked = check_request(
        EngineRequest(onnx=scan_onnx, out=engine, plugin_library=plugin_file, precision="fp16", batch=(1, 2, 4))
    )
    sidecar = sidecar_for(checked, "10.3.0.26", "Orin", "8.7", strongly_typed=False, source=scan_onnx)
    written = contract.write_sidecar(engine, sidecar)
    assert written == contract.sidecar_path(engine) == tmp_path / "m.engine.json"
    assert set(json.loads(written.read_text())) == {  # the JSON fields the sidecar has always had
        "tensorrt_version", "gpu", "compute_capability", "hardware_compatibility", "precision", "strongly_typed",
        "plugin_library", "plugin_sha256", "onnx", "onnx_sha256", "input", "threshold", "metadata",
    }  # fmt: skip
    read = contract.read_sidecar(engine)
    assert (read.tensorrt_version, read.gpu, read.compute_capability) == ("10.3.0.26", "Orin", "8.7")
    assert read.plugin_path().resolve() == plugin_file.resolve()
    assert json.loads(written.read_text())["metadata"][contract.META_PREFIX + "precision"] == "fp16"
    assert read.metadata["precision"] == "fp16"
    assert read.metadata["threshold"] == "0.5"
    assert sidecar.input["min"] == [1, 256, 256, 3] and sidecar.input["max"] == [4, 256, 256, 3]
    assert sidecar.threshold == 0.5 and len(sidecar.plugin_sha256) == 64


@pytest.mark.gpu
def test_build_engine_on_a_gpu(tmp_path, tiny_checkpoint):
    """Tiny model -> ONNX -> engine with the plugin; the engine's outputs match onnxruntime's within
    the contract's TF32 bound (TensorRT's "FP32" engines allow TF32)."""
    plugin = os.environ.get(contract.PLUGIN_ENV)
    if not HAS_TENSORRT or not plugin:
        pytest.skip("needs TensorRT and $MMAD_TRT_PLUGIN (libmmad_trt_plugins.so)")
    try:
        gpu_info()
    except NoGPU as err:
        pytest.skip(str(err))
    from mmad.export.onnx_export import build_onnx
    from mmad.plugins.selective_scan.onnxruntime_op import inference_session
    from mmad.runtime.backends.tensorrt import TensorRTBackend

    onnx_path = build_onnx(tiny_checkpoint, tmp_path / "m.onnx").path
    done = to_trt(onnx_path, "--batch", "1,2,4", plugin=Path(plugin))
    assert done.returncode == 0, done.stderr
    sidecar = json.loads(contract.sidecar_path(tmp_path / "m.engine").read_text())
    assert sidecar["precision"] == "fp32" and sidecar["gpu"]
    images = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    maps, scores = TensorRTBackend(tmp_path / "m.engine").infer(images)
    ref_maps, ref_scores = inference_session(onnx_path).run(None, {contract.INPUT_NAME: images})
    assert contract.relative_max_diff(maps, ref_maps[:, 0]) <= contract.MODEL_TOL_TF32
    assert contract.relative_max_diff(scores, ref_scores) <= contract.MODEL_TOL_TF32

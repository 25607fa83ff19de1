"""The OpenVINO backend against PyTorch eager on the tiny checkpoint, and its place among the backends.

The checkpoint is exported to the custom-op graph (served by the project's OpenVINO extension) and the portable
graph; both run in OpenVINO on generated camera frames, held to the whole-model tolerances of the contract
(MODEL_TOL_FP32, MODEL_TOL_FP16; MODEL_TOL_BF16 where the CPU runs the FP16 hint in bfloat16) against PyTorch
on the same pre-processed images.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmad.runtime import backends
from mmad.runtime.backends import load_backend
from mmad.runtime.bench.frames import generated_frames
from mmad.runtime.contract import MODEL_TOL_BF16, MODEL_TOL_FP16, MODEL_TOL_FP32, relative_max_diff
from mmad.runtime.errors import ConfigError
from mmad.runtime.processing import full_frame, model_input

ov = pytest.importorskip("openvino", reason="the OpenVINO backend needs the openvino package")
pytest.importorskip("onnx", reason="exporting the tiny checkpoint needs the export extra")
pytest.importorskip("torch", reason="the reference is PyTorch eager")


@pytest.fixture(scope="module")
def graphs(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoint as the custom-op graph and the portable graph."""
    from mmad.export.onnx_export import build_onnx

    out = tmp_path_factory.mktemp("openvino_graphs")
    made = {}
    for kind, portable in (("custom-op", False), ("portable", True)):
        made[kind] = out / f"{kind}.onnx"
        build_onnx(tiny_checkpoint, made[kind], portable=portable)
    return made


@pytest.fixture(scope="module")
def frames_and_reference(tiny_checkpoint) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three generated 640x480 inspection frames (one with a defect) as model inputs, and PyTorch's maps, scores."""
    from mmad.training.inference import TorchBackend

    torch_backend = TorchBackend(tiny_checkpoint, threads=1)
    size = (torch_backend.image_size, torch_backend.image_size)
    frames, _ = generated_frames((640, 480), 3)
    images = np.stack([model_input(f, full_frame(f), size) for f in frames])
    maps, scores = torch_backend.infer(images)
    return images, maps, scores


@pytest.mark.parametrize("kind", ["custom-op", "portable"])
def test_fp32_matches_pytorch(kind, graphs, frames_and_reference):
    images, ref_maps, ref_scores = frames_and_reference
    with load_backend(graphs[kind], "openvino", threads=2) as backend:
        assert backend.name == "openvino" and backend.info.scan == kind
        assert "fp32 (runs f32)" in backend.describe()
        maps, scores = backend.infer(images)
        single_map, single_score = backend.infer(images[1:2])  # another batch size: compiled on first use
    assert maps.shape == ref_maps.shape and maps.dtype == np.float32 and scores.shape == (3,)
    assert relative_max_diff(maps, ref_maps) <= MODEL_TOL_FP32
    assert relative_max_diff(scores, ref_scores) <= MODEL_TOL_FP32
    assert relative_max_diff(single_map, ref_maps[1:2]) <= MODEL_TOL_FP32
    assert relative_max_diff(single_score, ref_scores[1:2]) <= MODEL_TOL_FP32


def test_fp16_within_the_fp16_tolerance(graphs, frames_and_reference):
    """The FP16 hint; the scan stays float32. A CPU without FP16 arithmetic runs bf16 (OpenVINO's choice, said
    by describe() and the metadata's precision), whose 8-bit significand rounds 8x coarser than float16's 11-bit
    one: it is held to 8x the FP16 tolerance."""
    images, ref_maps, ref_scores = frames_and_reference
    with load_backend(graphs["custom-op"], "openvino-fp16", threads=2) as backend:
        ran = backend.runs_precision()
        assert backend.precision == "fp16" and ran in ("f16", "bf16") and f"fp16 (runs {ran})" in backend.describe()
        assert backend.info.metadata["precision"] == {"f16": "fp16", "bf16": "bf16"}[ran]
        maps, scores = backend.infer(images)
    tolerance = MODEL_TOL_BF16 if ran == "bf16" else MODEL_TOL_FP16
    assert relative_max_diff(maps, ref_maps) <= tolerance
    assert relative_max_diff(scores, ref_scores) <= tolerance


def test_same_metadata_and_thresholds_as_onnxruntime(graphs):
    with (
        load_backend(graphs["custom-op"], "openvino") as ov_backend,
        load_backend(graphs["custom-op"], "onnxruntime") as ort_backend,
    ):
        a, b = ov_backend.info, ort_backend.info
    assert (a.height, a.width, a.threshold, a.pixel_threshold) == (b.height, b.width, b.threshold, b.pixel_threshold)
    assert dict(a.metadata) == dict(b.metadata) and a.threshold is not None
    assert (a.input_name, a.map_name, a.score_name, a.threshold_source) == (
        b.input_name,
        b.map_name,
        b.score_name,
        b.threshold_source,
    )


def test_threads_reach_openvino(graphs):
    with load_backend(graphs["custom-op"], "openvino", threads=1) as backend:
        compiled = next(iter(backend._requests.values())).get_compiled_model()
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_bad_input_and_bad_choices_are_clear_errors(graphs, tmp_path):
    with load_backend(graphs["portable"], "openvino") as backend:
        with pytest.raises(ValueError, match=r"uint8 images \[B, 256, 256, 3\]"):
            backend.infer(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match="--backend 'openvino-int8'"):
        load_backend(graphs["portable"], "openvino-int8")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(ConfigError, match="--backend openvino cannot run model.engine: it is a TensorRT engine"):
        load_backend(engine, "openvino")
    not_onnx = tmp_path / "broken.onnx"
    not_onnx.write_bytes(b"\x00not a model")
    with pytest.raises(ConfigError, match="broken.onnx: OpenVINO cannot read it"):
        load_backend(not_onnx, "openvino")


def test_missing_openvino_package_names_the_fix(graphs, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails
    with pytest.raises(ConfigError, match="needs the openvino package: pip install openvino"):
        load_backend(graphs["portable"], "openvino")


def test_auto_picks_tensorrt_then_openvino_then_onnxruntime(monkeypatch):
    import importlib.util

    import onnxruntime

    assert backends.auto_family("tensorrt") == "tensorrt"
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert backends.auto_family("onnxruntime") == "openvino"
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert backends.auto_family("onnxruntime") == "onnxruntime"  # an NVIDIA GPU: TensorRT / CUDA through onnxruntime
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real_find_spec(name, *a)
    )
    assert backends.auto_family("onnxruntime") == "onnxruntime"  # no OpenVINO installed


def test_openvino_backend_never_imports_torch(graphs):
    """The runtime's OpenVINO path, extension included, in a fresh interpreter: no torch."""
    code = (
        "import sys, numpy as np\n"
        "from mmad.runtime.backends import load_backend\n"
        f"b = load_backend({str(graphs['custom-op'])!r}, 'openvino', threads=1)\n"
        "maps, scores = b.infer(np.zeros((1, b.info.height, b.info.width, 3), np.uint8))\n"
        "assert maps.shape == (1, b.info.height, b.info.width) and np.isfinite(scores).all()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

"""ONNX export: the SelectiveScan node contract, metadata round trip, the custom-op graph (its op
served by the C++ scan through onnxruntime-extensions) and the portable graph against PyTorch on
real and generated images, the portable scan against the float64 reference, FP16 and INT8 graphs,
and the errors of the export scripts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import TINY_THRESHOLDS
from onnx import TensorProto

from mmad.export.onnx_export import ImageInputModel, build_onnx, export_graph, export_metadata
from mmad.export.onnx_graph import (
    ExportError,
    is_qdq,
    load_onnx,
    read_metadata,
    require_metadata,
    save_onnx,
    scan_nodes,
    write_metadata,
)
from mmad.export.portable import make_portable, single_scan_model
from mmad.plugins.selective_scan import selective_scan_ref
from mmad.plugins.selective_scan.onnxruntime_op import inference_session
from mmad.plugins.selective_scan.problems import MMAD_G, MMAD_N, MMAD_STAGE_SHAPES
from mmad.runtime import contract
from mmad.runtime.contract import MODEL_TOL_FP32, relative_max_diff
from mmad.training.checkpoint import load_model
from mmad.training.data import ImageTransform, TestDataset, find_categories
from mmad.training.models import SS2D

REPO = Path(__file__).resolve().parents[2]


# --- fixtures (the checkpoint is the conftest's tiny_checkpoint, with TINY_THRESHOLDS) ----------------------
@pytest.fixture(scope="module")
def graphs(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The float32 custom-op graph of the checkpoint and its portable form, as files."""
    out = tmp_path_factory.mktemp("onnx")
    model, info = load_model(tiny_checkpoint)
    graph, _ = export_graph(model, info)
    return {
        "custom": save_onnx(graph, out / "model.onnx"),
        "portable": save_onnx(make_portable(graph), out / "portable.onnx"),
    }


@pytest.fixture(scope="module")
def generated_root(generated_dataset) -> Path:
    """One generated category (MVTec layout) of the conftest's generated_dataset."""
    return generated_dataset / "object"


@pytest.fixture(scope="module", params=["bottle", "generated"])
def case(request, generated_root, real_dataset, tiny_checkpoint) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three test images, uint8 [3, 256, 256, 3] (real: MVTec bottle, when present; or generated),
    with PyTorch's maps [3, 1, 256, 256] and scores [3] for them."""
    root = real_dataset("bottle") if request.param == "bottle" else generated_root
    dataset = TestDataset(find_categories([str(root)]), ImageTransform(256))
    picks = np.linspace(0, len(dataset) - 1, 3).round().astype(int)
    images = np.stack([dataset.raw_image(int(i)) for i in picks])
    return (images, *torch_outputs(tiny_checkpoint, images))


def torch_outputs(checkpoint: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model, _ = load_model(checkpoint)
    with torch.no_grad():
        maps, scores = ImageInputModel(model)(torch.from_numpy(images))
    return maps.numpy(), scores.numpy()


def onnx_outputs(path: Path, images: np.ndarray, custom_ops: bool = True) -> tuple[np.ndarray, np.ndarray]:
    session = inference_session(path, custom_ops=custom_ops)
    maps, scores = session.run([contract.OUTPUT_MAP, contract.OUTPUT_SCORE], {contract.INPUT_NAME: images})
    return maps, scores


# --- the graph ----------------------------------------------------------------------------------------------
def test_scan_nodes_follow_the_contract(graphs, tiny_checkpoint):
    model = load_onnx(graphs["custom"])
    nodes = scan_nodes(model)
    torch_model, _ = load_model(tiny_checkpoint)
    ss2d = [m for m in torch_model.modules() if isinstance(m, SS2D)]
    assert len(nodes) == len(ss2d) > 0  # one node per scan call
    assert not [f for f in model.functions if f.name == contract.SCAN_OP_TYPE]
    opsets = {(o.domain, o.version) for o in model.opset_import}
    assert (contract.SCAN_OP_DOMAIN, contract.SCAN_OP_DOMAIN_VERSION) in opsets
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node, block in zip(nodes, ss2d):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {
            contract.SCAN_ATTR_SOFTPLUS: 1,
            contract.SCAN_ATTR_PLUGIN_NAMESPACE: contract.SCAN_PLUGIN_NAMESPACE.encode(),
            contract.SCAN_ATTR_PLUGIN_VERSION: contract.SCAN_PLUGIN_VERSION.encode(),
        }
        assert len(node.input) == len(contract.SCAN_INPUTS) and len(node.output) == 1
        # A is a constant equal to the model's -exp(A_logs), in the traced order of the calls.
        np.testing.assert_array_equal(inits[node.input[2]], -torch.exp(block.A_logs.detach()).numpy())
        np.testing.assert_array_equal(inits[node.input[5]], block.Ds.detach().numpy())


def test_graph_io_and_checker(graphs):
    for path in graphs.values():
        model = load_onnx(path)
        onnx.checker.check_model(model)
        (inp,), outs = model.graph.input, model.graph.output
        assert inp.name == contract.INPUT_NAME and inp.type.tensor_type.elem_type == TensorProto.UINT8
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims[1:] == [256, 256, 3] and isinstance(dims[0], str)  # dynamic batch, NHWC
        assert [o.name for o in outs] == [contract.OUTPUT_MAP, contract.OUTPUT_SCORE]
        assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in outs)


def test_portable_graph_has_standard_ops_only(graphs):
    model = load_onnx(graphs["portable"])
    assert not scan_nodes(model)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert contract.SCAN_OP_DOMAIN not in {o.domain for o in model.opset_import}
    assert read_metadata(model)["scan"] == "portable"


def test_metadata_round_trip(graphs, tiny_checkpoint):
    from mmad.runtime.model_info import model_info_from_metadata

    info_json = json.loads((tiny_checkpoint / "checkpoint.json").read_text())
    weights_hash = hashlib.sha256((tiny_checkpoint / "model.safetensors").read_bytes()).hexdigest()
    session = inference_session(graphs["custom"])
    meta = session.get_modelmeta().custom_metadata_map
    assert {k for k in meta if k.startswith(contract.META_PREFIX)} <= {
        contract.META_PREFIX + k for k in contract.META_KEYS
    }
    stripped = read_metadata(load_onnx(graphs["custom"]))
    assert stripped == {
        k[len(contract.META_PREFIX) :]: v for k, v in meta.items() if k.startswith(contract.META_PREFIX)
    }
    assert float(stripped["threshold"]) == TINY_THRESHOLDS[contract.THRESHOLD_NORMAL]
    assert float(stripped["threshold_f1"]) == TINY_THRESHOLDS[contract.THRESHOLD_F1]
    # An older checkpoint (only "normal_quantile") still exports its threshold, named for its rule.
    assert stripped["threshold_rule"] == "quantile"
    assert not {"pixel_threshold", "threshold_images", "category_thresholds"} & set(stripped)
    assert stripped["weights_sha256"] == weights_hash
    assert stripped["model_version"] == info_json["package_version"]
    assert json.loads(stripped["mean"]) == info_json["mean"] and json.loads(stripped["std"]) == info_json["std"]
    assert (stripped["encoder"], stripped["arch"], int(stripped["image_size"])) == (
        info_json["encoder"],
        info_json["arch"],
        info_json["image_size"],
    )
    assert (stripped["scan"], stripped["precision"]) == ("custom-op", "fp32")
    assert (stripped["input_layout"], stripped["input_dtype"]) == ("NHWC", "uint8")
    # The runtime reads the same file back.
    info = model_info_from_metadata(
        meta,
        source="model.onnx",
        input_names=[contract.INPUT_NAME],
        output_names=[contract.OUTPUT_MAP, contract.OUTPUT_SCORE],
    )
    assert (info.height, info.width, info.threshold, info.scan) == (
        256,
        256,
        TINY_THRESHOLDS[contract.THRESHOLD_NORMAL],
        "custom-op",
    )


def test_metadata_round_trip_of_per_category_thresholds(graphs, tiny_checkpoint, tmp_path):
    """A checkpoint with training's per-category deployment thresholds: every key reaches the model's metadata."""
    from mmad.runtime.model_info import model_info_from_metadata
    from mmad.training.thresholds import DEPLOYMENT, combine_categories

    per_category = {
        "object": {"image": 0.31, "pixel": 0.22, "images": 20, "rule": "gumbel", "expected_false_alarm_rate": 1e-3},
        "texture": {"image": 0.45, "pixel": 0.29, "images": 24, "rule": "gumbel", "expected_false_alarm_rate": 1e-3},
    }
    _, info = load_model(tiny_checkpoint)
    info.thresholds = {DEPLOYMENT: combine_categories(per_category, 1e-3), contract.THRESHOLD_F1: 0.4}
    graph = load_onnx(graphs["custom"])
    write_metadata(graph, export_metadata(info, scan="custom-op", precision="fp32"))
    path = save_onnx(graph, tmp_path / "categories.onnx")
    meta = inference_session(path).get_modelmeta().custom_metadata_map
    stripped = contract.read_metadata(meta)
    assert (float(stripped["threshold"]), float(stripped["pixel_threshold"])) == (0.45, 0.29)  # the maxima
    assert (stripped["threshold_rule"], int(stripped["threshold_images"])) == ("gumbel", 44)
    assert float(stripped["threshold_f1"]) == 0.4
    assert json.loads(stripped["category_thresholds"]) == {
        name: {"image": c["image"], "pixel": c["pixel"], "images": c["images"]} for name, c in per_category.items()
    }
    info = model_info_from_metadata(
        meta,
        source="categories.onnx",
        input_names=[contract.INPUT_NAME],
        output_names=[contract.OUTPUT_MAP, contract.OUTPUT_SCORE],
    )
    assert info.threshold == 0.45


# --- numbers: graphs against PyTorch -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["custom", "portable"])
def test_graph_matches_pytorch(kind, graphs, case):
    """Batch 3 (the shape folding evaluated the graph at batch 1 and 2 only) and batch 1."""
    images, ref_maps, ref_scores = case
    maps, scores = onnx_outputs(graphs[kind], images, custom_ops=kind == "custom")
    assert maps.shape == ref_maps.shape == (3, 1, 256, 256) and scores.shape == (3,)
    assert relative_max_diff(maps, ref_maps) <= MODEL_TOL_FP32
    assert relative_max_diff(scores, ref_scores) <= MODEL_TOL_FP32
    assert np.array_equal(scores, maps.reshape(3, -1).max(axis=1))  # the score is the map's max
    single, _ = onnx_outputs(graphs[kind], images[1:2], custom_ops=kind == "custom")
    assert relative_max_diff(single, ref_maps[1:2]) <= MODEL_TOL_FP32


# --- the scan alone: custom op and portable form against the float64 reference ------------------------------
def scan_inputs(b, d, n, g, length, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "u": rng.standard_normal((b, d, length)).astype(dtype),
        "delta": (0.5 * rng.standard_normal((b, d, length)) - 1.0).astype(dtype),
        "A": -np.exp(0.5 * rng.standard_normal((d, n))).astype(np.float32),
        "B": rng.standard_normal((b, g, n, length)).astype(dtype),
        "C": rng.standard_normal((b, g, n, length)).astype(dtype),
        "D": rng.standard_normal(d).astype(np.float32),
        "delta_bias": (0.5 * rng.standard_normal(d)).astype(np.float32),
    }


def reference(x: dict, softplus: bool = True) -> np.ndarray:
    tensors = [torch.from_numpy(x[k].astype(np.float64)) for k in contract.SCAN_INPUTS]
    return selective_scan_ref(*tensors, delta_softplus=softplus).numpy()


# (B, D, N, G, L): every (D, L) of the fast preset at 256 x 256 (decoder stages 8..64 and the fuser),
# every stage of the paper's model (the op contract's stage shapes), and odd lengths with B > 1.
PAPER_STAGES = [(1, d, MMAD_N, MMAD_G, length) for d, length in MMAD_STAGE_SHAPES]
SCAN_SHAPES = [
    (1, 1024, 16, 8, 64),
    (1, 512, 16, 8, 256),
    (1, 256, 16, 8, 1024),
    (1, 128, 16, 8, 4096),
    (1, 2048, 16, 8, 256),
    (1, 4096, 16, 8, 256),
    (2, 16, 4, 8, 1),
    (2, 16, 4, 8, 7),
    (3, 32, 16, 4, 1000),
]
SCAN_SHAPES += [shape for shape in PAPER_STAGES if shape not in SCAN_SHAPES]


@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=lambda s: "B{}-D{}-N{}-G{}-L{}".format(*s))
def test_scan_forms_match_reference(shape, tmp_path):
    b, d, n, g, length = shape
    x = scan_inputs(b, d, n, g, length)
    ref = reference(x)
    model = single_scan_model(d, n, g, length)
    save_onnx(model, tmp_path / "scan.onnx")
    save_onnx(make_portable(model), tmp_path / "portable.onnx")
    custom = inference_session(tmp_path / "scan.onnx").run(None, x)[0]
    portable = inference_session(tmp_path / "portable.onnx", custom_ops=False).run(None, x)[0]
    assert relative_max_diff(custom, ref) <= contract.SCAN_TOL_FP32
    assert relative_max_diff(portable, ref) <= contract.SCAN_TOL_FP32


@pytest.mark.parametrize("block", [1, 3, 16, 64])
def test_portable_scan_any_block_size(block, tmp_path):
    x = scan_inputs(2, 32, 16, 8, 300, seed=1)
    save_onnx(make_portable(single_scan_model(32, 16, 8, 300), block=block), tmp_path / "p.onnx")
    y = inference_session(tmp_path / "p.onnx", custom_ops=False).run(None, x)[0]
    assert relative_max_diff(y, reference(x)) <= contract.SCAN_TOL_FP32


def test_portable_scan_without_softplus_and_fp16_io(tmp_path):
    x = scan_inputs(2, 32, 16, 8, 200, seed=2)
    # Δ = delta + delta_bias directly: keep it positive, so that exp(Δ·A) decays
    x["delta"], x["delta_bias"] = np.abs(x["delta"]) * 0.1, np.abs(x["delta_bias"]) * 0.1
    save_onnx(make_portable(single_scan_model(32, 16, 8, 200, softplus=False)), tmp_path / "p.onnx")
    y = inference_session(tmp_path / "p.onnx", custom_ops=False).run(None, x)[0]
    assert relative_max_diff(y, reference(x, softplus=False)) <= contract.SCAN_TOL_FP32
    half = {k: v.astype(np.float16) if k in ("u", "delta", "B", "C") else v for k, v in x.items()}
    save_onnx(
        make_portable(single_scan_model(32, 16, 8, 200, softplus=False, elem_type=TensorProto.FLOAT16)),
        tmp_path / "p16.onnx",
    )
    y16 = inference_session(tmp_path / "p16.onnx", custom_ops=False).run(None, half)[0]
    assert y16.dtype == np.float16
    assert relative_max_diff(y16, reference(half, softplus=False)) <= contract.SCAN_TOL_FP16


# --- reduced precision -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fp16_graph(graphs) -> Path:
    """The FP16 form of the custom-op graph, as a file."""
    from mmad.export.precision import to_fp16

    return save_onnx(to_fp16(load_onnx(graphs["custom"])), graphs["custom"].with_name("fp16.onnx"))


def test_fp16_graph_keeps_the_scan_float32(fp16_graph, tmp_path, generated_root):
    fp16 = load_onnx(fp16_graph)
    onnx.checker.check_model(fp16)
    assert read_metadata(fp16)["precision"] == "fp16"
    inits = {i.name: i for i in fp16.graph.initializer}
    producers = {o: n for n in fp16.graph.node for o in n.output}
    assert sum(i.data_type == TensorProto.FLOAT16 for i in inits.values()) > 0
    for node in scan_nodes(fp16):
        for name in node.input:  # float32 constants, or a Cast to float32 of a float16 tensor
            if name in inits:
                assert inits[name].data_type == TensorProto.FLOAT
            else:
                assert producers[name].op_type == "Cast" and producers[name].attribute[0].i == TensorProto.FLOAT
    batch = np.stack([TestDataset(find_categories([str(generated_root)]), ImageTransform(256)).raw_image(0)])
    maps, scores = onnx_outputs(fp16_graph, batch)
    assert maps.dtype == np.float32 and np.isfinite(maps).all() and scores.shape == (1,)
    # Its portable form: the same float16 graph around a float32 scan, so equal up to float16 rounding.
    portable, _ = onnx_outputs(save_onnx(make_portable(fp16), tmp_path / "fp16p.onnx"), batch, custom_ops=False)
    assert relative_max_diff(portable, maps) <= contract.SCAN_TOL_FP16


def test_fp16_graph_is_within_the_fp16_tolerance_of_pytorch(fp16_graph, case):
    """The FP16 custom-op graph against PyTorch float32 (the tiny model's maps move by about 3e-3)."""
    images, ref_maps, ref_scores = case
    maps, scores = onnx_outputs(fp16_graph, images)
    assert relative_max_diff(maps, ref_maps) <= contract.MODEL_TOL_FP16
    assert relative_max_diff(scores, ref_scores) <= contract.MODEL_TOL_FP16


@pytest.mark.slow
def test_int8_graph_quantises_conv_and_matmul_only(graphs, tmp_path, generated_root):
    from mmad.export.precision import calibration_images, to_int8

    int8 = to_int8(load_onnx(graphs["custom"]), calibration_images([generated_root], 4))
    assert is_qdq(int8) and read_metadata(int8)["precision"] == "int8"
    producers = {o: n for n in int8.graph.node for o in n.output}
    consumers = {}
    for node in int8.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    quantised = {
        op for n in int8.graph.node if n.op_type == "DequantizeLinear" for op in consumers.get(n.output[0], [])
    }
    assert quantised <= {"Conv", "MatMul", "Gemm"} and "Conv" in quantised
    assert len(scan_nodes(int8)) == len(scan_nodes(load_onnx(graphs["custom"])))
    blur = [n for n in int8.graph.node if n.name.startswith("/model/blur/") and n.op_type == "Conv"]
    assert len(blur) == 2  # the map's fixed blur stays float: quantised, it would clip anomalies
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for n in blur for i in n.input)
    for node in scan_nodes(int8):  # the scan itself is not quantised
        assert all(producers[i].op_type != "DequantizeLinear" for i in node.input if i in producers)
    save_onnx(int8, tmp_path / "int8.onnx")
    batch = calibration_images([generated_root], 2)
    maps, _ = onnx_outputs(tmp_path / "int8.onnx", batch)
    portable, _ = onnx_outputs(save_onnx(make_portable(int8), tmp_path / "int8p.onnx"), batch, custom_ops=False)
    assert np.isfinite(maps).all()
    assert relative_max_diff(portable, maps) <= MODEL_TOL_FP32  # same quantised graph, two scan forms


# --- errors ----------------------------------------------------------------------------------------------------
def test_metadata_and_load_errors(tmp_path, graphs):
    with pytest.raises(ExportError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00 not a protobuf \xff" * 10)
    with pytest.raises(ExportError, match="not a readable ONNX model"):
        load_onnx(tmp_path / "corrupt.onnx")
    bare = load_onnx(graphs["custom"])
    del bare.metadata_props[:]
    with pytest.raises(ExportError, match="metadata lacks mmad.image_size"):
        require_metadata(bare, "bare.onnx")


def test_build_onnx_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="int8 needs calibration images"):
        build_onnx(tiny_checkpoint, tmp_path / "m.onnx", precision="int8")
    with pytest.raises(ExportError, match="precision must be one of"):
        build_onnx(tiny_checkpoint, tmp_path / "m.onnx", precision="bf16")
    with pytest.raises(ValueError, match="does not exist"):
        build_onnx(tmp_path / "no-such-run", tmp_path / "m.onnx")


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=REPO, check=False)


def test_to_onnx_script_bad_checkpoint(tmp_path):
    done = run_script("export/to_onnx.py", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.onnx"))
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_verify_script(graphs, tiny_checkpoint, generated_root, tmp_path):
    done = run_script(
        "export/verify.py",
        "--checkpoint",
        str(tiny_checkpoint),
        "--onnx",
        str(graphs["custom"]),
        "--data",
        str(generated_root),
        "--max-images",
        "3",
        "--json",
        str(tmp_path / "v.json"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "v.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names[0] == "PyTorch" and any("custom-op" in n for n in names) and any("portable" in n for n in names)
    assert report["ok"] and all(r["map_diff"] <= MODEL_TOL_FP32 for r in report["results"])
    assert "I-AUROC" in done.stdout


def test_runtime_side_modules_import_without_torch():
    """What a Jetson (no PyTorch) uses: the custom op for onnxruntime, `mmad export trt`, the CLI."""
    code = (
        "import sys; import mmad.export, mmad.plugins.selective_scan.onnxruntime_op, mmad.export.cli, "
        "mmad.export.trt_engine, mmad.export.portable, mmad.export.bench_portable; "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr

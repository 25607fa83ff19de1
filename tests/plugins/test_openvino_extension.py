"""The SelectiveScan OpenVINO extension (native/openvino, built by openvino_ext) against the float64 reference.

Each case reads an ONNX graph of one SelectiveScan node, written with the contract's names (op type, domain,
attributes, input names), into OpenVINO with the extension added, and runs it on OpenVINO's CPU plugin.
Tolerances are the op contract's: max|y - y_ref| / max|y_ref| with y_ref the reference in float64 on the same
input values (selective_scan_ref; plain_loop_scan at the big MMAD stage shapes, as in test_scan_op.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmad.plugins.selective_scan import build as scan_build
from mmad.plugins.selective_scan import cpu, openvino_ext, selective_scan_ref
from mmad.plugins.selective_scan.bench_cpu import make_inputs, plain_loop_scan
from mmad.plugins.selective_scan.problems import MMAD_STAGE_SHAPES, SMALL_SHAPES
from mmad.runtime.contract import (
    SCAN_ATTR_PLUGIN_NAMESPACE,
    SCAN_ATTR_PLUGIN_VERSION,
    SCAN_ATTR_SOFTPLUS,
    SCAN_INPUTS,
    SCAN_OP_DOMAIN,
    SCAN_OP_TYPE,
    SCAN_PLUGIN_NAMESPACE,
    SCAN_PLUGIN_VERSION,
    SCAN_TOL_FP16,
    SCAN_TOL_FP32,
    relative_max_diff,
)
from mmad.runtime.errors import ConfigError

ov = pytest.importorskip("openvino", reason="the extension is built against the openvino package")
onnx = pytest.importorskip("onnx", reason="writing the test graphs needs the onnx package")

RANKS = {"u": 3, "delta": 3, "A": 2, "B": 4, "C": 4, "D": 1, "delta_bias": 1}
IO_INPUTS = ("u", "delta", "B", "C")  # typed like y; A, D and delta_bias are always float32


@pytest.fixture(scope="module")
def extension() -> Path:
    try:
        return openvino_ext.extension_library()
    except openvino_ext.ExtensionUnavailable as err:
        pytest.skip(f"cannot build the OpenVINO extension here: {err}")


def scan_graph(path: Path, shapes=None, io_type=None, attrs=None, inputs=SCAN_INPUTS, types=None) -> Path:
    """One SelectiveScan node as an ONNX file. shapes: input name -> shape (default: every axis dynamic);
    io_type: the element type of u, delta, B, C and y (default float32); types: further per-input overrides."""
    from onnx import TensorProto, helper

    io_type = io_type or TensorProto.FLOAT
    elem = {name: io_type if name in IO_INPUTS else TensorProto.FLOAT for name in inputs} | (types or {})
    shapes = shapes or {name: [None] * RANKS[name] for name in inputs}
    node_attrs = {
        SCAN_ATTR_SOFTPLUS: 1,
        SCAN_ATTR_PLUGIN_NAMESPACE: SCAN_PLUGIN_NAMESPACE,
        SCAN_ATTR_PLUGIN_VERSION: SCAN_PLUGIN_VERSION,
    } | (attrs or {})
    node_attrs = {k: v for k, v in node_attrs.items() if v is not None}
    node = helper.make_node(SCAN_OP_TYPE, list(inputs), ["y"], domain=SCAN_OP_DOMAIN, **node_attrs)
    graph = helper.make_graph(
        [node],
        "scan",
        [helper.make_tensor_value_info(n, elem[n], shapes[n]) for n in inputs],
        [helper.make_tensor_value_info("y", io_type, None)],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(SCAN_OP_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def compiled(extension: Path, graph: Path, threads: int = 2):
    core = ov.Core()
    core.add_extension(str(extension))
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    return core.compile_model(core.read_model(str(graph)), "CPU", config)


def realistic_inputs(batch, dim, length, nstate=16, groups=8, softplus=True, seed=0) -> dict[str, np.ndarray]:
    """The scan benchmark's realistic float64 inputs; without softplus, delta carries positive step sizes."""
    x = [t.numpy() for t in make_inputs(batch, dim, length, nstate, groups, dtype=torch.float64, seed=seed)]
    if not softplus:
        x[1] = np.log1p(np.exp(x[1] + x[6][:, None])) - x[6][:, None]
    return dict(zip(SCAN_INPUTS, x))


def reference(inputs: dict[str, np.ndarray], softplus: bool, oracle: str = "reference") -> np.ndarray:
    wide = [torch.from_numpy(inputs[n].astype(np.float64)) for n in SCAN_INPUTS]
    scan = selective_scan_ref if oracle == "reference" else plain_loop_scan
    with torch.no_grad():
        return scan(*wide, delta_softplus=softplus).numpy()


def rounded(inputs: dict[str, np.ndarray], io_dtype) -> dict[str, np.ndarray]:
    """The inputs in the graph's types: u, delta, B, C in io_dtype, the rest float32."""
    return {n: v.astype(io_dtype if n in IO_INPUTS else np.float32) for n, v in inputs.items()}


# --- numerics -------------------------------------------------------------------------------------


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "no-softplus"])
def test_small_shapes_fp32_in_one_dynamic_graph(extension, tmp_path, softplus):
    """Every small shape through one compiled graph with dynamic axes (the sizes are checked at run time)."""
    model = compiled(extension, scan_graph(tmp_path / "scan.onnx", attrs={SCAN_ATTR_SOFTPLUS: int(softplus)}))
    for seed, shape in enumerate(SMALL_SHAPES):
        inputs = rounded(realistic_inputs(*shape, softplus=softplus, seed=seed), np.float32)
        y = model(inputs)[0]
        assert y.shape == inputs["u"].shape and y.dtype == np.float32
        err = relative_max_diff(y, reference(inputs, softplus))
        assert err <= SCAN_TOL_FP32, f"{shape}: {err:.2e} > {SCAN_TOL_FP32:.0e}"


@pytest.mark.parametrize("shape", MMAD_STAGE_SHAPES, ids=lambda s: f"D{s[0]}-L{s[1]}")
def test_mmad_stage_shapes_fp32(extension, tmp_path, shape):
    inputs = rounded(realistic_inputs(1, *shape), np.float32)
    static = {n: list(v.shape) for n, v in inputs.items()}
    y = compiled(extension, scan_graph(tmp_path / "scan.onnx", shapes=static))(inputs)[0]
    err = relative_max_diff(y, reference(inputs, True, oracle="loop"))
    assert err <= SCAN_TOL_FP32, f"{err:.2e} > {SCAN_TOL_FP32:.0e}"


@pytest.mark.parametrize("shape", [SMALL_SHAPES[1], SMALL_SHAPES[3], (1, 512, 1024, 16, 8)], ids=str)
def test_float16_io_within_the_fp16_tolerance(extension, tmp_path, shape):
    """float16 u, delta, B, C and y; the state stays float32 (the reference sees the float16-rounded values)."""
    from onnx import TensorProto

    graph = scan_graph(tmp_path / "scan16.onnx", io_type=TensorProto.FLOAT16)
    inputs = rounded(realistic_inputs(*shape), np.float16)
    y = compiled(extension, graph)(inputs)[0]
    assert y.dtype == np.float16 and y.shape == inputs["u"].shape
    err = relative_max_diff(y, reference(inputs, True))
    assert err <= SCAN_TOL_FP16, f"{err:.2e} > {SCAN_TOL_FP16:.0e}"


@pytest.mark.parametrize("shape", [(1, 512, 256, 16, 8), (3, 24, 33, 5, 3), (1, 8, 33, 16, 1)], ids=str)
def test_one_thread_and_two_give_the_same_result(extension, tmp_path, shape):
    """One thread makes one kernel call; two cut the work into runs of groups, or into channel slices of the only
    group (the last shape). Each channel's scan is the same computation whichever way the work is cut."""
    graph = scan_graph(tmp_path / "scan.onnx")
    inputs = rounded(realistic_inputs(*shape), np.float32)
    one, two = compiled(extension, graph, threads=1)(inputs)[0], compiled(extension, graph, threads=2)(inputs)[0]
    np.testing.assert_array_equal(one, two)
    assert relative_max_diff(two, reference(inputs, True)) <= SCAN_TOL_FP32


def test_a_node_without_delta_softplus_uses_the_contracts_default(extension, tmp_path):
    inputs = rounded(realistic_inputs(2, 16, 9), np.float32)
    y = compiled(extension, scan_graph(tmp_path / "scan.onnx", attrs={SCAN_ATTR_SOFTPLUS: None}))(inputs)[0]
    assert relative_max_diff(y, reference(inputs, True)) <= SCAN_TOL_FP32


def test_an_openvino_ir_written_from_the_graph_reads_back_with_the_extension(extension, tmp_path):
    """The extension also registers the op for OpenVINO's IR reader (type SelectiveScan, version mmad_opset1)."""
    inputs = rounded(realistic_inputs(2, 16, 9), np.float32)
    core = ov.Core()
    core.add_extension(str(extension))
    ov.save_model(core.read_model(str(scan_graph(tmp_path / "scan.onnx"))), str(tmp_path / "scan.xml"))
    assert 'type="SelectiveScan" version="mmad_opset1"' in (tmp_path / "scan.xml").read_text()
    y = core.compile_model(core.read_model(str(tmp_path / "scan.xml")), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert relative_max_diff(y(inputs)[0], reference(inputs, True)) <= SCAN_TOL_FP32


# --- refusals -------------------------------------------------------------------------------------


def read(extension: Path, graph: Path):
    core = ov.Core()
    core.add_extension(str(extension))
    return core.read_model(str(graph))


def stage_shapes(**changes) -> dict[str, list[int]]:
    shapes = {"u": [1, 64, 10], "delta": [1, 64, 10], "A": [64, 16], "B": [1, 8, 16, 10], "C": [1, 8, 16, 10]}
    return shapes | {"D": [64], "delta_bias": [64]} | changes


@pytest.mark.parametrize(
    "shapes, message",
    [
        (stage_shapes(B=[1, 8, 8, 10]), r"input 'B' \[B, G, N, L\] has N = 8 but input 'A' has N = 16"),
        (stage_shapes(C=[1, 8, 16, 11]), r"input 'C' \[B, G, N, L\] has L = 11 but input 'u' has L = 10"),
        (stage_shapes(delta=[2, 64, 10]), r"input 'delta' \[B, D, L\] has B = 2 but input 'u' has B = 1"),
        (stage_shapes(D=[32]), r"input 'D' \[D\] has D = 32 but input 'u' has D = 64"),
        (stage_shapes(A=[64, 16, 1]), r"input 'A' must be \[D, N\] \(rank 2\)"),
        (stage_shapes(B=[1, 6, 16, 10], C=[1, 6, 16, 10]), r"groups G = 6 .* must divide the channels D = 64"),
        (
            stage_shapes(A=[64, 300], B=[1, 8, 300, 10], C=[1, 8, 300, 10]),
            r"N = 300 states is more than the CPU kernel's maximum of 256",
        ),
    ],
    ids=["N", "L", "batch", "D", "rank", "groups", "max-state"],
)
def test_wrong_shapes_are_refused_naming_the_input(extension, tmp_path, shapes, message):
    with pytest.raises(RuntimeError, match=message):
        read(extension, scan_graph(tmp_path / "bad.onnx", shapes=shapes))


@pytest.mark.parametrize(
    "types, message",
    [
        ({"A": 10}, r"input 'A' must be float32, got f16"),  # 10: TensorProto.FLOAT16
        ({"delta_bias": 11}, r"input 'delta_bias' must be float32, got f64"),  # 11: DOUBLE
        ({"u": 6, "delta": 6, "B": 6, "C": 6}, r"u, delta, B and C must be float32 or float16, got i32"),  # 6: INT32
        ({"B": 10}, r"must have one element type, but u is f32 and B is f16"),
    ],
    ids=["A-f16", "bias-f64", "int-io", "mixed-io"],
)
def test_wrong_types_are_refused_naming_the_input(extension, tmp_path, types, message):
    with pytest.raises(RuntimeError, match=message):
        read(extension, scan_graph(tmp_path / "bad.onnx", shapes=stage_shapes(), types=types))


def test_sizes_that_disagree_at_run_time_are_refused(extension, tmp_path):
    """A graph with dynamic axes cannot be checked when it is read: the evaluate() checks the real tensors."""
    model = compiled(extension, scan_graph(tmp_path / "scan.onnx"))
    inputs = rounded(realistic_inputs(1, 64, 10), np.float32)
    inputs["B"] = inputs["B"][..., :9].copy()
    with pytest.raises(RuntimeError, match=r"input 'B' \[B, G, N, L\] has L = 9 but input 'u' has L = 10"):
        model(inputs)


def test_other_op_versions_and_bad_attributes_are_refused(extension, tmp_path):
    version = scan_graph(tmp_path / "v2.onnx", shapes=stage_shapes(), attrs={SCAN_ATTR_PLUGIN_VERSION: "2"})
    with pytest.raises(RuntimeError, match=r"plugin_version '2': this OpenVINO extension implements version 1"):
        read(extension, version)
    softplus = scan_graph(tmp_path / "sp.onnx", shapes=stage_shapes(), attrs={SCAN_ATTR_SOFTPLUS: 2})
    with pytest.raises(RuntimeError, match=r"delta_softplus must be 0 or 1, got 2"):
        read(extension, softplus)
    six = scan_graph(tmp_path / "six.onnx", inputs=SCAN_INPUTS[:6], shapes={k: stage_shapes()[k] for k in SCAN_INPUTS})
    with pytest.raises(RuntimeError, match=r"takes 7 inputs \(u, delta, A, B, C, D, delta_bias\), got 6"):
        read(extension, six)


def test_without_the_extension_openvino_cannot_read_the_op(tmp_path):
    with pytest.raises(RuntimeError, match=SCAN_OP_TYPE):
        ov.Core().read_model(str(scan_graph(tmp_path / "scan.onnx", shapes=stage_shapes())))


# --- building and locating it ---------------------------------------------------------------------


@pytest.fixture
def fresh(monkeypatch):
    """openvino_ext without its per-process memory of the built library."""
    monkeypatch.setattr(openvino_ext, "_built", None)
    return monkeypatch


def test_missing_openvino_package_names_the_fix(fresh):
    fresh.setitem(sys.modules, "openvino", None)  # `import openvino` fails
    with pytest.raises(openvino_ext.ExtensionUnavailable, match=r"needs the openvino package: pip install openvino"):
        openvino_ext.extension_library()


def test_missing_compiler_or_cmake_names_the_fix(fresh):
    fresh.setattr(cpu, "find_compiler", lambda: None)
    with pytest.raises(openvino_ext.ExtensionUnavailable, match=r"needs a C\+\+ compiler .* apt-get install g\+\+"):
        openvino_ext.extension_library()
    fresh.undo()
    fresh.setattr(openvino_ext, "_built", None)
    fresh.setattr(scan_build, "find_cmake", lambda: None)
    with pytest.raises(openvino_ext.ExtensionUnavailable, match=r"needs CMake .*pip install cmake"):
        openvino_ext.extension_library()


def test_an_openvino_without_its_cmake_package_names_the_fix(fresh, tmp_path):
    fresh.setenv("OpenVINO_DIR", str(tmp_path))
    with pytest.raises(openvino_ext.ExtensionUnavailable, match=r"no CMake package at .*set OpenVINO_DIR"):
        openvino_ext.extension_library()


def test_the_cache_key_follows_the_sources_and_the_openvino_release(extension, monkeypatch):
    assert extension.parent == cpu.cache_dir() and extension.name.startswith("openvino_extension-")
    cxx = cpu.find_compiler()
    assert openvino_ext.library_path(cxx) == extension
    monkeypatch.setattr(openvino_ext, "openvino_version", lambda: "0.0.0-other")
    assert openvino_ext.library_path(cxx) != extension
    native = {p.name for p in openvino_ext.build_inputs()}
    assert {"selective_scan_op.cpp", "extension.cpp", "selective_scan_cpu.cpp", "CMakeLists.txt"} <= native


def test_the_backend_names_a_missing_or_foreign_extension_library(extension, tmp_path):
    """--op-library given to the OpenVINO backend: a missing file, or a library that is not an extension."""
    from mmad.runtime.backends.openvino import OpenVinoBackend

    graph = scan_graph(tmp_path / "scan.onnx", shapes=stage_shapes())
    with pytest.raises(ConfigError, match=r"--op-library .*missing.so: no such file"):
        OpenVinoBackend(graph, extension=str(tmp_path / "missing.so"))
    not_an_extension = cpu.build_library()  # a real shared library without OpenVINO's entry point
    with pytest.raises(ConfigError, match=r"(?s)cannot load it as an extension.*openvino_ext builds it"):
        OpenVinoBackend(graph, extension=str(not_an_extension))


def test_the_backend_names_what_is_missing_to_build_the_extension(tmp_path, fresh):
    from mmad.runtime.backends.openvino import OpenVinoBackend

    fresh.setattr(cpu, "find_compiler", lambda: None)
    with pytest.raises(ConfigError, match=r"scan.onnx uses the custom op SelectiveScan.*C\+\+ compiler.*--op-library"):
        OpenVinoBackend(scan_graph(tmp_path / "scan.onnx", shapes=stage_shapes()))

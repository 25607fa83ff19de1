"""Fold the traced shape arithmetic of an exported graph into constants. Torch-free.

The legacy exporter records every `x.shape` the model reads as Shape/Gather/Unsqueeze/Concat
nodes, because the batch axis is dynamic: thousands of nodes, most of which compute numbers that
only depend on the fixed image size. Those numbers are evaluated here by running the graph at two
batch sizes: a value equal at both is a constant; a Reshape target that differs in exactly one
entry gets -1 there (Reshape infers it). What still depends on the batch (an Expand to [B, ...],
say) keeps its nodes. (tests/export/test_onnx_export.py compares the result with PyTorch at other
batch sizes.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mmad.export.onnx_graph import remove_unused
from mmad.export.portable import make_portable
from mmad.runtime.contract import INPUT_NAME

# A node is "shape-derived" when all its inputs are: then its value depends on the input's shape
# (the batch size) only, never on pixel values.
_SHAPE_SOURCES = ("Shape", "Size")
_NONDETERMINISTIC = (
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
)


def _shape_derived_frontier(model: onnx.ModelProto) -> tuple[list[str], dict[str, list[tuple[onnx.NodeProto, int]]]]:
    """Shape-derived tensors that something else reads, and every tensor's consumers (node, input index)."""
    graph = model.graph
    derived = {i.name for i in graph.initializer}
    computed: set[str] = set()
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, k))
        if node.op_type in _NONDETERMINISTIC:
            continue
        if node.op_type in _SHAPE_SOURCES or all(not i or i in derived for i in node.input):
            derived.update(node.output)
            computed.update(node.output)
    outputs = {o.name for o in graph.output}
    frontier = [
        name
        for name in computed
        if name in outputs or any(node.output[0] not in derived for node, _ in consumers.get(name, []))
    ]
    return sorted(frontier), consumers


def _evaluate(
    model: onnx.ModelProto, names: list[str], shapes_of: list[str], batches: tuple[int, int], image_size: int
) -> list[dict]:
    """Values of `names`, and the shapes of `shapes_of` (keyed "shape:<name>"), at each batch size.
    Runs onnxruntime on the portable twin, so no custom op is needed."""
    import onnxruntime as ort

    probe = make_portable(model) if any(n.op_type == "SelectiveScan" for n in model.graph.node) else model
    probe = onnx.ModelProto.FromString(probe.SerializeToString())
    shape_outputs = [f"shape:{name}" for name in shapes_of]
    probe.graph.node.extend(helper.make_node("Shape", [name], [out]) for name, out in zip(shapes_of, shape_outputs))
    wanted = names + shape_outputs
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in wanted)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        image = rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
        results.append(dict(zip(wanted, session.run(wanted, {INPUT_NAME: image}))))
    return results


def _reshape_target(v1: np.ndarray, v2: np.ndarray, data1: np.ndarray, data2: np.ndarray) -> np.ndarray | None:
    """A constant Reshape target for the targets v1, v2 seen at two batch sizes (the data input then
    had shapes data1, data2), when one exists: the one batch-dependent entry becomes -1 (inferred
    from the size) or, when a -1 is already taken, 0 (copy the data's dim) if that dim is the same."""
    if v1.ndim != 1 or v1.shape != v2.shape:
        return None
    differ = np.flatnonzero(v1 != v2)
    if len(differ) != 1:
        return None
    i = differ[0]
    target = v1.copy()
    if -1 not in v1:
        target[i] = -1
    elif i < len(data1) and (data1[i], data2[i]) == (v1[i], v2[i]):
        target[i] = 0
    else:
        return None
    return target


def fold_shape_arithmetic(model: onnx.ModelProto, image_size: int) -> onnx.ModelProto:
    """A copy of `model` with batch-independent shape computations replaced by initializers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    frontier, consumers = _shape_derived_frontier(out)
    if not frontier:
        return out
    reshape_data = sorted(
        {n.input[0] for name in frontier for n, k in consumers.get(name, []) if n.op_type == "Reshape" and k == 1}
    )
    at1, at2 = _evaluate(out, frontier, reshape_data, (1, 2), image_size)
    graph_outputs = {o.name for o in out.graph.output}
    for name in frontier:
        v1, v2 = np.asarray(at1[name]), np.asarray(at2[name])
        if name in graph_outputs:
            continue
        if v1.shape == v2.shape and np.array_equal(v1, v2):
            _replace_with_constant(out, consumers.get(name, []), name, v1)
            continue
        readers = consumers.get(name, [])
        if not readers or not all(n.op_type == "Reshape" and k == 1 for n, k in readers):
            continue
        datas = {n.input[0] for n, _ in readers}
        targets = [_reshape_target(v1, v2, at1[f"shape:{d}"], at2[f"shape:{d}"]) for d in datas]
        if targets and all(t is not None and np.array_equal(t, targets[0]) for t in targets):
            _replace_with_constant(out, readers, name, targets[0])
    remove_unused(out)
    return out


def _replace_with_constant(
    model: onnx.ModelProto, readers: list[tuple[onnx.NodeProto, int]], name: str, value: np.ndarray
) -> None:
    """Point the readers of `name` at a new initializer holding `value` (remove_unused then drops
    the nodes that computed it)."""
    folded = f"{name}/folded"
    model.graph.initializer.append(numpy_helper.from_array(value, folded))
    for node, k in readers:
        node.input[k] = folded

"""Reading, checking and labelling exported ONNX graphs. Torch-free (onnx and numpy only).

The metadata is the contract's (mmad.runtime.contract: META_KEYS, "mmad."-prefixed metadata_props,
one writer and one reader there); the runtime reads the same keys back, from the ONNX file or from
an engine's sidecar.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from mmad.export.command import ExportError
from mmad.runtime import contract
from mmad.runtime.contract import META_PREFIX, META_REQUIRED, SCAN_OP_DOMAIN, SCAN_OP_TYPE

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def load_onnx(path: str | Path, *, what: str = "ONNX model") -> onnx.ModelProto:
    """Load an ONNX file, with an ExportError naming the file when it is missing or not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{what} {path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception as err:  # noqa: BLE001  protobuf's DecodeError and friends, or an external-data error
        raise ExportError(
            f"{what} {path}: not a readable ONNX model ({type(err).__name__}: {err}); "
            "the file is corrupt, truncated or not ONNX"
        ) from None


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The "mmad.*" metadata_props of a model, keyed without the prefix (the contract's reader)."""
    return contract.read_metadata({p.key: p.value for p in model.metadata_props})


def write_metadata(model: onnx.ModelProto, values: Mapping[str, object]) -> None:
    """Set "mmad.<key>" metadata_props (the contract's writer), replacing earlier values of the same keys.
    ValueError for a key the contract does not know."""
    props = contract.metadata_props(values)
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def require_metadata(model: onnx.ModelProto, source: str | Path) -> dict[str, str]:
    """The model's metadata; ExportError when it lacks the keys every MMAD export carries."""
    meta = read_metadata(model)
    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise ExportError(
            f"{source}: ONNX metadata lacks {', '.join(META_PREFIX + k for k in missing)}; "
            "is it an MMAD export (python export/to_onnx.py)?"
        )
    return meta


def scan_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The SelectiveScan custom-op nodes of the main graph."""
    return [n for n in model.graph.node if n.op_type == SCAN_OP_TYPE and n.domain == SCAN_OP_DOMAIN]


def is_qdq(model: onnx.ModelProto) -> bool:
    """True when the graph holds explicit QuantizeLinear / DequantizeLinear nodes."""
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def check_graph(model: onnx.ModelProto, source: str | Path = "model") -> None:
    """onnx.checker plus the contract's rule that no local function shadows the SelectiveScan op
    (TensorRT's parser would inline such a function instead of calling the plugin), and finite weights."""
    check_finite_initializers(model, source)
    shadowing = [f.name for f in model.functions if f.name == SCAN_OP_TYPE]
    if shadowing:
        raise ExportError(f"{source}: holds an ONNX local function named {SCAN_OP_TYPE}; the contract forbids it")
    try:
        onnx.checker.check_model(model, full_check=True)  # with strict shape inference
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"{source}: onnx.checker failed: {err}") from None


def check_finite_initializers(model: onnx.ModelProto, source: str | Path = "model") -> None:
    """ExportError naming the model and the first weight (initializer) holding NaN or inf: such a graph scores
    every image NaN, which is never above a threshold, so every image would pass."""
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise ExportError(f"{source}: weight '{init.name}' holds {bad} non-finite value(s) (NaN or inf)")


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Save a model (one file; the models here are far below protobuf's 2 GB limit), whole or not at all: through
    a temporary file beside it (a full disk or a kill never leaves a truncated model). ExportError when the
    file cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return contract.atomic_write(path, lambda tmp: onnx.save(model, tmp))
    except OSError as err:  # a full disk, a read-only folder: the file there before (if any) is unchanged
        raise ExportError(f"{path}: cannot write the model ({err.strerror or err}); nothing was written") from None


def remove_unused(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nothing reads, then initializers nothing reads (in place)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used_inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used_inits)
    produced = {o for node in graph.node for o in node.output}
    infos = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def topological_sort(model: onnx.ModelProto) -> None:
    """Order the nodes so that each comes after the producers of its inputs (in place; stable
    otherwise). Converters that append nodes (onnxruntime's float16 one adds its Casts at the end)
    leave graphs that ONNX's checker and some runtimes refuse."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            missing = sorted({i for n in waiting for i in n.input if i not in ready})[:3]
            raise ExportError(f"graph has a cycle or inputs nothing produces (e.g. {missing})")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)

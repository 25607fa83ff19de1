"""The portable graph: every SelectiveScan node replaced by standard ONNX ops. Torch-free.

    portable = make_portable(onnx.load("model.onnx"))

The scan (plugins/selective_scan/README.md) is a linear recurrence per (b, d, n):
    h_t = a_t · h_{t-1} + x_t,   a_t = exp(Δ_t A[d,n]),   x_t = Δ_t B[g,n,t] u_t,   y_t = Σ_n C[g,n,t] h_t + D u_t.
An ONNX Loop over t would run L (up to 4096) tiny steps per scan call. Instead the sequence is cut
into nc blocks of T steps (T = 16), and the state-sized tensors are laid out [B, G, dg, N, nc]:
  1. inside the blocks, all blocks at once: for j < T, h_j = a_j·h_{j-1} + x_j and the decay
     products P_j = a_0·…·a_j (step j of every block is one slice of the small inputs);
  2. the states at the blocks' ends follow the same recurrence over the blocks, with decays
     P_{T-1}: solved by doubling (Hillis–Steele, ⌈log2 nc⌉ Slice/Pad/Mul/Add steps) on a
     tensor T times smaller than the state;
  3. h_j += P_j · (state entering the block), then y_j = Σ_n C_j h_j.
The state-sized work is ~10 elementwise passes, whatever L; the graph has ~10·T + 5·log2(L/T)
nodes per scan. Every factor is a product of decays (no division, no exp of a sum that could
overflow), so it matches the float64 reference to float32 rounding. Only Reshape, Transpose,
Split, Slice, Pad, Concat, Mul, Add, Exp, Softplus, ReduceSum and Cast are used (no MatMul or Conv,
so INT8 quantisation leaves it alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mmad.export.onnx_graph import ExportError, read_metadata, scan_nodes, write_metadata
from mmad.runtime.contract import (
    SCAN_ATTR_PLUGIN_NAMESPACE,
    SCAN_ATTR_PLUGIN_VERSION,
    SCAN_ATTR_SOFTPLUS,
    SCAN_INPUTS,
    SCAN_OP_DOMAIN,
    SCAN_OP_DOMAIN_VERSION,
    SCAN_OP_TYPE,
    SCAN_PLUGIN_NAMESPACE,
    SCAN_PLUGIN_VERSION,
)

# Steps per block. The graph has ~10 nodes per step; 8-32 ran fastest in onnxruntime on MMAD's
# shapes (export/bench_portable.py), 16 best overall.
DEFAULT_BLOCK = 16
MIN_OPSET = 13  # Split / ReduceSum take their sizes and axes as inputs from opset 13


@dataclass(frozen=True)
class ScanDims:
    """Static sizes of one scan node: D channels, N states, G groups, L steps; elem_type of u."""

    d: int
    n: int
    g: int
    length: int
    elem_type: int


class _Builder:
    """Collects the nodes of the expansion; constants are shared initializers, deduplicated by value."""

    def __init__(self, constants: dict):
        self.nodes: list[onnx.NodeProto] = []
        self.constants = constants  # (dtype, shape, values) -> initializer, shared across nodes
        self.prefix = ""
        self._count = 0

    def const(self, values, dtype=np.int64) -> str:
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.constants:
            name = f"mmad_portable/const_{len(self.constants)}"
            self.constants[key] = numpy_helper.from_array(array, name)
        return self.constants[key].name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, out: str | None = None, **attrs):
        self._count += 1
        name = f"{self.prefix}/{op_type}_{self._count}"
        outputs = [out] if out else [f"{name}:{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, **attrs))
        return outputs[0] if n_out == 1 else outputs

    # Small compositions used below.
    def reshape(self, x: str, shape) -> str:
        return self.op("Reshape", [x, self.const(shape)])

    def pad_end(self, x: str, rank: int, amount: int) -> str:
        """Zero-pad the last axis by `amount` at its end."""
        if amount == 0:
            return x
        return self.op("Pad", [x, self.const([0] * rank + [0] * (rank - 1) + [amount])])


def _prefix_scan(b: _Builder, a: str, x: str, n: int) -> str:
    """h [M, n] of h_t = a_t·h_{t-1} + x_t (h_{-1} = 0) along the last axis, by doubling
    (Hillis–Steele): after the step of offset k, h_t sums the last 2k steps and a_t is their decay
    product. ⌈log2 n⌉ steps of Slice/Pad/Mul/Add on contiguous rows."""
    h, k = x, 1
    while k < n:
        # h_t += a_t · h_{t-k} (zero before the start); a_t *= a_{t-k} (one before the start)
        h_before = b.op(
            "Pad", [b.op("Slice", [h, b.const([0]), b.const([n - k]), b.const([1])]), b.const([0, k, 0, 0])]
        )
        h = b.op("Add", [h, b.op("Mul", [a, h_before])])
        if 2 * k < n:
            a_before = b.op("Slice", [a, b.const([0]), b.const([n - k]), b.const([1])])
            a = b.op("Mul", [a, b.op("Pad", [a_before, b.const([0, k, 0, 0]), b.const(1.0, np.float32)])])
        k *= 2
    return h


def _steps(b: _Builder, a_j: list[str], x_j: list[str], need_decay: bool) -> tuple[list[str], list[str]]:
    """Within the blocks: h_j = a_j·h_{j-1} + x_j from h = 0, and the decay products a_0·…·a_j."""
    h, decay = [x_j[0]], [a_j[0]]
    for a, x in zip(a_j[1:], x_j[1:]):
        h.append(b.op("Add", [b.op("Mul", [a, h[-1]]), x]))
        if need_decay:
            decay.append(b.op("Mul", [decay[-1], a]))
    return h, decay


def expand_scan(
    b: _Builder, inputs: list[str], output: str, dims: ScanDims, softplus: bool, block: int = DEFAULT_BLOCK
) -> None:
    """Append the standard-op form of one SelectiveScan node (inputs in contract order) to `b`.

    The state-sized tensors [B, G, dg, N, nc] (one per step j of the blocks, the blocks' index
    innermost) are made from slices of the small inputs (dt, u, B, C are N or dg times smaller
    than the state), never transposed and never assembled: only y is concatenated.
    """
    u, delta, A, Bm, Cm, Dv, bias = inputs
    d, n, g, length = dims.d, dims.n, dims.g, dims.length
    dg = d // g
    as_float = dims.elem_type != TensorProto.FLOAT  # float16 I/O: the state stays float32 (contract)
    if as_float:
        u, delta, Bm, Cm = (b.op("Cast", [v], to=TensorProto.FLOAT) for v in (u, delta, Bm, Cm))
    t = min(block, length)
    nc = math.ceil(length / t)
    padded = nc * t

    dt = b.op("Add", [delta, b.reshape(bias, [1, d, 1])])
    if softplus:
        dt = b.op("Softplus", [dt])  # log(1 + e^x) computed stably by the runtimes; = x beyond 20 in float32

    def steps(v: str, rank: int, lead: list[int]) -> list[str]:
        """[B, ..., L] -> T slices [B, *lead, nc]: L zero-padded to nc·T, slice j = step j of every
        block. The Reshape after each slice also stops onnxruntime's transpose optimiser from moving
        the Transpose past the broadcasts below, onto state-sized tensors."""
        v = b.reshape(b.pad_end(v, rank, padded - length), [-1, *lead, nc, t])
        v = b.op("Transpose", [v], perm=[0, 1, 2, 3, 5, 4])  # [B, *lead, T, nc]
        parts = b.op("Split", [v, b.const([1] * t)], n_out=t, axis=4) if t > 1 else [v]
        return [b.reshape(part, [-1, *lead, nc]) for part in parts]

    dt_j = steps(dt, 3, [g, dg, 1])  # each [B, G, dg, 1, nc]
    du_j = steps(b.op("Mul", [dt, u]), 3, [g, dg, 1])
    B_j = steps(Bm, 4, [g, 1, n])  # each [B, G, 1, N, nc]
    C_j = steps(Cm, 4, [g, 1, n])
    A5 = b.reshape(A, [1, g, dg, n, 1])
    a_j = [b.op("Exp", [b.op("Mul", [dt, A5])]) for dt in dt_j]  # each [B, G, dg, N, nc]
    x_j = [b.op("Mul", [du, Bs]) for du, Bs in zip(du_j, B_j)]  # Δ·u·B, the reference's order
    h, decay = _steps(b, a_j, x_j, need_decay=nc > 1)
    if nc > 1:
        # The state at each block's end, over the blocks; shifted by one, what enters each block.
        ends = _prefix_scan(b, b.reshape(decay[-1], [-1, nc]), b.reshape(h[-1], [-1, nc]), nc)
        entering = b.op(
            "Slice", [b.op("Pad", [ends, b.const([0, 1, 0, 0])]), b.const([0]), b.const([nc]), b.const([1])]
        )
        carry = b.reshape(entering, [-1, g, dg, n, nc])
        h = [b.op("Add", [h_j, b.op("Mul", [p_j, carry])]) for h_j, p_j in zip(h, decay)]
    y_j = [b.op("ReduceSum", [b.op("Mul", [h_j, c_j]), b.const([3])], keepdims=1) for h_j, c_j in zip(h, C_j)]
    y = b.op("Concat", y_j, axis=3) if t > 1 else y_j[0]  # [B, G, dg, T, nc]
    y = b.reshape(b.op("Transpose", [y], perm=[0, 1, 2, 4, 3]), [-1, d, padded])
    if padded > length:
        y = b.op("Slice", [y, b.const([0]), b.const([length]), b.const([2])])
    skip = b.op("Mul", [b.reshape(Dv, [1, d, 1]), u])
    if as_float:
        b.op("Cast", [b.op("Add", [y, skip])], out=output, to=dims.elem_type)
    else:
        b.op("Add", [y, skip], out=output)


def _dims_of(types: dict[str, onnx.TypeProto], name: str) -> list[int | None]:
    shape = types[name].tensor_type.shape
    return [dim.dim_value if dim.HasField("dim_value") else None for dim in shape.dim]


def infer_scan_dims(model: onnx.ModelProto) -> dict[str, ScanDims]:
    """Static sizes of every SelectiveScan node, keyed by its output name.

    ONNX shape inference does not know the custom op, so each scan's output is typed like its u
    and inference repeated until every scan's inputs are known.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    nodes = scan_nodes(work)
    for _ in range(len(nodes) + 1):
        inferred = onnx.shape_inference.infer_shapes(work)
        g = inferred.graph
        types = {v.name: v.type for v in (*g.value_info, *g.input, *g.output)}
        for init in g.initializer:
            types.setdefault(init.name, helper.make_tensor_type_proto(init.data_type, list(init.dims)))
        added = False
        for node in nodes:
            u, y = node.input[0], node.output[0]
            if y not in types and u in types:
                work.graph.value_info.append(helper.make_value_info(y, types[u]))
                added = True
        if not added:
            break
    dims = {}
    for node in nodes:
        try:
            u_shape, a_shape, b_shape = (_dims_of(types, node.input[i]) for i in (0, 2, 3))
            elem_type = types[node.input[0]].tensor_type.elem_type
        except KeyError as err:
            raise ExportError(
                f"portable: cannot tell the shape of {err} feeding {node.name or node.output[0]}"
            ) from None
        d, length = u_shape[1:3] if len(u_shape) == 3 else (None, None)
        n = a_shape[1] if len(a_shape) == 2 else None
        groups = b_shape[1] if len(b_shape) == 4 else None
        if None in (d, length, n, groups):
            raise ExportError(
                f"portable: {node.name or node.output[0]} needs static D, N, G, L; got u {u_shape}, "
                f"A {a_shape}, B {b_shape}"
            )
        dims[node.output[0]] = ScanDims(d, n, groups, length, elem_type)
    return dims


def _softplus_attr(node: onnx.NodeProto) -> bool:
    for attr in node.attribute:
        if attr.name == SCAN_ATTR_SOFTPLUS:
            return bool(attr.i)
    return True


def make_portable(model: onnx.ModelProto, block: int = DEFAULT_BLOCK) -> onnx.ModelProto:
    """A copy of `model` with every SelectiveScan node replaced by standard ops (module docstring);
    block: steps per block."""
    if block < 1:
        raise ValueError(f"portable: block must be >= 1, got {block}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ExportError(f"portable: the graph's opset is {opset}; the expansion needs >= {MIN_OPSET}")
    dims = infer_scan_dims(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    constants: dict = {}
    nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != SCAN_OP_TYPE or node.domain != SCAN_OP_DOMAIN:
            nodes.append(node)
            continue
        if len(node.input) != len(SCAN_INPUTS):
            raise ExportError(
                f"portable: {node.name} has {len(node.input)} inputs, the contract has {len(SCAN_INPUTS)}"
            )
        b = _Builder(constants)
        b.prefix = f"{node.name or f'scan{i}'}/portable"
        expand_scan(b, list(node.input), node.output[0], dims[node.output[0]], _softplus_attr(node), block)
        nodes.extend(b.nodes)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(constants.values())
    kept = [o for o in out.opset_import if o.domain != SCAN_OP_DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    if read_metadata(out):
        write_metadata(out, {"scan": "portable"})
    return out


def single_scan_model(
    d: int, n: int, g: int, length: int, *, softplus: bool = True, elem_type: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    """A graph holding one SelectiveScan node; inputs named as in the contract, batch dynamic.
    For tests and benchmarks of the op's ONNX forms."""
    io = elem_type
    shapes = {
        "u": ["batch", d, length],
        "delta": ["batch", d, length],
        "A": [d, n],
        "B": ["batch", g, n, length],
        "C": ["batch", g, n, length],
        "D": [d],
        "delta_bias": [d],
    }
    types = {"A": TensorProto.FLOAT, "D": TensorProto.FLOAT, "delta_bias": TensorProto.FLOAT}
    inputs = [helper.make_tensor_value_info(name, types.get(name, io), shapes[name]) for name in SCAN_INPUTS]
    node = helper.make_node(
        SCAN_OP_TYPE,
        list(SCAN_INPUTS),
        ["y"],
        name="scan",
        domain=SCAN_OP_DOMAIN,
        **{
            SCAN_ATTR_SOFTPLUS: int(softplus),
            SCAN_ATTR_PLUGIN_NAMESPACE: SCAN_PLUGIN_NAMESPACE,
            SCAN_ATTR_PLUGIN_VERSION: SCAN_PLUGIN_VERSION,
        },
    )
    graph = helper.make_graph(
        [node], "selective_scan", inputs, [helper.make_tensor_value_info("y", io, ["batch", d, length])]
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(SCAN_OP_DOMAIN, SCAN_OP_DOMAIN_VERSION)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)

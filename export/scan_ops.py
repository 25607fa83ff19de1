"""The selective scan as one ONNX node: the hook export sets as every SS2D's `scan_backend`.

In eager mode it computes the scan with the project's fastest path; under
torch.onnx.export(..., dynamo=False) its `symbolic` writes one SelectiveScan node per call, with the
inputs, attributes and domain of shared/docs/SELECTIVE_SCAN_OP.md (names from training/contract.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from mmad.export.onnx_graph import ATTR_PLUGIN_NAMESPACE, ATTR_PLUGIN_VERSION
from mmad.training.contract import (
    SCAN_ATTR_SOFTPLUS,
    SCAN_OP_DOMAIN,
    SCAN_OP_TYPE,
    SCAN_PLUGIN_NAMESPACE,
    SCAN_PLUGIN_VERSION,
)
from mmad.training.model import SS2D
from mmad.training.selective_scan import selective_scan


class SelectiveScanNode(torch.autograd.Function):
    """y [B, D, L] = SelectiveScan(u, delta, A, B, C, D, delta_bias); shapes as in the contract."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus: bool):
        return selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=delta_softplus, backend="auto")

    @staticmethod
    def symbolic(g, u, delta, A, B, C, D, delta_bias, delta_softplus: bool):
        attrs = {
            f"{SCAN_ATTR_SOFTPLUS}_i": int(delta_softplus),
            f"{ATTR_PLUGIN_NAMESPACE}_s": SCAN_PLUGIN_NAMESPACE,
            f"{ATTR_PLUGIN_VERSION}_s": SCAN_PLUGIN_VERSION,
        }
        y = g.op(f"{SCAN_OP_DOMAIN}::{SCAN_OP_TYPE}", u, delta, A, B, C, D, delta_bias, **attrs)
        y.setType(u.type())  # the output is typed and shaped like u
        return y


class ScanCall(NamedTuple):
    """One traced scan call: static sizes (D channels, N states, G groups, L steps) and its A [D, N]."""

    d: int
    n: int
    g: int
    length: int
    A: np.ndarray


class OnnxNodeScan:
    """The `scan_backend` hook (see mmad.training.selective_scan.selective_scan): emits the node and
    records each call in call order, which is the order of the nodes in the traced graph.
    ONNX shape inference cannot follow the traced shape arithmetic to L, so export writes the
    sizes into the graph's value_info for later passes (the portable expansion), and A (computed
    from A_logs in the model) becomes a constant equal to the model's own float32 values."""

    def __init__(self):
        self.calls: list[ScanCall] = []

    def __call__(self, u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True) -> torch.Tensor:
        self.calls.append(
            ScanCall(
                int(u.shape[1]),
                int(A.shape[1]),
                int(B.shape[1]),
                int(u.shape[2]),
                A.detach().float().cpu().numpy().copy(),
            )
        )
        return SelectiveScanNode.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus))


def route_scans_to_onnx_node(model: torch.nn.Module) -> OnnxNodeScan:
    """Point every SS2D of `model` at one recording hook, which is returned."""
    hook = OnnxNodeScan()
    for block in model.modules():
        if isinstance(block, SS2D):
            block.scan_backend = hook
    return hook

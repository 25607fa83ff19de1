"""Routing a model's scans to the SelectiveScan ONNX node for export, and recording each call's sizes.

The node itself (an autograd.Function with `symbolic`) is the op's: mmad.plugins.selective_scan.onnx_node.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from mmad.plugins.selective_scan.onnx_node import SelectiveScanNode
from mmad.training.models import SS2D


class ScanCall(NamedTuple):
    """One traced scan call: static sizes (D channels, N states, G groups, L steps) and its A [D, N]."""

    d: int
    n: int
    g: int
    length: int
    A: np.ndarray


class OnnxNodeScan:
    """The `scan_backend` hook (see mmad.plugins.selective_scan.selective_scan): emits the node and
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

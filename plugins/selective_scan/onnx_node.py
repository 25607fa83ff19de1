"""The selective scan as one ONNX node: an autograd.Function whose `symbolic` writes a SelectiveScan node.

In eager mode it computes the scan with the project's fastest path; under
torch.onnx.export(..., dynamo=False) its `symbolic` writes one SelectiveScan node per call, with the
inputs, attributes and domain of the op's contract (plugins/selective_scan/README.md; names from
mmad.runtime.contract).
"""

from __future__ import annotations

import torch

from mmad.plugins.selective_scan.op import selective_scan
from mmad.runtime.contract import (
    SCAN_ATTR_PLUGIN_NAMESPACE,
    SCAN_ATTR_PLUGIN_VERSION,
    SCAN_ATTR_SOFTPLUS,
    SCAN_OP_DOMAIN,
    SCAN_OP_TYPE,
    SCAN_PLUGIN_NAMESPACE,
    SCAN_PLUGIN_VERSION,
)


class SelectiveScanNode(torch.autograd.Function):
    """y [B, D, L] = SelectiveScan(u, delta, A, B, C, D, delta_bias); shapes as in the contract."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus: bool):
        return selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=delta_softplus, backend="auto")

    @staticmethod
    def symbolic(g, u, delta, A, B, C, D, delta_bias, delta_softplus: bool):
        attrs = {
            f"{SCAN_ATTR_SOFTPLUS}_i": int(delta_softplus),
            f"{SCAN_ATTR_PLUGIN_NAMESPACE}_s": SCAN_PLUGIN_NAMESPACE,
            f"{SCAN_ATTR_PLUGIN_VERSION}_s": SCAN_PLUGIN_VERSION,
        }
        y = g.op(f"{SCAN_OP_DOMAIN}::{SCAN_OP_TYPE}", u, delta, A, B, C, D, delta_bias, **attrs)
        y.setType(u.type())  # the output is typed and shaped like u
        return y

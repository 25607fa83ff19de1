"""training/models/scan_block.py: the two forms of the scan-order permutation (PyTorch's gathers and the
row gathers written into ONNX) are the same permutation, and the ONNX graph carries only row gathers."""

import numpy as np
import onnx
import pytest
import torch

from mmad.training.models.scan_block import SS2D, DirectionalScan
from mmad.training.models.scan_orders import direction_indices


@pytest.mark.parametrize(("curve", "size", "directions"), [("hilbert", 8, 8), ("zigzag", 5, 8), ("zorder", 4, 4)])
def test_row_form_is_the_same_permutation(curve, size, directions):
    scan = DirectionalScan(curve, size, directions)
    x = torch.randn(2, 3, size * size)
    y = torch.randn(2, directions, 3, size * size)
    torch.testing.assert_close(scan.rows_encode(x), scan.gather_encode(x), rtol=0, atol=0)
    torch.testing.assert_close(scan.rows_decode(y), scan.gather_decode(y).transpose(1, 2))
    # and both are what the index table says: sequence k at step p reads flat position idx[k, p]
    idx = direction_indices(curve, size, directions)
    for k in range(directions):
        torch.testing.assert_close(scan.encode(x)[:, k], x[:, :, idx[k]], rtol=0, atol=0)


def test_decode_to_rows_keeps_the_gradient_pairing():
    scan = DirectionalScan("hilbert", 4, 8)
    y = torch.randn(2, 8, 3, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(scan.decode_to_rows, (y,))


def _export(module: torch.nn.Module, x: torch.Tensor, path) -> onnx.ModelProto:
    torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    return onnx.load(str(path))


def _position_mixing_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=True):
    """A stand-in for the scan with no Gathers of its own when traced: each output reads u, delta, B and C
    of its own step, so a wrong permutation on either side changes the result."""
    per_group = u.shape[1] // B.shape[1]
    return u * torch.sigmoid(delta + delta_bias[None, :, None]) + (B * C).sum(2).repeat_interleave(per_group, 1)


def test_exported_ss2d_gathers_whole_rows_and_matches_eager(tmp_path):
    """The traced SS2D gathers along the row axis (blocks of C values), never along L, and computes the
    same output as eager PyTorch."""
    torch.manual_seed(0)
    block = SS2D(d_model=4, size=4, curve="hilbert").eval()
    block.scan_backend = _position_mixing_scan
    x = torch.randn(1, 4, 4, 4)
    model = _export(block, x, tmp_path / "ss2d.onnx")
    shapes = {n.output[0] for n in model.graph.node if n.op_type == "Shape"}  # the tracer's shape arithmetic
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] not in shapes]
    assert len(gathers) == 2, "the permutation should be one Gather to encode and one to decode"
    for node in gathers:
        axis = next(a.i for a in node.attribute if a.name == "axis")
        assert axis == 1, f"{node.name} gathers along axis {axis}, expected rows (axis 1)"
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(tmp_path / "ss2d.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = block(x).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

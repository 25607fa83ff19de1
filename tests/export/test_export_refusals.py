"""What the ONNX export refuses and how it writes (export/onnx_export.py, export/onnx_graph.py): thresholds outside
the model's score range or not numbers, weights holding NaN or inf, and model.onnx written whole or not at all."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmad.export.command import ExportError
from mmad.export.onnx_export import RAW_SCORE_RANGE, export_metadata, score_range
from mmad.export.onnx_graph import check_graph, save_onnx
from mmad.training.checkpoint import load_model, read_info


def small_graph(weight: np.ndarray) -> onnx.ModelProto:
    """y = x + weight, with the weight as an initializer."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_raw_score_range_is_what_the_model_can_produce(tiny_checkpoint):
    import torch

    model, info = load_model(tiny_checkpoint)
    assert score_range(model, model.cfg) == RAW_SCORE_RANGE == pytest.approx((0.0, 2 / 3))
    # Features pointing away from their reconstruction everywhere: 1 - cos = 2 at every scale, the top.
    feats = [torch.ones(1, 4, s, s) for s in (64, 32, 16)]
    out = model.anomaly_map(feats, [-f for f in feats])
    assert float(out.score) == pytest.approx(RAW_SCORE_RANGE[1], rel=1e-5)
    out = model.anomaly_map(feats, feats)  # a perfect reconstruction: the bottom
    assert float(out.score) == pytest.approx(RAW_SCORE_RANGE[0], abs=1e-6)


@pytest.mark.parametrize(
    "thresholds, message",
    [
        ({"normal_quantile": -1.0}, r"thresholds.deployment.image must be a finite number in the model's score range"),
        ({"normal_quantile": 0.7}, r"score range \[0, 0.666667\].*got 0.7"),
        ({"normal_quantile": 0.25, "f1": "high"}, "thresholds.f1 must be a finite number.*got 'high'"),
        ({"normal_quantile": 0.25, "f1": math.inf}, "thresholds.f1 must be a finite number"),
    ],
)
def test_thresholds_outside_the_score_range_or_not_numbers_are_refused(tiny_checkpoint, thresholds, message):
    info = dataclasses.replace(read_info(tiny_checkpoint), thresholds=thresholds)
    with pytest.raises(ExportError, match=message) as refused:
        export_metadata(info, scan="custom-op", precision="fp32", source="runs/tiny")
    assert str(refused.value).startswith("runs/tiny: ")


def test_metadata_carries_the_score_range_and_the_thresholds(tiny_checkpoint):
    meta = export_metadata(read_info(tiny_checkpoint), scan="custom-op", precision="fp32")
    assert json.loads(meta["score_range"]) == pytest.approx(list(RAW_SCORE_RANGE))
    assert float(meta["threshold"]) == 0.25 and float(meta["threshold_f1"]) == 0.375


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_graph_with_non_finite_weights_is_refused(bad):
    check_graph(small_graph(np.array([1.0, 2.0])), "fine.onnx")
    with pytest.raises(ExportError, match="m.onnx: weight 'w' holds 1 non-finite value"):
        check_graph(small_graph(np.array([1.0, bad])), "m.onnx")


def test_model_onnx_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = save_onnx(small_graph(np.array([1.0, 2.0])), tmp_path / "model.onnx")
    before = path.read_bytes()

    def disk_fills_half_way(model, target, *args, **kwargs):
        data = model.SerializeToString()
        Path(target).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", disk_fills_half_way)
    with pytest.raises(ExportError, match="model.onnx: cannot write the model .No space left on device"):
        save_onnx(small_graph(np.array([3.0, 4.0])), path)
    assert path.read_bytes() == before  # the model that was there is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # and no temporary file is left

"""A check shared by the fast-preset tests: a model's portable ONNX graph, run by onnxruntime, gives PyTorch's maps
and scores (what every runtime would show a user)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmad.export.onnx_export import ImageInputModel, export_graph
from mmad.export.onnx_graph import save_onnx
from mmad.export.portable import make_portable
from mmad.plugins.selective_scan.onnxruntime_op import inference_session
from mmad.runtime import contract
from mmad.runtime.contract import MODEL_TOL_FP32, relative_max_diff
from mmad.training.checkpoint import CheckpointInfo
from mmad.training.config import RunConfig
from mmad.training.models import AnomalyModel


def assert_portable_export_matches(model: AnomalyModel, config: RunConfig, folder: Path, seed: int) -> None:
    """Export `model` (portable graph) into `folder` and compare it with PyTorch on 2 random uint8 images."""
    graph, _ = export_graph(model, CheckpointInfo(config=config))
    session = inference_session(save_onnx(make_portable(graph), folder / "p.onnx"), custom_ops=False)
    images = np.random.default_rng(seed).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    maps, scores = session.run([contract.OUTPUT_MAP, contract.OUTPUT_SCORE], {contract.INPUT_NAME: images})
    with torch.no_grad():
        ref_maps, ref_scores = ImageInputModel(model)(torch.from_numpy(images))
    assert relative_max_diff(maps, ref_maps.numpy()) <= MODEL_TOL_FP32
    assert relative_max_diff(scores, ref_scores.numpy()) <= MODEL_TOL_FP32

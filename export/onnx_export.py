"""Checkpoint -> end-to-end ONNX graph: uint8 RGB images in, anomaly map and score out.

    build_onnx("runs/bottle", "model.onnx")                   # SelectiveScan custom op (TensorRT plugin)
    build_onnx("runs/bottle", "model.onnx", portable=True)    # standard ONNX ops only
    build_onnx("runs/bottle", "m8.onnx", precision="int8", calib_data=["data/bottle"])

Graph: image uint8 [B, S, S, 3] (NHWC, RGB) -> Cast, /255, -mean, /std (exactly the training
transform's steps) -> the model -> anomaly_map float32 [B, 1, S, S] (σ=4 Gaussian blur as a fixed
convolution) and score float32 [B] (max of the map). B is dynamic, S fixed (256). Every selective
scan is one SelectiveScan node (plugins/selective_scan/README.md); the scan-order permutations and
the blur's reflect padding are constant Gathers. The threshold, sizes, normalisation, encoder,
versions and the weights' hash go into the metadata (mmad.runtime.contract META_KEYS; the model is
described in training/README.md).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from mmad.export.command import DEFAULT_CALIBRATION_IMAGES, DEFAULT_OPSET, PRECISIONS, ExportError
from mmad.export.onnx_graph import check_graph, read_metadata, remove_unused, save_onnx, scan_nodes, write_metadata
from mmad.export.portable import make_portable
from mmad.export.precision import calibration_images, to_fp16, to_int8
from mmad.export.scan_routing import ScanCall, route_scans_to_onnx_node
from mmad.export.simplify import fold_shape_arithmetic
from mmad.runtime.contract import (
    INPUT_DTYPE,
    INPUT_LAYOUT,
    INPUT_NAME,
    OUTPUT_MAP,
    OUTPUT_SCORE,
    SCAN_OP_DOMAIN,
    SCAN_OP_DOMAIN_VERSION,
    THRESHOLD_F1,
    check_threshold,
)
from mmad.training.checkpoint import CheckpointInfo, load_model
from mmad.training.models import AnomalyModel
from mmad.training.models.head import MAP_SCALE
from mmad.training.thresholds import deployment_thresholds

BATCH_AXIS = "batch"
# Every raw map value and score: three scales of 1 - cosine similarity (each in [0, 2]), summed and scaled by
# MAP_SCALE, then upsampled and blurred with weights that sum to 1 (training/README.md §2.8). score_range()
# gives a model's (a normalised map moves it); the metadata carries it, and a threshold outside it is refused.
RAW_SCORE_RANGE = (0.0, 3 * 2.0 * MAP_SCALE)


def score_range(model: AnomalyModel | None, config) -> tuple[float, float] | None:
    """The range of every map value and score of `model` (a ModelConfig `config` alone: None when that depends on
    the weights). A normalised map, (map - map_mean) / map_scale per pixel, spans the lowest pixel's low end to
    the highest pixel's high end; its score (the maximum or a top-k mean) lies within."""
    if not getattr(config, "normalize_map", False):
        return RAW_SCORE_RANGE
    if model is None:
        return None
    low, high = ((v - model.map_mean) / model.map_scale for v in RAW_SCORE_RANGE)
    return float(low.min()), float(high.max())


class ImageInputModel(nn.Module):
    """The deployed function: uint8 RGB NHWC [B, S, S, 3] -> (anomaly_map [B, 1, S, S], score [B])."""

    def __init__(self, model: AnomalyModel):
        super().__init__()
        self.model = model
        cfg = model.cfg
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The same operations, in the same order, as training.data.ImageTransform.normalize.
        x = image.permute(0, 3, 1, 2).to(torch.float32).div(255.0)
        out = self.model((x - self.mean) / self.std)
        return out.anomaly_map, out.score


@dataclass
class ExportResult:
    path: Path
    metadata: dict[str, str]  # "mmad.*" keys, prefix removed
    scan_nodes: int  # scan calls of the model: SelectiveScan nodes before any portable expansion


def export_metadata(
    info: CheckpointInfo,
    *,
    scan: str,
    precision: str,
    source: str = "checkpoint",
    scores: tuple[float, float] | None = None,
) -> dict[str, str]:
    """The contract's metadata for a model from this checkpoint (values as strings, JSON for lists).

    scores: the model's score_range() (default: the config's, when the weights do not move it). ExportError
    naming `source` (the checkpoint) when a threshold is not a finite number in that range.
    """
    m = info.config.model
    scores = scores or score_range(None, m)
    meta = {
        "image_size": str(m.image_size),
        "input_layout": INPUT_LAYOUT,
        "input_dtype": INPUT_DTYPE,
        "mean": json.dumps([float(v) for v in m.mean]),
        "std": json.dumps([float(v) for v in m.std]),
        "encoder": m.encoder,
        "arch": m.arch,
        "model_version": info.package_version,
        "weights_sha256": info.weights_sha256,
        "scan": scan,
        "precision": precision,
    }
    if scores is not None:
        meta["score_range"] = json.dumps(list(scores))
    # The deployment thresholds come from held-out normal images only (training/thresholds.py; older
    # checkpoints: their "normal_quantile", rule "quantile"); the F1 one (test labels) is for reports.
    deployment = deployment_thresholds(info.thresholds)
    check_export_thresholds(info.thresholds, source, scores)
    if deployment is not None:
        meta["threshold"] = repr(deployment.image)
        meta["threshold_rule"] = deployment.rule
        if deployment.pixel is not None:
            meta["pixel_threshold"] = repr(deployment.pixel)
        if deployment.images is not None:
            meta["threshold_images"] = str(deployment.images)
        if deployment.categories:
            meta["category_thresholds"] = json.dumps(
                {name: {k: c[k] for k in ("image", "pixel", "images")} for name, c in deployment.categories.items()}
            )
    if info.thresholds.get(THRESHOLD_F1) is not None:
        meta["threshold_f1"] = repr(float(info.thresholds[THRESHOLD_F1]))
    return meta


def check_export_thresholds(thresholds: dict, source: str, scores: tuple[float, float] | None) -> None:
    """ExportError naming the checkpoint and the entry unless every threshold it would export is a finite number
    in the score range `scores` (None: contract.check_threshold's default); text is refused, never dropped."""
    deployment = deployment_thresholds(thresholds)
    found = {THRESHOLD_F1: thresholds.get(THRESHOLD_F1)}
    if deployment is not None:
        found.update({"deployment.image": deployment.image, "deployment.pixel": deployment.pixel})
        for name, entry in deployment.categories.items():
            found.update({f"deployment.categories.{name}.{k}": entry.get(k) for k in ("image", "pixel")})
    for key, value in found.items():
        if value is not None:
            try:
                check_threshold(value, f"thresholds.{key}", scores)
            except ValueError as err:
                raise ExportError(f"{source}: {err}") from None


def trace_to_onnx(model: AnomalyModel, path: Path, opset: int = DEFAULT_OPSET) -> list[ScanCall]:
    """Trace the model (scans routed to the custom node) to `path`; returns each scan call's sizes."""
    model = model.eval().requires_grad_(False)
    hook = route_scans_to_onnx_node(model)
    wrapper = ImageInputModel(model).eval()
    size = model.cfg.image_size
    example = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dynamic = {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_MAP: {0: BATCH_AXIS}, OUTPUT_SCORE: {0: BATCH_AXIS}}
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter's deprecation notice and tracer warnings about Python-side shape
        # arithmetic (static here: the input size is fixed) say nothing about this model.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # InstanceNorm2d without running statistics normalises by each image's own statistics in
        # eval too, which is ONNX InstanceNormalization: the exporter's "train=True" notice is moot.
        warnings.filterwarnings("ignore", message=".*instance_norm.*train=True")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_MAP, OUTPUT_SCORE],
            dynamic_axes=dynamic,
            custom_opsets={SCAN_OP_DOMAIN: SCAN_OP_DOMAIN_VERSION},
        )
    return hook.calls


def finalize_scan_nodes(model: onnx.ModelProto, calls: list[ScanCall]) -> None:
    """Give every SelectiveScan node (graph order = call order) its A as a constant and static shapes
    in value_info (batch symbolic): ONNX shape inference cannot follow the traced size arithmetic,
    and later passes (FP16, the portable expansion, TensorRT) read them from there."""
    nodes = scan_nodes(model)
    if len(nodes) != len(calls):
        raise ExportError(f"export: {len(calls)} scan calls traced but {len(nodes)} SelectiveScan nodes in the graph")
    shapes: dict[str, list] = {}
    for i, (node, call) in enumerate(zip(nodes, calls)):
        a_name = f"{node.name or f'scan{i}'}/A"
        model.graph.initializer.append(numpy_helper.from_array(call.A.astype(np.float32), a_name))
        node.input[2] = a_name
        u, delta, _, b, c = node.input[:5]
        for name, shape in (
            (u, [BATCH_AXIS, call.d, call.length]),
            (delta, [BATCH_AXIS, call.d, call.length]),
            (b, [BATCH_AXIS, call.g, call.n, call.length]),
            (c, [BATCH_AXIS, call.g, call.n, call.length]),
            (node.output[0], [BATCH_AXIS, call.d, call.length]),
        ):
            shapes[name] = shape
    kept = [v for v in model.graph.value_info if v.name not in shapes]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    model.graph.value_info.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in shapes.items()
    )
    remove_unused(model)  # the Exp/Neg that computed A from A_logs


def export_graph(
    model: AnomalyModel, info: CheckpointInfo, opset: int = DEFAULT_OPSET, source: str = "checkpoint"
) -> tuple[onnx.ModelProto, int]:
    """The float32 custom-op graph of an in-memory model, with metadata, checked; and its scan count.
    ExportError naming `source` for a threshold out of the score range (export_metadata)."""
    meta = export_metadata(
        info, scan="custom-op", precision="fp32", source=source, scores=score_range(model, model.cfg)
    )
    with tempfile.TemporaryDirectory(prefix="mmad-export-") as tmp:
        traced = Path(tmp) / "traced.onnx"
        calls = trace_to_onnx(model, traced, opset)
        graph = onnx.load(str(traced))
    finalize_scan_nodes(graph, calls)
    graph = fold_shape_arithmetic(graph, model.cfg.image_size)
    write_metadata(graph, meta)
    check_graph(graph, "exported graph")
    return graph, len(calls)


def build_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    portable: bool = False,
    precision: str = "fp32",
    calib_data: Sequence[str | Path] = (),
    calib_images: int = DEFAULT_CALIBRATION_IMAGES,
    calib_method: str = "minmax",
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Checkpoint folder -> ONNX file `out` (module docstring), in the precision asked for.

    fp16 / int8 are made from the float32 custom-op graph (mmad.export.precision); `portable` then
    expands the scans, so every combination exists. int8 calibrates on the normal training images
    of `calib_data`.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and not calib_data:
        raise ExportError("--precision int8 needs calibration images: --calib-data ROOT (normal training images)")
    model, info = load_model(checkpoint)  # refuses NaN/inf weights, a bad config or thresholds, naming the file
    graph, n_scans = export_graph(model, info, opset, source=str(checkpoint))
    if precision == "fp16":
        graph = to_fp16(graph)
    elif precision == "int8":
        images = calibration_images(calib_data, calib_images, model.cfg.image_size)
        graph = to_int8(graph, images, method=calib_method)
    if portable:
        graph = make_portable(graph)
    out = Path(out)
    check_graph(graph, out)
    save_onnx(graph, out)
    return ExportResult(out, read_metadata(graph), n_scans)


def export_onnx(
    checkpoint: str | Path, out: str | Path, *, portable: bool = False, opset: int = DEFAULT_OPSET
) -> ExportResult:
    """The float32 graph of a checkpoint folder (training.checkpoint format) written to `out`."""
    return build_onnx(checkpoint, out, portable=portable, opset=opset)

"""Bad inputs on the model side (issue 13), one row each, through the real `mmad` command: checkpoints with NaN
weights or a broken config, thresholds that are not finite or outside the score's range (checkpoint, model
metadata, calibration file, --threshold), images that do not decode, numbers out of range, a CUDA device that
is not there, a disk that fills during the export, a model whose outputs are not the contract's.

Every row expects an exit code, a fragment of the one-line message, and no traceback (bad_input_cases.py);
some also check that nothing was left behind (no checkpoint, no model file, no epoch trained). The data are
generated: the conftest's tiny checkpoint, generated dataset and synthetic ONNX model, copied and broken here.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from bad_input_cases import Case, Workspace, check_case, params, small_disk

from mmad.runtime.contract import OUTPUT_MAP, OUTPUT_SCORE, Calibration, calibration_path, file_sha256

TINY = ("--preset", "tiny", "--random-encoder", "--batch-size", "2")
TRAIN = ("train", "--data", "{data}", "--out", "{tmp}/run", *TINY)
EXPORT = ("export", "onnx", "--checkpoint", "{ckpt}", "--out", "{tmp}/model.onnx")
CALIBRATE = ("calibrate", "--model", "{bad_model}", "--source", "{frames}", "--out", "{tmp}/c.calibration.json")
STREAM = ("stream", "--model", "{bad_model}", "--source", "{video}")
TRAIN_SECONDS = 300.0  # a tiny-preset run on the generated data, on a shared 2-core machine


# --- setups: a broken copy of a fixture in the row's folder -------------------------------------------------
def checkpoint_with(edit) -> Callable[[Workspace], None]:
    """A setup: the tiny checkpoint copied to {ckpt}, its checkpoint.json changed by edit(dict)."""

    def setup(ws: Workspace) -> None:
        ckpt = shutil.copytree(ws.paths["checkpoint"], ws.tmp / "ckpt")
        meta = json.loads((ckpt / "checkpoint.json").read_text())
        edit(meta)
        (ckpt / "checkpoint.json").write_text(json.dumps(meta))  # NaN is written as the JSON extension NaN
        ws.paths["ckpt"] = ckpt

    return setup


def model_config(**fields) -> Callable[[Workspace], None]:
    return checkpoint_with(lambda meta: meta["config"]["model"].update(fields))


def thresholds(**values) -> Callable[[Workspace], None]:
    return checkpoint_with(lambda meta: meta["thresholds"].update(values))


def non_finite_weight(value: float) -> Callable[[Workspace], None]:
    """A setup: the tiny checkpoint with one decoder weight set to `value`, its sha256 updated (what a diverged
    training saves: the file is intact, its numbers are not)."""

    def setup(ws: Workspace) -> None:
        from safetensors.torch import load_file, save_file

        ckpt = shutil.copytree(ws.paths["checkpoint"], ws.tmp / "ckpt")
        tensors = load_file(str(ckpt / "model.safetensors"))
        key = next(k for k in sorted(tensors) if k.startswith("decoder.") and tensors[k].is_floating_point())
        tensors[key].view(-1)[0] = value
        save_file(tensors, str(ckpt / "model.safetensors"))
        meta = json.loads((ckpt / "checkpoint.json").read_text())
        meta["weights_sha256"] = file_sha256(ckpt / "model.safetensors")
        (ckpt / "checkpoint.json").write_text(json.dumps(meta))
        ws.paths["ckpt"] = ckpt
        ws.paths["tensor"] = Path(key)  # for the check: the message names it

    return setup


def good_frames(ws: Workspace) -> None:
    """{frames}: a folder of 3 mid-grey images, and {video}: a short video of them (cv2, mp4v)."""
    frames = ws.tmp / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((256, 256, 3), 128, np.uint8))
    writer = cv2.VideoWriter(str(ws.tmp / "good.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (256, 256))
    for _ in range(10):
        writer.write(np.full((256, 256, 3), 128, np.uint8))
    writer.release()
    ws.paths.update(frames=frames, video=ws.tmp / "good.mp4")


def model_with_metadata(**metadata) -> Callable[[Workspace], None]:
    """A setup: the synthetic model written to {bad_model} with these metadata values (text, as stored)."""

    def setup(ws: Workspace) -> None:
        from mmad.runtime.synthetic import synthetic_model

        ws.paths["bad_model"] = synthetic_model(ws.tmp / "bad.onnx", metadata=metadata)
        good_frames(ws)

    return setup


def calibration_beside(image_threshold: object, **metadata) -> Callable[[Workspace], None]:
    """A setup: the synthetic model (with `metadata`) and a calibration file beside it, made for it, whose image
    threshold is `image_threshold` (written by hand: the contract's writer refuses NaN)."""

    def setup(ws: Workspace) -> None:
        model_with_metadata(**metadata)(ws)
        model = ws.paths["bad_model"]
        calibration = Calibration(
            image_threshold=0.5,
            pixel_threshold=None,
            fit={},
            frames=40,
            source="test",
            backend="onnxruntime",
            model_sha256=file_sha256(model),
        )
        obj = {**calibration.__dict__, "image_threshold": image_threshold}
        calibration_path(model).write_text(json.dumps(obj))

    return setup


def wrong_output_model(ws: Workspace) -> None:
    """A setup: {bad_model}, an ONNX model with the contract's input and output names whose anomaly map has 3
    channels ([B, 3, H, W]: the input image, as float), not one."""
    import onnx
    from onnx import TensorProto, helper

    from mmad.runtime.contract import INPUT_NAME, metadata_props
    from mmad.runtime.synthetic import synthetic_metadata

    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], [OUTPUT_MAP], perm=[0, 3, 1, 2]),
        helper.make_node("ReduceMax", [OUTPUT_MAP], [OUTPUT_SCORE], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "wrong_outputs",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", 256, 256, 3])],
        [
            helper.make_tensor_value_info(OUTPUT_MAP, TensorProto.FLOAT, ["batch", 3, 256, 256]),
            helper.make_tensor_value_info(OUTPUT_SCORE, TensorProto.FLOAT, ["batch"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in metadata_props(synthetic_metadata(256, 0.35)).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(ws.tmp / "wrong_outputs.onnx"))
    ws.paths["bad_model"] = ws.tmp / "wrong_outputs.onnx"
    good_frames(ws)


def dataset_with_bad_image(held_out: bool) -> Callable[[Workspace], None]:
    """A setup: the generated dataset copied to {data}, one training image replaced by bytes that do not decode:
    one held out for the threshold (`held_out`, read only after the last epoch before) or one trained on."""

    def setup(ws: Workspace) -> None:
        from mmad.training.config import tiny_preset
        from mmad.training.data import find_categories, split_categories_holdout

        data = shutil.copytree(ws.paths["dataset"], ws.tmp / "data")
        tc = tiny_preset().train
        kept, held = split_categories_holdout(
            find_categories([str(data)]), tc.threshold_holdout, tc.seed, tc.threshold_min_images
        )
        bad = (held if held_out else kept)[0].train[0]
        bad.write_bytes(bad.read_bytes()[:200])  # a truncated PNG
        ws.paths.update(data=data, bad_image=bad)

    return setup


def use_dataset(ws: Workspace) -> None:
    ws.paths["data"] = ws.paths["dataset"]


# --- checks beyond the message ------------------------------------------------------------------------------
def nothing_trained(ws: Workspace, result) -> None:
    """No epoch ran and no checkpoint was written."""
    assert "epoch 1/" not in result.stdout, result.stdout[-2000:]
    assert not (ws.tmp / "run" / "model.safetensors").exists()


def names_bad_image(ws: Workspace, result) -> None:
    assert ws.paths["bad_image"].name in result.stderr
    nothing_trained(ws, result)


def no_model_written(ws: Workspace, result) -> None:
    assert not (ws.tmp / "model.onnx").exists()
    assert not list(ws.tmp.glob("model.onnx*"))  # no temporary file left either


def names_tensor_and_file(ws: Workspace, result) -> None:
    assert str(ws.paths["tensor"]) in result.stderr and "model.safetensors" in result.stderr
    no_model_written(ws, result)


def names_model_and_outputs(ws: Workspace, result) -> None:
    assert "wrong_outputs.onnx" in result.stderr and "[B, 1, H, W]" in result.stderr


# --- the table -------------------------------------------------------------------------------------------
CASES = [
    # 1. NaN fails closed: weights, normalisation, thresholds (checkpoint, metadata, calibration, --threshold).
    Case("nan-weights-export", EXPORT, 2, "non-finite", non_finite_weight(math.nan), check=names_tensor_and_file),
    Case("inf-weights-export", EXPORT, 2, "non-finite", non_finite_weight(math.inf), check=names_tensor_and_file),
    Case("std-zero-export", EXPORT, 2, "model.std", model_config(std=[0.0, 0.0, 0.0]), check=no_model_written),
    Case("threshold-text-export", EXPORT, 2, "thresholds.f1", thresholds(f1="high"), check=no_model_written),
    Case("threshold-nan-export", EXPORT, 2, "normal_quantile", thresholds(normal_quantile=math.nan)),
    Case("threshold-negative-export", EXPORT, 2, "score range", thresholds(normal_quantile=-1.0)),
    Case("threshold-above-scores-export", EXPORT, 2, "score range", thresholds(normal_quantile=5.0)),
    Case("metadata-threshold-nan", CALIBRATE, 2, "not a finite number", model_with_metadata(threshold="nan")),
    Case("metadata-threshold-negative", CALIBRATE, 2, "mmad.threshold", model_with_metadata(threshold="-1")),
    Case(
        "metadata-threshold-above-scores",
        CALIBRATE,
        2,
        "score range [0, 1]",
        model_with_metadata(threshold="2.5", score_range="[0, 1]"),
    ),
    Case("metadata-score-range-bad", CALIBRATE, 2, "score_range", model_with_metadata(score_range="[1, 0]")),
    Case("calibration-threshold-negative", STREAM, 2, "image_threshold", calibration_beside(-1.0)),
    Case("calibration-threshold-nan", STREAM, 2, "image_threshold", calibration_beside(math.nan)),
    Case("calibration-threshold-text", STREAM, 2, "image_threshold", calibration_beside("high")),
    Case(
        "calibration-above-scores",
        STREAM,
        2,
        "score range [0, 1]",
        calibration_beside(3.0, score_range="[0, 1]"),
    ),
    *(
        Case(f"cli-threshold-{name}", (*STREAM, "--threshold", text), 2, "--threshold", model_with_metadata())
        for name, text in (("nan", "nan"), ("inf", "inf"), ("negative", "-1"), ("text", "high"))
    ),
    # 7. A bad image stops training before the first epoch, the held-out ones included.
    Case(
        "held-out-image-corrupt",
        TRAIN,
        2,
        "cannot decode",
        dataset_with_bad_image(True),
        TRAIN_SECONDS,
        names_bad_image,
    ),
    Case(
        "training-image-corrupt",
        TRAIN,
        2,
        "cannot decode",
        dataset_with_bad_image(False),
        TRAIN_SECONDS,
        names_bad_image,
    ),
    # 10. Numbers out of range.
    Case("train-epochs-0", (*TRAIN, "--epochs", "0"), 2, "--epochs", use_dataset, check=nothing_trained),
    Case("train-batch-size-0", (*TRAIN, "--batch-size", "0"), 2, "--batch-size", use_dataset),
    Case(
        "eval-batch-size-0",
        ("eval", "--checkpoint", "{checkpoint}", "--data", "{dataset}", "--out", "{tmp}/r", "--batch-size", "0"),
        2,
        "--batch-size",
    ),
    Case("metadata-image-size-0", CALIBRATE, 2, "image_size='0'", model_with_metadata(image_size="0")),
    Case("metadata-image-size-negative", CALIBRATE, 2, "image_size='-5'", model_with_metadata(image_size="-5")),
    Case("metadata-image-size-huge", CALIBRATE, 2, "1..8192", model_with_metadata(image_size="100000")),
    Case("metadata-image-size-not-input", CALIBRATE, 2, "does not match", model_with_metadata(image_size="128")),
    # 11. Typed config: the field and what was expected, never a traceback.
    Case("config-d-state-float", EXPORT, 2, "model.d_state: expected an integer", model_config(d_state=16.5)),
    Case("config-blur-sigma-negative", EXPORT, 2, "model.blur_sigma", model_config(blur_sigma=-1.0)),
    Case("config-mean-one-value", EXPORT, 2, "model.mean: expected a list of 3", model_config(mean=[0.5])),
    Case(
        "config-thresholds-null",
        EXPORT,
        2,
        "'thresholds' must be a JSON object",
        checkpoint_with(lambda meta: meta.update(thresholds=None)),
    ),
    Case("config-model-null", EXPORT, 2, "config model", checkpoint_with(lambda m: m["config"].update(model=None))),
    Case("device-not-a-device", (*TRAIN, "--device", "gpu"), 2, "--device 'gpu'", use_dataset),
    # 13. A model whose outputs are not the contract's: a message naming the model and the outputs it should have.
    Case(
        "wrong-output-model-openvino",
        (*CALIBRATE, "--backend", "openvino"),
        2,
        "do not follow the contract",
        lambda ws: (pytest.importorskip("openvino"), wrong_output_model(ws)),
        check=names_model_and_outputs,
    ),
    # 12. model.onnx whole or not at all: a disk that fills during the export.
    Case(
        "export-onto-full-disk",
        ("export", "onnx", "--checkpoint", "{checkpoint}", "--out", "{disk}/model.onnx"),
        2,
        "no space left",
        lambda ws: small_disk(ws, 64),
    ),
]
CUDA_CASES = [
    Case("train-device-cuda-without-cuda", (*TRAIN, "--device", "cuda"), 2, "no CUDA device", use_dataset),
    Case(
        "eval-device-cuda-without-cuda",
        ("eval", "--checkpoint", "{checkpoint}", "--data", "{dataset}", "--out", "{tmp}/r", "--device", "cuda"),
        2,
        "no CUDA device",
    ),
]
# 13, on onnxruntime: the backend checks the stated output shapes at load and every batch (Backend.model_outputs).
OUTPUT_CASES = [
    Case(
        "wrong-output-model-onnxruntime",
        (*CALIBRATE, "--backend", "onnxruntime-cpu"),
        2,
        "do not follow the contract",
        wrong_output_model,
        check=names_model_and_outputs,
    ),
]


@pytest.fixture
def workspace(tmp_path, tiny_checkpoint, generated_dataset, synthetic_onnx) -> Workspace:
    return Workspace(tmp_path, {"checkpoint": tiny_checkpoint, "dataset": generated_dataset, "model": synthetic_onnx})


@pytest.mark.parametrize("case", params(CASES))
def test_bad_model_input(case, workspace):
    check_case(case, workspace)


@pytest.mark.parametrize("case", params(CUDA_CASES))
def test_cuda_device_that_is_not_there(case, workspace):
    if pytest.importorskip("torch").cuda.is_available():
        pytest.skip("this machine has a CUDA device: --device cuda is there")
    check_case(case, workspace)


@pytest.mark.parametrize("case", params(OUTPUT_CASES))
def test_wrong_output_model(case, workspace):
    check_case(case, workspace)

"""What the runtime refuses in a model before running it (runtime/model_info.py, runtime/backends/base.py,
runtime/options.py): image sizes the input cannot take, thresholds that are not finite or outside the model's
score range (metadata, calibration file, --threshold), and outputs that are not the contract's."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from mmad.runtime.backends import load_backend
from mmad.runtime.backends.base import Backend
from mmad.runtime.contract import (
    INPUT_NAME,
    OUTPUT_MAP,
    OUTPUT_SCORE,
    Calibration,
    calibration_path,
    check_threshold,
    file_sha256,
)
from mmad.runtime.errors import ConfigError
from mmad.runtime.model_info import MAX_IMAGE_SIDE, ModelInfo, model_info_from_keys
from mmad.runtime.options import add_options, threshold_option
from mmad.runtime.synthetic import synthetic_model

pytest.importorskip("onnx", reason="writing the synthetic model needs the onnx package")

STATIC_INPUT = ["batch", 256, 256, 3]


def info_from(meta: dict, input_shape=STATIC_INPUT, output_shapes=None) -> ModelInfo:
    return model_info_from_keys(
        meta,
        source="m.onnx",
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_MAP, OUTPUT_SCORE],
        input_shape=input_shape,
        output_shapes=output_shapes,
    )


@pytest.mark.parametrize(
    "size, input_shape, message",
    [
        ("0", STATIC_INPUT, f"image_size='0': expected an image side in 1..{MAX_IMAGE_SIDE}"),
        ("-5", STATIC_INPUT, "image_size='-5': expected an image side"),
        ("100000", ["batch", "h", "w", 3], "image_size='100000': expected an image side"),
        ("128", STATIC_INPUT, r"image_size='128' does not match the model's input 'image' \['batch', 256, 256, 3\]"),
        ("big", STATIC_INPUT, "image_size='big' is not an integer"),
    ],
)
def test_image_sizes_the_input_cannot_take_are_refused(size, input_shape, message):
    with pytest.raises(ConfigError, match=message):
        info_from({"image_size": size}, input_shape)


def test_an_image_size_that_fits_the_input_is_taken():
    assert (info_from({"image_size": "256"}).height, info_from({}, STATIC_INPUT).width) == (256, 256)
    assert info_from({"image_size": "320"}, ["batch", "h", "w", 3]).height == 320  # a dynamic input takes it


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"threshold": "nan"}, "threshold='nan' is not a finite number"),
        ({"threshold": "-1"}, "mmad.threshold must be a finite number >= 0"),
        ({"pixel_threshold": "-0.5"}, "mmad.pixel_threshold must be a finite number >= 0"),
        ({"threshold": "1.5", "score_range": "[0, 1]"}, r"in the model's score range \[0, 1\].*got 1.5"),
        ({"threshold": "0.5", "score_range": "[1, 0]"}, "score_range='.1, 0.': expected .low, high., low < high"),
        ({"threshold": "0.5", "score_range": "[0, NaN]"}, "score_range"),
        (
            {"category_thresholds": json.dumps({"a": {"image": 2.0}}), "score_range": "[0, 1]"},
            r"category_thresholds: a.image must be a finite number in the model's score range",
        ),
        ({"category_thresholds": json.dumps({"a": {"image": -1}})}, "a.image must be a finite number >= 0"),
    ],
)
def test_metadata_thresholds_must_be_finite_and_in_the_score_range(meta, message):
    with pytest.raises(ConfigError, match=message):
        info_from({"image_size": "256", **meta})


def test_a_normalised_model_may_state_a_range_below_zero():
    info = info_from({"threshold": "-0.5", "score_range": "[-2, 40]"})
    assert (info.threshold, info.score_range) == (-0.5, (-2.0, 40.0))
    assert info.check_threshold(3.0) == 3.0
    with pytest.raises(ConfigError, match=r"--threshold must be a finite number in the model's score range \[-2, 40\]"):
        info.check_threshold(41.0)


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "-0.001"])
def test_the_threshold_option_refuses_what_would_pass_or_flag_every_frame(text, capsys):
    from dataclasses import dataclass

    @dataclass
    class Options:
        threshold: float | None = threshold_option()

    parser = argparse.ArgumentParser(prog="mmad stream")
    add_options(parser, Options)
    assert parser.parse_args(["--threshold", "0.3"]).threshold == 0.3
    with pytest.raises(SystemExit):
        parser.parse_args(["--threshold", text])
    assert "argument --threshold" in capsys.readouterr().err


def write_calibration_by_hand(model, image_threshold) -> None:
    calibration = Calibration(0.5, None, {}, 40, "test", "onnxruntime", file_sha256(model))
    calibration_path(model).write_text(json.dumps({**calibration.__dict__, "image_threshold": image_threshold}))


@pytest.mark.parametrize(
    "metadata, threshold, message",
    [
        ({}, -1.0, r"image_threshold must be a finite number >= 0"),
        ({}, "high", r"image_threshold must be a finite number >= 0 .*got 'high'"),
        (
            {"score_range": "[0, 1]"},
            3.0,
            r"image_threshold must be a finite number in the model's score range \[0, 1\]",
        ),
    ],
)
def test_a_calibration_file_threshold_must_be_finite_and_in_the_score_range(tmp_path, metadata, threshold, message):
    model = synthetic_model(tmp_path / "m.onnx", metadata=metadata)
    write_calibration_by_hand(model, threshold)
    with pytest.raises(ConfigError, match=message):
        load_backend(model)
    write_calibration_by_hand(model, 0.5)
    with load_backend(model) as backend:
        assert backend.info.threshold == 0.5


@pytest.mark.parametrize(
    "shapes",
    [
        {OUTPUT_MAP: ["batch", 3, 256, 256], OUTPUT_SCORE: ["batch"]},
        {OUTPUT_MAP: ["batch", 65536], OUTPUT_SCORE: ["batch"]},
        {OUTPUT_MAP: ["batch", 1, 256, 256], OUTPUT_SCORE: ["batch", 1]},
    ],
)
def test_outputs_of_the_wrong_shape_are_refused_at_load_naming_the_model(shapes):
    with pytest.raises(ConfigError, match=r"m.onnx: the model's outputs do not follow the contract.*\[B, 1, H, W\]"):
        info_from({"image_size": "256"}, output_shapes=shapes)
    info_from({"image_size": "256"}, output_shapes={OUTPUT_MAP: ["batch", 1, "h", "w"], OUTPUT_SCORE: ["batch"]})


class ArraysOut(Backend):
    """A backend whose model returns the given arrays (the Backend base class's own check is what is tested)."""

    name = "arrays"

    def __init__(self, maps, scores):
        self.info = ModelInfo(source="wrong.onnx", height=256, width=256, threshold=None)
        self.outputs = (maps, scores)

    def infer(self, images):
        return self.model_outputs(*self.outputs)


def test_a_batch_of_the_wrong_shape_is_a_message_naming_the_model_not_a_reshape_error():
    images = np.zeros((2, 256, 256, 3), np.uint8)
    maps, scores = ArraysOut(np.ones((2, 1, 8, 8)), np.array([1.0, 2.0])).infer(images)
    assert maps.shape == (2, 8, 8) and maps.dtype == np.float32 and scores.tolist() == [1.0, 2.0]
    maps, scores = ArraysOut(np.arange(128.0).reshape(2, 1, 8, 8), None).infer(images)  # no score output
    assert scores.tolist() == [63.0, 127.0]
    for bad_maps, bad_scores in (
        (np.ones((2, 3, 8, 8)), np.ones(2)),
        (np.ones((2, 64)), np.ones(2)),
        (np.ones((2, 1, 8, 8)), np.ones(3)),
    ):
        with pytest.raises(ConfigError, match=r"wrong.onnx: the model's outputs do not follow the contract"):
            ArraysOut(bad_maps, bad_scores).infer(images)


def test_check_threshold_takes_numbers_only():
    assert check_threshold(0, "t") == 0.0
    for value in (True, "0.3", None, float("nan")):
        with pytest.raises(ConfigError, match="t must be a finite number"):
            check_threshold(value, "t")


def test_calibration_refuses_a_threshold_the_model_cannot_reach(tmp_path, capsys):
    import cv2

    from mmad.runtime.cli import main as mmad

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(25):  # known-good frames: grey with noise, scores about 0.05..0.1 on the synthetic model
        cv2.imwrite(str(frames / f"{i:02d}.png"), rng.integers(100, 156, (256, 256, 3), dtype=np.uint8))
    args = ["calibrate", "--source", str(frames), "--out", str(tmp_path / "c.calibration.json")]
    assert (
        mmad([*args, "--model", str(synthetic_model(tmp_path / "fits.onnx", metadata={"score_range": "[0, 1]"}))]) == 0
    )
    # A model that says its scores never pass 0.01: a threshold fitted above that would flag nothing.
    narrow = synthetic_model(tmp_path / "narrow.onnx", threshold=0.005, metadata={"score_range": "[0, 0.01]"})
    assert mmad([*args, "--model", str(narrow), "--out", str(tmp_path / "n.calibration.json")]) == 2
    assert (
        "the calibrated image threshold must be a finite number in the model's score range" in capsys.readouterr().err
    )
    assert not (tmp_path / "n.calibration.json").exists()

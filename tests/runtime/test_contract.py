"""The contract's own rules: the resize every stage shares, the metadata writer and reader, the tolerance
measure, the calibrated threshold rule and the calibration file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmad.runtime import contract
from mmad.runtime.errors import ConfigError


def test_resize_to_input_shrinks_by_area_enlarges_linearly_and_keeps_the_size():
    image = np.zeros((8, 8, 3), np.uint8)
    image[::2, ::2] = 255  # a checkerboard: area averaging gives its mean, not an aliased sample
    assert np.all(contract.resize_to_input(image, (4, 4)) == 64)
    assert contract.resize_to_input(image, (8, 8)) is image
    assert contract.resize_to_input(image[:2, :2], (4, 4)).shape == (4, 4, 3)


def test_metadata_writer_and_reader_round_trip_and_refuse_unknown_keys():
    props = contract.metadata_props({"threshold": "0.5", "mean": [0.1, 0.2, 0.3]})
    assert props == {"mmad.threshold": "0.5", "mmad.mean": "[0.1, 0.2, 0.3]"}
    assert contract.read_metadata({**props, "other": "x"}) == {"threshold": "0.5", "mean": "[0.1, 0.2, 0.3]"}
    with pytest.raises(ValueError, match="not in the contract"):
        contract.metadata_props({"thresold": "0.5"})


def test_relative_max_diff_is_relative_to_the_reference_maximum():
    assert contract.relative_max_diff(np.array([1.0, 2.2]), np.array([1.0, 2.0])) == pytest.approx(0.1)
    assert contract.relative_max_diff(np.array([0.5]), np.array([0.0])) == 0.5  # absolute for a zero reference


def test_fit_threshold_meets_its_target_on_unseen_good_frames():
    """300 calibrations, each on 60 good-frame scores, each checked on 2000 good frames it did not see: on
    average they meet the 1 % target (measured 1.10 %), the rate they predict is within a factor 1.5 of what
    the unseen frames show (measured 0.78 % predicted, 1.10 % seen: a 60-score tail fit leans low), and none
    flags a frame it was calibrated on."""
    rng = np.random.default_rng(7)
    predicted, observed = [], []
    for _ in range(300):
        seen, unseen = rng.gumbel(0.22, 0.004, size=60), rng.gumbel(0.22, 0.004, size=2000)
        fit = contract.fit_threshold(seen, 0.01)
        assert fit.threshold >= seen.max() and fit.expected_false_alarm_rate <= 0.01 + 1e-12
        predicted.append(fit.expected_false_alarm_rate)
        observed.append(np.mean(unseen > fit.threshold))
    assert np.mean(observed) <= 0.0125
    assert np.mean(observed) / 1.5 <= np.mean(predicted) <= np.mean(observed) * 1.5


@pytest.mark.parametrize(
    "scores, message",
    [
        (np.full(30, 0.2), "all 30 are equal"),
        (np.r_[np.linspace(0, 1, 29), np.nan], "NaN or inf"),
        (np.linspace(0, 1, 5), "at least 20"),
    ],
)
def test_fit_threshold_refuses_what_it_cannot_fit(scores, message):
    with pytest.raises(ValueError, match=message):
        contract.fit_threshold(scores)


def test_calibration_file_round_trip_and_refusals(tmp_path):
    fit = contract.fit_threshold(np.linspace(0.1, 0.2, 40))
    calibration = contract.Calibration(
        image_threshold=fit.threshold, pixel_threshold=0.1, fit=dict(vars(fit)), frames=40, source="test://",
        backend="onnxruntime", model_sha256="0" * 64, category="bottle",
    )  # fmt: skip
    path = contract.calibration_path(tmp_path / "model.onnx", "line1")
    assert path.name == "model.onnx.line1.calibration.json"
    assert contract.read_calibration(contract.write_calibration(path, calibration)) == calibration
    path.write_text(json.dumps({**json.loads(path.read_text()), "image_threshold": "high"}))
    with pytest.raises(ConfigError, match="image_threshold must be a finite number"):
        contract.read_calibration(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not a readable calibration file"):
        contract.read_calibration(path)

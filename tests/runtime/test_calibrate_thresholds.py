"""Which thresholds a loaded model runs with (load_backend -> ModelInfo): a calibration file beside it, an
explicit one, a category's from the metadata, else the metadata's; and `mmad calibrate` on folders of generated
images (no GStreamer needed), including its refusals."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmad.runtime.backends import auto_family, load_backend
from mmad.runtime.calibrate import CalibrateConfig, CalibrationRefused, run_calibrate
from mmad.runtime.cli import main as mmad_main
from mmad.runtime.contract import (
    MIN_NORMAL_SCORES,
    Calibration,
    calibration_path,
    file_sha256,
    read_calibration,
    write_calibration,
)
from mmad.runtime.errors import ConfigError
from mmad.runtime.synthetic import SYNTHETIC_THRESHOLD, synthetic_model
from mmad.runtime.synthetic_video import render_frames

pytest.importorskip("onnx", reason="building the synthetic model needs the onnx package")

SIZE = 64  # the synthetic model's input: fast on a CPU
CATEGORIES = {"dim": {"image": 0.08, "pixel": 0.07, "images": 30}, "bright": {"image": 0.16, "pixel": None}}


def make_model(folder: Path, **metadata: object) -> Path:
    """A fresh synthetic model (no calibration beside it) with extra or replaced metadata."""
    return synthetic_model(folder / "model.onnx", image_size=SIZE, metadata=metadata or None)


def calibration_for(model: Path, threshold: float, pixel: float | None = None, **fields: object) -> Calibration:
    values = dict(image_threshold=threshold, pixel_threshold=pixel, fit={"rule": "gumbel"}, frames=40)
    values.update(source="test", backend="onnxruntime", model_sha256=file_sha256(model))
    return Calibration(**{**values, **fields})


def write_frames(folder: Path, frames) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    """48 known-good frames of one part (the generated video's scene, sensor noise and drift)."""
    frames = [frame for frame, _ in render_frames(48, (160, 120), [], seed=3)]
    return write_frames(tmp_path_factory.mktemp("good") / "frames", frames)


# --- load_backend: where the thresholds come from -----------------------------------------------
def test_metadata_thresholds_and_categories(tmp_path):
    with load_backend(make_model(tmp_path)) as backend:
        info = backend.info
        assert info.threshold == pytest.approx(SYNTHETIC_THRESHOLD) and info.pixel_threshold is None
        assert info.threshold_source == "model metadata" and info.categories == ()
    model = make_model(tmp_path / "multi", pixel_threshold=0.3, category_thresholds=CATEGORIES)
    with load_backend(model) as backend:
        assert backend.info.pixel_threshold == pytest.approx(0.3)
        assert backend.info.categories == ("dim", "bright")
    with load_backend(model, category="dim") as backend:
        assert (backend.info.threshold, backend.info.pixel_threshold) == (0.08, 0.07)
        assert backend.info.threshold_source == "model metadata, category dim"
    with load_backend(model, category="bright") as backend:
        assert (backend.info.threshold, backend.info.pixel_threshold) == (0.16, None)
    with pytest.raises(ConfigError, match="--category shiny.*dim, bright"):
        load_backend(model, category="shiny")
    with pytest.raises(ConfigError, match="--category dim.*none"):
        load_backend(make_model(tmp_path / "single"), category="dim")


@pytest.mark.parametrize(
    "metadata, match",
    [
        ({"threshold": "nan"}, "threshold='nan' is not a finite number"),
        ({"pixel_threshold": "inf"}, "pixel_threshold='inf' is not a finite number"),
        ({"category_thresholds": '{"a": {"image": NaN}}'}, "a.image must be a finite number"),
        ({"category_thresholds": '{"a": {"image": 0.1, "pixel": "high"}}'}, "a.pixel must be a finite number"),
        ({"category_thresholds": "{not json"}, "category_thresholds is not JSON"),
        ({"category_thresholds": "[1, 2]"}, "expected {category"),
    ],
)
def test_non_finite_or_malformed_thresholds_are_refused(tmp_path, metadata, match):
    with pytest.raises(ConfigError, match=match):
        load_backend(make_model(tmp_path, **metadata))


def test_calibration_beside_the_model_is_used_automatically(tmp_path):
    model = make_model(tmp_path, category_thresholds=CATEGORIES)
    write_calibration(calibration_path(model), calibration_for(model, 0.123, 0.1))
    with load_backend(model) as backend:
        assert (backend.info.threshold, backend.info.pixel_threshold) == (0.123, 0.1)
        assert backend.info.threshold_source == "calibration model.onnx.calibration.json"
    with load_backend(model, calibration=False) as backend:  # the metadata only (what mmad calibrate starts from)
        assert backend.info.threshold == pytest.approx(SYNTHETIC_THRESHOLD)
    # A category: its own calibration file first; the default file is for no category, so the metadata's.
    with load_backend(model, category="bright") as backend:
        assert backend.info.threshold == 0.16 and backend.info.threshold_source == "model metadata, category bright"
    write_calibration(calibration_path(model, "bright"), calibration_for(model, 0.2, category="bright"))
    with load_backend(model, category="bright") as backend:
        assert backend.info.threshold == 0.2 and backend.info.pixel_threshold is None
        assert backend.info.threshold_source == "calibration model.onnx.bright.calibration.json, category bright"


def test_explicit_calibration_path(tmp_path):
    model = make_model(tmp_path)
    elsewhere = tmp_path / "site" / "camera1.json"
    elsewhere.parent.mkdir()
    write_calibration(elsewhere, calibration_for(model, 0.111, category="dim"))
    with load_backend(model, calibration=elsewhere) as backend:
        assert (
            backend.info.threshold == 0.111
            and backend.info.threshold_source == f"calibration {elsewhere}, category dim"
        )
    with load_backend(model, calibration=str(elsewhere), category="dim") as backend:
        assert backend.info.threshold == 0.111
    with pytest.raises(ConfigError, match="for category dim, not bright"):
        load_backend(model, calibration=elsewhere, category="bright")
    with pytest.raises(ConfigError, match="--calibration .*missing.json: no such file"):
        load_backend(model, calibration=tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('{"image_threshold": 0.1}')
    with pytest.raises(ConfigError, match="not a readable calibration file"):
        load_backend(model, calibration=tmp_path / "broken.json")


def test_a_calibration_for_another_model_file_fails_closed(tmp_path):
    """Re-exporting changes the model file: its old calibration must not silently apply."""
    model = make_model(tmp_path)
    write_calibration(calibration_path(model), calibration_for(model, 0.123))
    synthetic_model(model, image_size=SIZE, pool=5)  # re-exported in place: another file
    with pytest.raises(ConfigError, match="made for another model file.*recalibrate"):
        load_backend(model)
    with load_backend(model, calibration=False) as backend:
        assert backend.info.threshold == pytest.approx(SYNTHETIC_THRESHOLD)


# --- mmad calibrate on a folder of images ---------------------------------------------------------
def test_calibrate_a_folder_and_read_it_back(tmp_path, good_folder, capsys):
    model = make_model(tmp_path)
    code = mmad_main(["calibrate", "--model", str(model), "--source", str(good_folder), "--frames", "40"])
    out, err = capsys.readouterr()
    assert code == 0, err
    path = calibration_path(model)
    calibration = read_calibration(path)
    assert calibration.frames == 40 and calibration.source == str(good_folder) and calibration.category is None
    assert calibration.model_sha256 == file_sha256(model) and calibration.backend.startswith(auto_family("onnxruntime"))
    assert calibration.fit["count"] == 40 and calibration.fit["rule"] == "gumbel"
    assert calibration.pixel_threshold < calibration.image_threshold < SYNTHETIC_THRESHOLD
    assert f"image threshold {calibration.image_threshold:.6g} from 40 known-good frames" in out
    assert "flags 0 of these 40 good frames" in out and "reads it automatically" in out
    plot = path.with_suffix(".png")  # model.onnx.calibration.png, when matplotlib is installed
    assert plot.stat().st_size > 10_000 if importlib.util.find_spec("matplotlib") else not plot.exists()
    with load_backend(model) as backend:
        assert backend.info.threshold == calibration.image_threshold
        assert backend.info.pixel_threshold == calibration.pixel_threshold


def test_calibrate_names_categories_and_out(tmp_path, good_folder):
    model = make_model(tmp_path, category_thresholds=CATEGORIES)
    base = dict(model=str(model), source=str(good_folder), frames=30, threads=1, progress_interval=0)
    result = run_calibrate(CalibrateConfig(**base, category="dim"))
    assert result.path == calibration_path(model, "dim") and result.calibration.category == "dim"
    assert result.previous.threshold == 0.08 and result.previous.threshold_source == "model metadata, category dim"
    with load_backend(model, category="dim") as backend:
        assert backend.info.threshold == result.calibration.image_threshold
    result = run_calibrate(CalibrateConfig(**base, name="camera2", target_false_alarm_rate=0.01))
    assert result.path == calibration_path(model, "camera2") and result.fit.target_false_alarm_rate == 0.01
    out = tmp_path / "site" / "line3.json"
    assert run_calibrate(CalibrateConfig(**base, out=str(out))).path == out and out.is_file()
    with pytest.raises(ConfigError, match="knows the categories dim, bright"):
        run_calibrate(CalibrateConfig(**base, category="shiny"))


def test_recalibrating_replaces_a_stale_calibration(tmp_path, good_folder):
    model = make_model(tmp_path)
    write_calibration(calibration_path(model), calibration_for(model, 0.5, model_sha256="0" * 64))
    result = run_calibrate(CalibrateConfig(model=str(model), source=str(good_folder), frames=20, threads=1))
    assert result.previous.threshold_source == "model metadata"
    with load_backend(model) as backend:
        assert backend.info.threshold == result.calibration.image_threshold


@pytest.mark.parametrize(
    "options, match",
    [
        ({"frames": 10}, f"--frames 10: a calibration needs at least {MIN_NORMAL_SCORES} frames"),
        ({"seconds": 0}, "--seconds 0: expected a positive number"),
        ({"target_false_alarm_rate": 1.5}, "expected 0 < rate < 1"),
        ({"name": "a", "out": "b.json"}, "--name and --out"),
        ({"name": "../elsewhere"}, "expected a plain name"),
        ({"roi": "1,2,3"}, "--roi"),
    ],
)
def test_calibrate_rejects_bad_options(tmp_path, good_folder, options, match):
    with pytest.raises(ConfigError, match=match):
        run_calibrate(CalibrateConfig(model=str(make_model(tmp_path)), source=str(good_folder), **options))


def test_calibrate_refuses_too_few_frames_and_equal_scores(tmp_path, good_folder, capsys):
    model = make_model(tmp_path)
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(good_folder.iterdir())[: MIN_NORMAL_SCORES - 1]:
        shutil.copy(path, few / path.name)
    assert mmad_main(["calibrate", "--model", str(model), "--source", str(few)]) == 2
    err = capsys.readouterr().err
    assert (
        f"refused: --source {few}: only {MIN_NORMAL_SCORES - 1} frame(s)" in err and len(err.strip().splitlines()) == 1
    )
    frozen = write_frames(tmp_path / "frozen", [np.full((120, 160, 3), 140, np.uint8)] * 25)
    with pytest.raises(CalibrationRefused, match="all 25 are equal"):
        run_calibrate(CalibrateConfig(model=str(model), source=str(frozen)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationRefused, match="no images"):
        run_calibrate(CalibrateConfig(model=str(model), source=str(empty)))
    (empty / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CalibrationRefused, match="cannot read broken.png"):
        run_calibrate(CalibrateConfig(model=str(model), source=str(empty)))
    assert not calibration_path(model).exists()  # nothing written by a refusal


def test_roi_is_scored_as_the_stream_crops_it(tmp_path, good_folder):
    """A dark corner outside the ROI does not reach the scores (the stream's crop and resize)."""
    frames = [frame.copy() for frame, _ in render_frames(24, (160, 120), [], seed=5)]
    for i, frame in enumerate(frames):
        frame[:30, :30] = 20 + i  # dark, and not the same in every frame
    folder = write_frames(tmp_path / "corner", frames)
    model = str(make_model(tmp_path))
    inside = run_calibrate(CalibrateConfig(model=model, source=str(folder), roi="40,20,110,90", name="roi"))
    whole = run_calibrate(CalibrateConfig(model=model, source=str(folder), name="whole"))
    assert inside.scores.max() < 0.2 < 0.5 < whole.scores.min()
    assert json.loads(inside.path.read_text())["frames"] == 24

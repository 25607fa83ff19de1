"""Runtime pre/post-processing, model metadata and events: numpy/OpenCV only, no GStreamer."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mmad.runtime.contract import INPUT_NAME, META_PREFIX, OUTPUT_MAP, OUTPUT_SCORE, read_metadata, resize_to_input
from mmad.runtime.errors import ConfigError
from mmad.runtime.events import EventWriter, read_events
from mmad.runtime.model_info import model_info_from_keys, model_info_from_metadata
from mmad.runtime.processing import (
    Roi,
    anomalous_regions,
    draw_overlay,
    find_regions,
    heat_colors,
    inspect,
    map_to_frame,
    model_input,
    parse_roi,
    region_contours,
    region_threshold,
    score_from_map,
)

IO = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_MAP, OUTPUT_SCORE])


# --- ROI and model input ---------------------------------------------------------------------
def test_parse_roi_and_clip():
    assert parse_roi("10,20,30,40") == Roi(10, 20, 30, 40)
    assert Roi(-5, 10, 50, 500).clipped(100, 80) == Roi(0, 10, 45, 70)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,5"):
        with pytest.raises(ConfigError, match="--roi"):
            parse_roi(bad)
    with pytest.raises(ConfigError, match="outside"):
        Roi(200, 0, 10, 10).clipped(100, 80)


def test_model_input_crops_resizes_and_orders_colours():
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[20:60, 40:80] = (10, 20, 30)  # the ROI: one flat colour
    out = model_input(frame, Roi(40, 20, 40, 40), (64, 64))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out == (10, 20, 30)).all()
    assert (model_input(frame, Roi(40, 20, 40, 40), (64, 64), "BGR") == (30, 20, 10)).all()
    same = model_input(frame, Roi(0, 0, 160, 120), (120, 160))
    assert np.array_equal(same, frame)


def test_model_input_resizes_with_the_contracts_function():
    """The runtime and training resize through the one resize_to_input (INTER_AREA down, INTER_LINEAR up)."""
    frame = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    roi = Roi(10, 20, 90, 70)
    crop = frame[20:90, 10:100]
    for size in ((32, 48), (200, 150)):  # shrinking, enlarging
        assert np.array_equal(model_input(frame, roi, size), resize_to_input(crop, size))
    assert np.array_equal(model_input(frame, roi, (32, 48)), cv2.resize(crop, (48, 32), interpolation=cv2.INTER_AREA))


def test_map_to_frame_places_the_map_inside_the_roi_only():
    roi = Roi(30, 10, 50, 40)
    full = map_to_frame(np.full((16, 16), 0.7, np.float32), roi, (100, 120, 3))
    assert full.shape == (100, 120) and full.dtype == np.float32
    assert np.allclose(full[10:50, 30:80], 0.7)
    full[10:50, 30:80] = 0
    assert not full.any()


# --- map -> score, regions, overlay ----------------------------------------------------------
def _two_blob_map() -> tuple[np.ndarray, list[tuple[int, int, int, int, float]]]:
    """A map with two rectangles above 0.5 and one 2x2 speck; returns the rectangles (x, y, w, h, value)."""
    m = np.full((100, 150), 0.1, np.float32)
    blobs = [(10, 20, 30, 15, 0.9), (100, 60, 12, 25, 0.6)]
    for x, y, w, h, v in blobs:
        m[y : y + h, x : x + w] = v
    m[90:92, 5:7] = 0.8  # below min_area
    return m, blobs


def test_anomalous_regions_boxes_areas_and_peaks():
    m, blobs = _two_blob_map()
    regions = anomalous_regions(m, threshold=0.5, min_area=16)
    got = [(r.x, r.y, r.w, r.h, r.area, r.peak) for r in regions]
    expected = sorted([(x, y, w, h, w * h, pytest.approx(v)) for x, y, w, h, v in blobs], key=lambda t: -t[4])
    assert got == expected
    assert len(anomalous_regions(m, threshold=0.5, min_area=1)) == 3  # the speck counts without the area filter
    assert anomalous_regions(m, threshold=0.95) == []
    assert len(region_contours(m, 0.5)) == 3


def test_score_from_map_is_the_maximum():
    maps = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    assert np.array_equal(score_from_map(maps), maps.reshape(4, -1).max(axis=1))


def test_inspect_verdict_follows_the_threshold():
    m, _ = _two_blob_map()
    roi = Roi(0, 0, 150, 100)
    hit = inspect(m, float(m.max()), 0.5, roi, (100, 150, 3))
    assert hit.anomalous and len(hit.regions) == 2 and hit.frame_map.shape == (100, 150)
    calm = inspect(m, float(m.max()), 0.95, roi, (100, 150, 3))
    assert not calm.anomalous and calm.regions == []


def test_heat_colours_put_the_threshold_mid_scale():
    t = 0.4
    colours = heat_colors(np.array([[0.0, t, 2 * t, 10.0]], np.float32), t)[0]  # RGB
    assert colours[0].argmax() == 2  # zero is blue
    assert colours[1].argmax() == 1  # the threshold is green-ish (middle of JET)
    assert colours[2].argmax() == 0 and np.array_equal(colours[2], colours[3])  # 2 x threshold and above: red


def test_overlay_changes_only_the_roi_and_keeps_shape():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    roi = Roi(40, 30, 80, 60)
    fmap = map_to_frame(np.zeros((16, 16), np.float32), roi, frame.shape)
    out = draw_overlay(frame, fmap, 0.5, 0.1, [], roi)
    assert out.shape == frame.shape and out.dtype == np.uint8
    outside = np.ones(frame.shape[:2], bool)
    outside[roi.y - 1 : roi.y + roi.h + 1, roi.x - 1 : roi.x + roi.w + 1] = False  # ROI and its outline
    outside[:40, :120] = False  # the score label
    assert np.array_equal(out[outside], frame[outside])
    assert not np.array_equal(out[35:85, 45:115], frame[35:85, 45:115])


def _defect_and_hot_spot_map() -> np.ndarray:
    """A defect (peak 0.9) and a good hot spot (peak 0.3, over a pixel threshold of 0.2 but under 0.5)."""
    m = np.full((100, 150), 0.05, np.float32)
    m[20:40, 10:40] = 0.4
    m[25:35, 20:30] = 0.9
    m[60:80, 100:120] = 0.3
    return m


def test_regions_are_seeded_by_the_image_threshold():
    """The pixel threshold draws a defect's extent; a region without a pixel over the image threshold is no defect."""
    m = _defect_and_hot_spot_map()
    assert len(anomalous_regions(m, 0.2)) == 2  # no seed: every region over the pixel threshold
    regions, mask = find_regions(m, 0.2, seed=0.5)
    assert [(r.x, r.y, r.w, r.h, r.area) for r in regions] == [(10, 20, 30, 20, 600)]  # all of it, not just > 0.5
    assert mask.sum() == 600 and mask[25, 20] and not mask[70, 110]
    # The strongest region is kept even when the resized map peaks under the seed (the model's score is over it).
    assert len(find_regions(m * 0.5, 0.1, seed=0.5)[0]) == 1


def test_inspect_draws_regions_above_the_pixel_threshold_on_anomalous_frames_only():
    m = _defect_and_hot_spot_map()
    roi = Roi(0, 0, 150, 100)
    hit = inspect(m, 0.9, 0.5, roi, m.shape, pixel_threshold=0.2)
    assert hit.anomalous and hit.pixel_threshold == 0.2 and len(hit.regions) == 1 and hit.regions[0].area == 600
    assert hit.region_mask.sum() == 600
    calm = inspect(m * 0.5, 0.45, 0.5, roi, m.shape, pixel_threshold=0.2)  # a good frame with pixels over 0.2
    assert not calm.anomalous and calm.regions == [] and calm.region_mask is None
    legacy = inspect(m, 0.9, 0.5, roi, m.shape)  # no pixel threshold (older models): the image threshold
    assert legacy.pixel_threshold == 0.5 and legacy.regions[0].area == 100


def test_region_threshold_is_never_above_the_image_threshold():
    assert (
        region_threshold(0.5, None) == 0.5 and region_threshold(0.5, 0.2) == 0.2 and region_threshold(0.1, 0.2) == 0.1
    )


def test_regions_overlay_leaves_a_good_frame_untouched_and_colours_only_the_defect():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    label = np.zeros(frame.shape[:2], bool)
    label[:40, :120] = True  # where the score is written
    roi = Roi(0, 0, 150, 100)
    m = _defect_and_hot_spot_map()
    calm = inspect(m * 0.5, 0.45, 0.5, roi, m.shape, pixel_threshold=0.2)
    out = draw_overlay(frame, calm.frame_map, 0.5, calm.score, [], roi, style="regions")
    assert np.array_equal(out[~label], frame[~label])
    heat = draw_overlay(frame, calm.frame_map, 0.5, calm.score, [], roi, style="heat")
    assert not np.array_equal(heat[~label], frame[~label])  # the heat style tints the whole ROI
    hit = inspect(m, 0.9, 0.5, roi, m.shape, pixel_threshold=0.2)
    out = draw_overlay(
        frame, hit.frame_map, 0.5, hit.score, hit.regions, roi, style="regions", region_mask=hit.region_mask
    )
    near = cv2.dilate(hit.region_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # + outline, box
    assert np.array_equal(out[~(near | label)], frame[~(near | label)])
    assert not np.array_equal(out[hit.region_mask], frame[hit.region_mask])
    with pytest.raises(ConfigError, match="overlay style"):
        draw_overlay(frame, hit.frame_map, 0.5, hit.score, [], roi, style="sparkles")


# --- metadata --------------------------------------------------------------------------------
def test_model_info_from_metadata_reads_the_contract_keys():
    meta = {META_PREFIX + "threshold": "0.42", META_PREFIX + "image_size": "256", "other": "x"}
    info = model_info_from_metadata(meta, source="m.onnx", **IO)
    assert (info.height, info.width, info.threshold) == (256, 256, 0.42)
    assert info.score_name == OUTPUT_SCORE and "other" not in info.metadata
    # Without image_size the static input shape decides; without a score output the map's max is used.
    info = model_info_from_metadata(
        {}, source="m.onnx", input_names=[INPUT_NAME], output_names=[OUTPUT_MAP], input_shape=["b", 128, 96, 3]
    )
    assert (info.height, info.width, info.threshold, info.score_name) == (128, 96, None, None)


@pytest.mark.parametrize(
    "meta, io, message",
    [
        ({}, dict(input_names=["x"], output_names=[OUTPUT_MAP]), "input named 'image'"),
        ({}, dict(input_names=[INPUT_NAME], output_names=["y"]), "output named 'anomaly_map'"),
        ({META_PREFIX + "input_layout": "NCHW", META_PREFIX + "image_size": "8"}, IO, "expects 'NHWC'"),
        ({META_PREFIX + "threshold": "high", META_PREFIX + "image_size": "8"}, IO, "not a number"),
        ({}, IO, "cannot tell the input size"),
    ],
)
def test_model_info_errors_name_the_file(meta, io, message):
    with pytest.raises(ConfigError, match=message) as err:
        model_info_from_metadata(meta, source="bad_model.onnx", **io)
    assert "bad_model.onnx" in str(err.value)


def test_model_info_from_keys_takes_metadata_already_read():
    """An engine sidecar's metadata comes without the prefix (contract.read_sidecar): the same ModelInfo."""
    props = {META_PREFIX + "threshold": "0.42", META_PREFIX + "image_size": "256", META_PREFIX + "scan": "custom-op"}
    from_props = model_info_from_metadata(props, source="m.engine", **IO)
    assert model_info_from_keys(read_metadata(props), source="m.engine", **IO) == from_props
    assert from_props.scan == "custom-op" and dict(from_props.metadata) == read_metadata(props)


def test_metadata_reader_reencodes_structured_values():
    # Was model_info.metadata_as_strings (an engine sidecar's JSON metadata); the contract's reader does it now.
    assert read_metadata({"mmad.a": "x", "mmad.b": 0.5, "mmad.c": [1, 2]}) == {"a": "x", "b": "0.5", "c": "[1, 2]"}


# --- events ----------------------------------------------------------------------------------
def _inspection(score: float, threshold: float = 0.5):
    m = np.full((32, 32), score, np.float32)
    return inspect(m, score, threshold, Roi(0, 0, 32, 32), (32, 32, 3))


def test_events_are_flushed_line_by_line(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path, mode="frame")
    writer.write(_inspection(0.2), 0, 0.0, "cam")
    writer.write(_inspection(0.9), 1, 0.04, "cam")
    lines = path.read_text().splitlines()  # read while the writer is still open
    assert len(lines) == 2
    second = json.loads(lines[1])
    assert second["frame"] == 1 and second["anomalous"] is True and second["source"] == "cam"
    assert second["regions"] and set(second["regions"][0]) == {"x", "y", "w", "h", "area", "peak"}
    assert {"timestamp", "pts", "score", "threshold", "pixel_threshold"} <= set(second)
    writer.close()


def test_anomaly_mode_writes_only_anomalies_and_torn_lines_are_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path, mode="anomaly") as writer:
        written = [writer.write(_inspection(s), i, None, "cam") for i, s in enumerate([0.1, 0.7, 0.3, 0.8])]
    assert written == [False, True, False, True]
    with open(path, "a") as f:
        f.write('{"frame": 9, "sco')  # what a power cut mid-line leaves
    assert [e["frame"] for e in read_events(path)] == [1, 3]
    with pytest.raises(ConfigError, match="events-mode"):
        EventWriter(tmp_path / "x.jsonl", mode="sometimes")


# --- the synthetic model: regions where the defects are -----------------------------------------
def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_synthetic_model_draws_one_region_per_defect_and_none_on_good_frames(synthetic_onnx, tmp_path):
    """Thresholds calibrated on the good frames (contract: fit_threshold, pixel_threshold from their maps)."""
    from mmad.runtime.backends import load_backend
    from mmad.runtime.contract import Calibration, file_sha256, fit_threshold, pixel_threshold, write_calibration
    from mmad.runtime.inspector import FrameInspector
    from mmad.runtime.processing import full_frame
    from mmad.runtime.synthetic_video import render_frames

    frames = list(render_frames(40, (320, 240), defect_frames=[3, 11, 19, 27, 35], seed=3))
    with load_backend(synthetic_onnx) as plain:
        size = (plain.info.height, plain.info.width)
        good = np.stack([model_input(f, full_frame(f), size) for f, defect in frames if defect is None])
        maps, scores = plain.infer(good)
        metadata_inspector = FrameInspector(plain)
        metadata_results = [metadata_inspector.inspect(f) for f, _ in frames]
    fit = fit_threshold(scores)
    calibration = Calibration(
        fit.threshold,
        pixel_threshold(maps),
        vars(fit),
        len(good),
        "render_frames",
        "onnxruntime",
        file_sha256(synthetic_onnx),
    )
    path = write_calibration(tmp_path / "cam.calibration.json", calibration)
    with load_backend(synthetic_onnx, calibration=path) as backend:
        assert backend.info.pixel_threshold == calibration.pixel_threshold < fit.threshold
        inspector = FrameInspector(backend)
        calibrated_results = [inspector.inspect(f) for f, _ in frames]
    # Good frames have pixels over the calibrated pixel threshold (a quantile, not the maximum), yet show no region.
    assert (maps.reshape(len(maps), -1) > calibration.pixel_threshold).any(axis=1).mean() > 0.5
    for results in (metadata_results, calibrated_results):
        for (frame, defect), result in zip(frames, results, strict=True):
            if defect is None:
                assert not result.anomalous and result.regions == []
                continue
            assert result.anomalous and len(result.regions) == 1, result.regions
            r = result.regions[0]
            assert _boxes_overlap((r.x, r.y, r.w, r.h), defect.box)


def test_a_non_finite_score_or_map_is_an_anomaly_with_an_error():
    """Fail closed (issue 13.1): NaN compares False with any threshold, so `score > threshold` passed every frame
    of a broken model; a NaN or infinite score, or a map holding one (a backend may reduce NaN away), flags it."""
    frame_shape, roi = (40, 60, 3), Roi(0, 0, 60, 40)
    good = inspect(np.full((16, 16), 0.1, np.float32), 0.1, 0.5, roi, frame_shape)
    assert not good.anomalous and good.error is None
    nan_map = np.full((16, 16), np.nan, np.float32)
    for model_map, score in [(nan_map, float("nan")), (nan_map, -3.4e38), (np.full((16, 16), 0.1), float("inf"))]:
        result = inspect(model_map, score, 0.5, roi, frame_shape)
        assert result.anomalous and "non-finite score" in result.error and not np.isfinite(result.score)
    overlay = draw_overlay(np.zeros(frame_shape, np.uint8), np.zeros(frame_shape[:2]), 0.5, float("nan"), [])
    assert (overlay[..., 0] > overlay[..., 1]).any(), "a NaN score is labelled in the anomaly colour"

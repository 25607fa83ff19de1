"""samples/make_video.py (over runtime/synthetic_video.py): frame count, ground truth, and defects that the
synthetic model separates."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mmad.runtime.gst_util import gst_unavailable_reason, missing_elements
from mmad.runtime.synthetic import SYNTHETIC_THRESHOLD, synthetic_reference
from mmad.samples.make_video import main, make_video, render_frames


def read_frames(path) -> list[np.ndarray]:
    """RGB frames decoded by OpenCV."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_mjpeg_video_and_ground_truth(tmp_path):
    path = tmp_path / "sample.avi"
    defects = make_video(path, n_frames=24, fps=10, size=(160, 128), defect_frames=[20, 4], seed=5)
    assert defects == [4, 20]
    truth = json.loads(path.with_suffix(".json").read_text())
    assert truth["defect_frames"] == [4, 20] and truth["n_frames"] == 24 and truth["size"] == [160, 128]
    assert [d["frame"] for d in truth["defects"]] == [4, 20]
    frames = read_frames(path)
    assert len(frames) == 24 and frames[0].shape == (128, 160, 3)
    # Each recorded box holds the defect: its pixels are far from mid-grey, which normal frames never are.
    for d in truth["defects"]:
        x, y, w, h = d["box"]
        patch = frames[d["frame"]][max(y, 0) : y + h, max(x, 0) : x + w].astype(int)
        assert np.abs(patch - 128).mean(axis=2).max() > 60
    normal = [f for i, f in enumerate(frames) if i not in defects]
    assert max(np.abs(f.astype(int) - 128).mean(axis=2).max() for f in normal) < 35


def test_synthetic_model_separates_defect_frames_before_compression():
    """On the rendered frames (no codec), every defect frame scores above the model's threshold and no normal
    one does."""
    frames, flags = zip(
        *(
            (cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA), d is not None)
            for f, d in render_frames(40, (320, 240), [3, 17, 30, 31], seed=7)
        )
    )
    _, scores = synthetic_reference(np.stack(frames))
    assert list(scores > SYNTHETIC_THRESHOLD) == list(flags)


def test_default_defects_are_seeded_and_bad_arguments_rejected(tmp_path):
    a = make_video(tmp_path / "a.avi", n_frames=30, seed=2)
    b = make_video(tmp_path / "b.avi", n_frames=30, seed=2)
    assert a == b and len(a) == 3 and all(0 < i < 30 for i in a)
    with pytest.raises(ValueError, match="outside"):
        make_video(tmp_path / "c.avi", n_frames=10, defect_frames=[10])
    with pytest.raises(ValueError, match="even width"):
        make_video(tmp_path / "d.avi", size=(161, 120))
    with pytest.raises(ValueError, match=".mp4, .mkv or .avi"):
        make_video(tmp_path / "e.gif")


@pytest.mark.gst
def test_h264_mp4_through_gstreamer_and_cli(tmp_path, capsys):
    reason = gst_unavailable_reason() or (
        missing_elements(["x264enc", "mp4mux", "h264parse"]) and "x264enc/mp4mux/h264parse missing"
    )
    if reason:
        pytest.skip(reason)
    path = tmp_path / "cli.mp4"
    assert main([str(path), "--frames", "20", "--fps", "10", "--size", "160x128", "--defects", "2,9"]) == 0
    assert "defects in [2, 9]" in capsys.readouterr().out
    assert len(read_frames(path)) == 20
    assert json.loads(path.with_suffix(".json").read_text())["defect_frames"] == [2, 9]

"""`mmad stream`'s outputs checked before the model loads (issue 13.5, 13.6, 13.9), the recording's lock, saved
frames whose write errors are reported, strict stats with no frames (13.13), and the crash-safe muxers (13.4).
No GStreamer needed; the end-to-end rows are tests/e2e/test_bad_inputs.py."""

from __future__ import annotations

import errno
import json
import resource
import signal
from types import SimpleNamespace

import numpy as np
import pytest

from mmad.runtime.errors import ConfigError, OutputError, os_error_text
from mmad.runtime.sources import Platform, output_pipeline_description, parse_source
from mmad.runtime.stream.outputs import (
    FrameSaver,
    RecordingLock,
    check_stream_outputs,
    check_writable,
    check_writable_folder,
)
from mmad.runtime.stream.stats import StreamStats


def test_check_writable_makes_folders_and_names_what_is_wrong(tmp_path):
    assert check_writable(tmp_path / "new" / "deeper" / "out.mp4", "--out").parent.is_dir()
    with pytest.raises(ConfigError, match="--out .*: is a folder"):
        check_writable(tmp_path, "--out")
    (tmp_path / "afile").write_text("x")
    blocked = r"--events .*afile/e.jsonl: cannot write there \(.*afile is a file, not a folder\)"
    with pytest.raises(ConfigError, match=blocked):
        check_writable(tmp_path / "afile" / "e.jsonl", "--events")
    with pytest.raises(ConfigError, match="--save-anomalies .*: cannot write there"):
        check_writable_folder(tmp_path / "afile" / "frames", "--save-anomalies")
    assert not list(tmp_path.glob("new/deeper/.mmad-write-test-*")), "the probe file is removed"


def test_disk_full_is_said_in_words():
    assert os_error_text(OSError(errno.ENOSPC, "No space left on device")) == "disk full (No space left on device)"
    assert os_error_text(OSError(errno.EACCES, "Permission denied")) == "Permission denied"


def config(tmp_path, **values):
    base = dict(model=str(tmp_path / "m.onnx"), out=None, events=None, stats_json=None, save_anomalies=None)
    return SimpleNamespace(**{**base, **values})


def test_an_output_may_not_be_the_source_the_model_or_another_output(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"video")
    spec = parse_source(str(video))
    with pytest.raises(ConfigError, match="--out .* is the --source file"):
        check_stream_outputs(config(tmp_path, out=str(tmp_path / "." / "in.mp4")), spec)
    with pytest.raises(ConfigError, match="--events .* is the --model file"):
        check_stream_outputs(config(tmp_path, events=str(tmp_path / "m.onnx")), spec)
    same = str(tmp_path / "x.json")
    with pytest.raises(ConfigError, match="--stats-json and --events are the same file"):
        check_stream_outputs(config(tmp_path, events=same, stats_json=same), spec)
    with pytest.raises(ConfigError, match="unsupported container"):
        check_stream_outputs(config(tmp_path, out=str(tmp_path / "a.gif")), spec)
    assert video.read_bytes() == b"video"
    check_stream_outputs(config(tmp_path, out=str(tmp_path / "o.mp4"), events=str(tmp_path / "e.jsonl")), spec)


def test_a_second_writer_of_the_same_recording_is_refused(tmp_path):
    out = tmp_path / "annotated.mp4"
    first = RecordingLock(out)
    with pytest.raises(ConfigError, match="another mmad stream is writing this file"):
        RecordingLock(out)
    first.release(discard_empty=True)
    assert not out.exists(), "a recording this run made and never wrote is not left behind"
    out.write_bytes(b"yesterday's recording")
    second = RecordingLock(out)  # free again once the first run ends
    second.release(discard_empty=True)
    assert out.read_bytes() == b"yesterday's recording", "only a file this run made is discarded"


def test_saved_frame_write_errors_are_reported_not_ignored(tmp_path):
    """cv2.imwrite says only False; the saver writes the encoded JPEG itself, so the kernel's error (here a file size
    limit, EFBIG) reaches the stream as an OutputError naming the file."""
    saver = FrameSaver(tmp_path / "frames")
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    saver.save(3, frame, frame)
    assert (tmp_path / "frames" / "frame_0000003_overlay.jpg").stat().st_size > 1000 and saver.saved == 1
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, limits[1]))
    try:
        with pytest.raises(OutputError, match="frame_0000004.jpg: File too large") as lost:
            saver.save(4, frame, frame)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert not lost.value.disk_full


def test_stats_without_frames_are_strict_and_never_nan():
    stats = StreamStats()
    summary = stats.summary()
    assert summary["share_inference"] is None and summary["fps"] == 0.0
    json.dumps(summary, allow_nan=False)
    assert "nan" not in stats.line() and "inference -" in stats.line()


@pytest.mark.parametrize("suffix, muxer", [(".mp4", "mp4mux fragment-duration=1000"), (".mkv", "matroskamux ! ")])
def test_recordings_are_written_in_fragments(suffix, muxer):
    """A kill leaves every complete fragment playable (the kill itself: tests/e2e/test_bad_inputs.py)."""
    description = output_pipeline_description(f"/x/out{suffix}", False, "video/x-raw", Platform(), finalise=True)
    assert muxer in description and "buffer-mode=unbuffered" in description
    assert ("first-moov-then-finalise" in description) == (suffix == ".mp4")


def test_a_device_output_is_written_without_probe_or_fsync():
    """--events /dev/stdout (a pipe or a terminal) is a fine output: no folder to probe, nothing to fsync."""
    from mmad.runtime.events import EventWriter

    assert str(check_writable("/dev/null", "--events")) == "/dev/null"
    with EventWriter("/dev/null", mode="frame", durable=True) as writer:
        assert not writer.durable

"""Source URIs, pipeline descriptions (desktop and Jetson) and the stream's frame bookkeeping; no GStreamer needed."""

from __future__ import annotations

import pytest

from mmad.runtime.errors import ConfigError
from mmad.runtime.sources import Platform, input_pipeline_description, output_pipeline_description, parse_source
from mmad.runtime.stream.stats import DecodeWatch, FrameClock, StreamStats

DESKTOP = Platform()
JETSON = Platform(nvvidconv=True, nvv4l2decoder=True, nvv4l2h264enc=True, nvarguscamerasrc=True, nv3dsink=True)


def test_parse_source_kinds(tmp_path):
    video = tmp_path / "clip with space.mp4"
    video.write_bytes(b"not parsed here")
    assert parse_source("test").kind == "test" and parse_source("test://smpte").location == "smpte"
    assert parse_source(str(video)).kind == "file"
    assert parse_source(f"file://{video}").location == str(video)
    assert parse_source("rtsp://10.0.0.5:8554/cam").kind == "rtsp"
    assert parse_source("https://example.invalid/v.mp4").kind == "uri"
    assert parse_source("csi://1").location == "1"
    assert parse_source("rtsp://h/x").live and parse_source("rtsp://h/x").reconnects
    assert not parse_source(str(video)).live and not parse_source("test").reconnects


@pytest.mark.parametrize(
    "text, message",
    [
        ("missing.mp4", "no such file"),
        ("file:///nowhere/v.mp4", "no such file"),
        ("/dev/video99", "no such camera device"),
        ("v4l2://99", "no such camera device"),
        ("ftp://host/v.mp4", "unsupported URI scheme 'ftp'"),
        ("rtsp:///path-without-host", "needs a host"),
        ("csi://front", "sensor number"),
    ],
)
def test_bad_sources_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_source(text)


def test_live_sources_drop_and_files_do_not(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not parsed here")
    live = input_pipeline_description(parse_source("rtsp://cam/x"), DESKTOP)
    assert "leaky=downstream" in live and "drop=true max-buffers=1 sync=false" in live and "protocols=tcp" in live
    file = input_pipeline_description(parse_source(str(video)), DESKTOP)
    assert "leaky" not in file and "drop=false" in file and "sync=false" in file
    assert file.index("decodebin") < file.index("video/x-raw(ANY)") < file.index("format=RGB") < file.index("appsink")


def test_jetson_elements_are_used_when_present(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not parsed here")
    desktop_in = input_pipeline_description(parse_source(str(video)), DESKTOP)
    jetson_in = input_pipeline_description(parse_source(str(video)), JETSON)
    assert "nvvidconv" not in desktop_in and "nvvidconv ! video/x-raw,format=BGRx" in jetson_in
    assert "nvarguscamerasrc sensor-id=0" in input_pipeline_description(parse_source("csi://0"), JETSON)
    with pytest.raises(ConfigError, match="nvarguscamerasrc"):
        input_pipeline_description(parse_source("csi://0"), DESKTOP)
    caps = "video/x-raw,format=RGB,width=320,height=240,framerate=15/1"
    assert "x264enc" in output_pipeline_description("o.mp4", False, caps, DESKTOP)
    jetson_out = output_pipeline_description("o.mp4", True, caps, JETSON)
    assert "nvv4l2h264enc" in jetson_out and "nv3dsink" in jetson_out and "tee" in jetson_out
    assert "matroskamux" in output_pipeline_description("o.mkv", False, caps, DESKTOP)
    with pytest.raises(ConfigError, match="unsupported container"):
        output_pipeline_description("o.gif", False, caps, DESKTOP)


def test_decode_watch_counts_frames_that_never_leave_the_decoder():
    watch = DecodeWatch()
    for pts in (0, 40, 80, 120, 160, 200):
        watch.frame_in(pts)
    watch.frame_in(2**64 - 1)  # no timestamp: not tracked
    for pts in (0, 40, 120):  # 80 was undecodable
        watch.frame_out(pts)
    assert watch.skipped == 1
    watch.frame_out(160)
    watch.end_of_stream()  # 200 never came out
    assert watch.skipped == 2


def test_decode_watch_with_reordered_input():
    watch = DecodeWatch()
    for pts in (0, 120, 40, 80):  # decode order of I P B B
        watch.frame_in(pts)
    for pts in (0, 40, 80, 120):  # presentation order out
        watch.frame_out(pts)
    watch.end_of_stream()
    assert watch.skipped == 0


def test_frame_clock_numbers_every_arrival_and_skips_dropped_ones():
    clock = FrameClock()
    for pts in (10, 20, 30, 40):
        clock.arrived(pts)
    assert clock.lookup(10)[0] == 0
    assert clock.lookup(40)[0] == 3  # 20 and 30 were dropped by the appsink
    assert clock.count == 4
    assert clock.dropped == 2


def test_frame_clock_counts_only_real_drops():
    """Frames queued but not yet pulled are not dropped: --max-frames 3 on a file is "dropped 0", not "dropped 7"."""
    clock = FrameClock()
    for pts in range(10):  # a file's decoder runs ahead of inference
        clock.arrived(pts)
    assert [clock.lookup(pts)[0] for pts in (0, 1, 2)] == [0, 1, 2] and clock.dropped == 0
    stats = StreamStats(frames_in=clock.count, frames_inferred=3, frames_dropped=clock.dropped)
    assert stats.frames_queued == 7 and "in 10 inferred 3 dropped 0 queued 7" in stats.line()
    assert clock.lookup(999)[0] == 9 and clock.dropped == 0  # a timestamp never seen: no guess at drops
    clock.reset_pending()  # a rebuilt source: the old one's queued frames went with it
    assert clock.dropped == 7


def test_frame_clock_settles_a_stopped_live_source():
    """At the stop: the newest frame at the appsink, one between queue and appsink and the queue's newest are held."""
    clock = FrameClock()
    for pts in range(10):
        clock.arrived(pts)
    clock.lookup(0)
    for pts in (1, 2, 3, 4):  # 1..3 reached the appsink, which keeps only the newest (3); 4 is on its way
        clock.left_queue(pts)
    for pts in (1, 2, 3):
        clock.at_sink(pts)
    # 5..9 waited in a leaky queue of 2 after 4 left: 8 and 9 are in it, 5..7 were dropped.
    assert clock.settle(queue_capacity=2) == 4 and clock.dropped == 2 + 3
    assert clock.settle(queue_capacity=2) == 0  # nothing left to settle
    calm = FrameClock()
    for pts in range(3):
        calm.arrived(pts)
    calm.left_queue(0)
    calm.at_sink(0)
    assert calm.settle(queue_capacity=2) == 3 and calm.dropped == 0  # nothing was over capacity


def test_stats_summary_shares_and_drops():
    # frames_dropped is counted now (FrameClock.dropped), no longer in - inferred - bad: the 2 frames left over
    # here are queued unless counted as dropped.
    s = StreamStats(
        frames_in=10, frames_inferred=7, frames_bad=1, wall=2.0, infer=1.0, wait=0.5, latencies_ms=[10.0, 20.0, 30.0]
    )
    assert s.summary()["frames_dropped"] == 0 and s.summary()["frames_queued"] == 2
    s.frames_dropped = 2
    out = s.summary()
    assert out["frames_dropped"] == 2 and out["fps"] == 3.5 and out["frames_queued"] == 0
    assert out["share_inference"] == 0.5 and out["share_pipeline_wait"] == 0.25 and out["latency_ms_median"] == 20.0
    assert "inferred 7 dropped 2" in s.line()


def test_stats_record_the_thresholds_and_where_latency_is_measured_from():
    s = StreamStats(threshold=0.4, pixel_threshold=0.25, threshold_source="calibration m.onnx.calibration.json")
    s.latency_from, s.latencies_ms, s.queue_ms = "pull", [5.0], [40.0]
    out = s.summary()
    assert (out["threshold"], out["pixel_threshold"], out["threshold_source"]) == (0.4, 0.25, s.threshold_source)
    assert out["latency_from"] == "pull" and out["queue_ms_median"] == 40.0 and "queue_ms" not in out
    assert "from pull" in s.line()

"""The stream's two GStreamer pipelines, around the loop in runner.py:

    input:   source ! decode ! queue ! RGB ! appsink      (InputPipeline: frames out, with probes)
    output:  appsrc ! encode ! file / display             (OutputPipeline: annotated frames in)

The descriptions come from sources.py (desktop and Jetson elements); here they are built, started,
fed, read, watched on their buses and stopped. Neither pipeline runs Python in its streaming threads
beyond the pad probes that count and time frames (stats.py).
"""

from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np

from mmad.runtime.errors import ConfigError, OutputError
from mmad.runtime.gst_util import element_has_property
from mmad.runtime.sources import (
    Platform,
    SourceSpec,
    input_pipeline_description,
    output_muxer,
    output_pipeline_description,
)
from mmad.runtime.stream.stats import DecodeWatch, FrameClock

log = logging.getLogger("mmad.stream")

SECOND = 1_000_000_000  # GStreamer clock time is in nanoseconds
DEFAULT_FPS = 30.0  # for sources whose caps say framerate 0/1 (variable)


def rgb_stride(width: int) -> int:
    """Bytes per row of a packed RGB frame: GStreamer pads rows to a multiple of 4 bytes."""
    return (width * 3 + 3) & ~3


def is_video_decoder(element) -> bool:
    factory = element.get_factory()
    klass = (factory.get_metadata("klass") or "") if factory is not None else ""
    return "Decoder" in klass and ("Video" in klass or "Image" in klass)


def frame_from_sample(sample) -> tuple[np.ndarray, int] | None:
    """uint8 RGB [H, W, 3] and its PTS from an appsink sample; None when the buffer is not a whole frame."""
    caps = sample.get_caps().get_structure(0)
    ok_w, width = caps.get_int("width")
    ok_h, height = caps.get_int("height")
    buf = sample.get_buffer()
    stride = rgb_stride(width)
    if not (ok_w and ok_h) or buf.get_size() != stride * height:
        return None
    data = np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8)
    return data.reshape(height, stride)[:, : width * 3].reshape(height, width, 3), buf.pts


def framerate_of(sample) -> float:
    ok, num, den = sample.get_caps().get_structure(0).get_fraction("framerate")
    return num / den if ok and num > 0 and den > 0 else DEFAULT_FPS


class InputPipeline:
    """The source pipeline, playing: frames come out of its appsink ("frames").

    A pad probe on the queue ("inqueue") tells `clock` when each frame arrives; for a live source, two more
    (after the queue, at the appsink) tell it how far each got, so drops are counted exactly (FrameClock).
    The decoder's video decoders are told to skip undecodable frames instead of failing, and
    `decode_watch` counts them.
    ConfigError when the description cannot be built; failures once playing arrive on the bus.
    """

    def __init__(self, Gst, spec: SourceSpec, platform: Platform, clock: FrameClock, decode_watch: DecodeWatch):
        self.Gst = Gst
        self.clock = clock
        self.decode_watch = decode_watch
        description = input_pipeline_description(spec, platform)
        log.debug("input pipeline: %s", description)
        try:
            self.pipeline = Gst.parse_launch(description)
        except Exception as err:  # GLib.Error: a missing element or a bad description
            raise ConfigError(
                f"--source {spec.text}: cannot build the pipeline ({err}); it was: {description}"
            ) from None
        self.appsink = self.pipeline.get_by_name("frames")
        queue = self.pipeline.get_by_name("inqueue")
        self.queue_capacity = int(queue.get_property("max-size-buffers"))
        self._probe(queue.get_static_pad("sink"), clock.arrived)
        if spec.live:  # only live sources drop frames
            self._probe(queue.get_static_pad("src"), clock.left_queue)
            self._probe(self.appsink.get_static_pad("sink"), clock.at_sink)
        decoder = self.pipeline.get_by_name("decoder")
        if decoder is not None:
            decoder.connect("deep-element-added", self._on_element_added)
        clock.reset_pending()
        self.pipeline.set_state(Gst.State.PLAYING)  # failures arrive as bus errors

    def _probe(self, pad, record) -> None:
        """Call record(pts) for every buffer through the pad (in its streaming thread)."""
        ok = self.Gst.PadProbeReturn.OK

        def on_buffer(pad, info):
            record(info.get_buffer().pts)
            return ok

        pad.add_probe(self.Gst.PadProbeType.BUFFER, on_buffer)

    def _on_element_added(self, bin_, sub_bin, element) -> None:
        """Video decoders skip frames they cannot decode instead of failing the stream; count those."""
        if not is_video_decoder(element):
            return
        if element.find_property("max-errors"):
            element.set_property("max-errors", -1)
        self.decode_watch.watch(self.Gst, element)

    def pull(self, timeout_ns: int):
        """The next frame's sample, or None after timeout_ns (or at the end of the stream)."""
        return self.appsink.try_pull_sample(timeout_ns)

    def is_eos(self) -> bool:
        return self.appsink.is_eos()

    def bus_failures(self, end_of_stream_fails: bool):
        """Yield (why the source failed, whether it is not a video at all) for the errors on the bus (and its end of
        stream, if that fails it). Of a burst of errors the first that is not GStreamer's generic "Internal data
        stream error" (the consequence, not the cause) comes first."""
        Gst = self.Gst
        bus = self.pipeline.get_bus()
        errors = []
        while (msg := bus.pop()) is not None:
            if msg.type == Gst.MessageType.ERROR:
                err, _debug = msg.parse_error()
                generic = err.matches(Gst.stream_error_quark(), Gst.StreamError.FAILED)
                errors.append((generic, f"{msg.src.get_name()}: {err.message}", self._not_a_video(err)))
            elif msg.type == Gst.MessageType.EOS and end_of_stream_fails:
                errors.append((True, "end of stream", False))
        for _generic, text, not_video in sorted(errors, key=lambda e: e[0]):  # stable: first specific error first
            yield text, not_video

    def _not_a_video(self, err) -> bool:
        """Whether a bus error says the input is no video this machine can play (not a passing failure)."""
        Gst = self.Gst
        codes = ("TYPE_NOT_FOUND", "WRONG_TYPE", "DEMUX", "CODEC_NOT_FOUND", "FORMAT", "DECODE")
        return any(err.matches(Gst.stream_error_quark(), getattr(Gst.StreamError, c)) for c in codes)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the pipeline; a source stuck in a read (a pipe, a dead server) may never let go, so after timeout_s
        it is left to the process's exit instead of hanging the run."""
        stopper = threading.Thread(target=self.pipeline.set_state, args=(self.Gst.State.NULL,), daemon=True)
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            log.warning("the source did not stop within %.0f s; left to the end of the process", timeout_s)


class OutputPipeline:
    """The encoder / display pipeline, playing, sized for the first frame: annotated frames go into its appsrc.

    Even sizes (4:2:0 encoders need them); frames of another size (a reconnected source with another
    resolution) are resized to it. Timestamps: real time since `started_at` for live sources, so the
    video plays at the camera's pace, else frame number / fps.
    """

    def __init__(
        self, Gst, out: str | None, display: bool, platform: Platform, first_frame: np.ndarray, fps: float, live: bool
    ):
        self.Gst = Gst
        self.out = out
        self.live = live
        height, width = first_frame.shape[0] & ~1, first_frame.shape[1] & ~1
        self.size = (width, height)
        self.frame_ns = int(SECOND / fps)
        self.pushed = 0
        self.started_at: float | None = None  # the stream's first frame arrival, for live timestamps
        self._last_pts = -1
        caps = f"video/x-raw,format=RGB,width={width},height={height},framerate={round(fps * 1000)}/1000"
        finalise = bool(out) and element_has_property(output_muxer(out), "fragment-mode")
        description = output_pipeline_description(out, display, caps, platform, finalise)
        log.debug("output pipeline: %s", description)
        self.pipeline = Gst.parse_launch(description)
        self.appsrc = self.pipeline.get_by_name("annotated")
        self.appsrc.set_property("block", True)  # back-pressure from the encoder instead of an unbounded queue
        self.appsrc.set_property("max-bytes", 4 * height * rgb_stride(width))
        self.pipeline.set_state(Gst.State.PLAYING)

    def _buffer_data(self, annotated: np.ndarray) -> bytes:
        width, height = self.size
        annotated = annotated[: annotated.shape[0] & ~1, : annotated.shape[1] & ~1]
        if annotated.shape[:2] != (height, width):
            annotated = cv2.resize(annotated, (width, height))
        stride = rgb_stride(width)
        if stride == width * 3:
            return np.ascontiguousarray(annotated).tobytes()
        rows = np.zeros((height, stride), np.uint8)
        rows[:, : width * 3] = annotated.reshape(height, width * 3)
        return rows.tobytes()

    def push(self, annotated: np.ndarray) -> bool:
        """Hand one uint8 RGB frame to the encoder (blocks while it is behind); False when it refuses."""
        buf = self.Gst.Buffer.new_wrapped(self._buffer_data(annotated))
        if self.live:
            pts = max(int((time.perf_counter() - self.started_at) * SECOND), self._last_pts + 1)
        else:
            pts = self.pushed * self.frame_ns
        buf.pts, buf.duration = pts, self.frame_ns
        self._last_pts = pts
        self.pushed += 1
        return self.appsrc.push_buffer(buf) == self.Gst.FlowReturn.OK

    def bus_failure(self) -> OutputError | None:
        """The first error on the bus since the previous call, if any (the one that failed; a muxer's "Could not
        multiplex stream" follows a full disk's write error); disk_full when it is one."""
        Gst = self.Gst
        failure = None
        bus = self.pipeline.get_bus()
        while (msg := bus.pop()) is not None:
            if msg.type == Gst.MessageType.ERROR and failure is None:
                err, _ = msg.parse_error()
                disk_full = err.matches(Gst.resource_error_quark(), Gst.ResourceError.NO_SPACE_LEFT)
                what = f"--out {self.out}" if self.out else "the display"
                reason = f"{msg.src.get_name()}: {err.message}"
                failure = OutputError(f"{what}: {f'disk full ({reason})' if disk_full else reason}", disk_full)
        return failure

    def finish(self, timeout_s: float = 15.0) -> None:
        """EOS into the pipeline and wait until the muxer has written the file's index; then stop it."""
        Gst = self.Gst
        self.appsrc.end_of_stream()
        msg = self.pipeline.get_bus().timed_pop_filtered(
            int(timeout_s * SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
        )
        if msg is None:
            log.error("the output did not finish within %.0f s; %s may be incomplete", timeout_s, self.out)
        elif msg.type == Gst.MessageType.ERROR:
            log.error("output error while finishing: %s", msg.parse_error()[0].message)
        self.abort()

    def abort(self) -> None:
        """Stop without finishing (the pipeline failed: no EOS will come); what the muxer wrote stays playable."""
        self.pipeline.set_state(self.Gst.State.NULL)

"""`mmad stream`: frames in from a GStreamer source, anomaly scores, overlays and events out.

Two pipelines around a loop in the calling thread (never a GStreamer streaming thread):

    source ! decode ! queue ! RGB ! appsink  ->  loop: pull, inspect, write events, push  ->  appsrc ! encode ! file / display

The loop pulls the newest frame (live sources drop older ones in the appsink and the leaky queue,
so latency stays at one frame), runs the model, and pushes the annotated frame into the output
pipeline, which encodes in its own threads. Between frames it reads both buses: errors, end of
stream, decoder warnings (an undecodable frame: skipped and counted), and a lost network source,
which is rebuilt with exponential back-off. SIGINT / SIGTERM end the loop the same way the end of
the video does: the output gets EOS, so the file is finalised and playable.

Exit codes: 0 finished or stopped on request, 1 a pipeline error, 2 a bad model, source or option.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import signal
import statistics
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mmad.runtime.backends import load_backend
from mmad.runtime.errors import ConfigError
from mmad.runtime.events import EventWriter
from mmad.runtime.gst_util import import_gst
from mmad.runtime.inspector import FrameInspector
from mmad.runtime.processing import parse_roi
from mmad.runtime.sources import (
    OUTPUT_MUXERS,
    detect_platform,
    input_pipeline_description,
    output_pipeline_description,
    parse_source,
)

log = logging.getLogger("mmad.stream")

SECOND = 1_000_000_000  # GStreamer clock time is in nanoseconds
NO_TIME = 2**64 - 1  # GST_CLOCK_TIME_NONE
DEFAULT_FPS = 30.0  # for sources whose caps say framerate 0/1 (variable)


@dataclass
class StreamConfig:
    """Everything `mmad stream` takes; the CLI flags map one to one."""

    model: str
    source: str
    out: str | None = None  # annotated video (.mp4, .mkv, .mov)
    events: str | None = None  # JSON-lines file
    events_mode: str = "anomaly"  # "frame": a line per inferred frame; "anomaly": only anomalous frames
    save_anomalies: str | None = None  # folder for anomalous frames (raw and annotated JPEG)
    roi: str | None = None  # "x,y,w,h" in frame pixels
    threshold: float | None = None  # overrides the model's metadata threshold
    display: bool = False
    backend: str = "auto"
    op_library: str | None = None
    plugin_library: str | None = None
    allow_foreign_engine: bool = False  # try a TensorRT engine whose sidecar says it was built elsewhere
    max_frames: int | None = None  # stop after this many inferred frames
    stats_interval: float = 5.0  # seconds between stats lines on stderr; 0: only the final one
    stats_json: str | None = None  # the final stats as JSON
    reconnect_attempts: int = -1  # consecutive reconnects before giving up; -1: never give up
    backoff_initial: float = 0.5  # seconds before the first reconnect; doubles each failed try
    backoff_max: float = 10.0
    stall_timeout: float = 10.0  # a network source silent this long counts as lost
    min_region_area: int = 16
    durable_events: bool = True  # fsync each event line


@dataclass
class StreamStats:
    """Counters and timings of one run (seconds, summed over frames)."""

    source: str = ""
    backend: str = ""
    frames_in: int = 0  # frames that reached the stream (after decoding)
    frames_inferred: int = 0
    frames_bad: int = 0  # buffers that were not a readable frame
    decode_errors: int = 0  # frames the decoder could not decode (skipped by it)
    anomalies: int = 0
    events_written: int = 0
    source_losses: int = 0
    reconnects: int = 0
    wall: float = 0.0  # from the first frame to the end
    wait: float = 0.0  # waiting for the next frame (the pipeline: demux, decode, convert)
    pre: float = 0.0
    infer: float = 0.0
    post: float = 0.0  # map -> regions
    overlay: float = 0.0  # drawing the heat map, boxes and score
    push: float = 0.0  # handing frames to the encoder (blocks while the encoder is behind)
    events: float = 0.0  # event lines (flushed and fsync'ed) and saved frames
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # frame entering the stream -> result out

    @property
    def frames_dropped(self) -> int:
        """Frames that arrived but were never inferred: dropped to stay real-time (live sources)."""
        return max(self.frames_in - self.frames_inferred - self.frames_bad, 0)

    def summary(self) -> dict[str, object]:
        """Counts, FPS, latency and the share of wall time in each stage."""
        wall = self.wall or float("nan")
        lat = self.latencies_ms
        out = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        out.update(
            frames_dropped=self.frames_dropped,
            frames_undecodable=self.frames_bad + self.decode_errors,
            fps=self.frames_inferred / wall if self.wall else 0.0,
            latency_ms_median=statistics.median(lat) if lat else None,
            latency_ms_p95=float(np.percentile(lat, 95)) if lat else None,
            share_inference=self.infer / wall,
            share_pre=self.pre / wall,
            share_post=self.post / wall,
            share_overlay=self.overlay / wall,
            share_encoder_push=self.push / wall,
            share_events=self.events / wall,
            share_pipeline_wait=self.wait / wall,
        )
        return out

    def line(self) -> str:
        s = self.summary()
        latency = (
            "-"
            if s["latency_ms_median"] is None
            else f"{s['latency_ms_median']:.0f} ms (p95 {s['latency_ms_p95']:.0f})"
        )
        return (
            f"in {self.frames_in} inferred {self.frames_inferred} dropped {s['frames_dropped']} "
            f"undecodable {s['frames_undecodable']} anomalies {self.anomalies} reconnects {self.reconnects} | "
            f"{s['fps']:.1f} fps | latency {latency} | time: inference {s['share_inference']:.0%} pre {s['share_pre']:.0%} "
            f"post {s['share_post']:.0%} overlay {s['share_overlay']:.0%} encoder {s['share_encoder_push']:.0%} "
            f"events {s['share_events']:.0%} waiting for frames {s['share_pipeline_wait']:.0%}"
        )


class FrameClock:
    """Frame numbers and arrival times, recorded where frames enter the stream (a pad probe).

    The probe runs in a streaming thread; the loop looks a frame up by its timestamp when it
    pulls it. Frames the appsink dropped are skipped over, so numbers count every arriving frame.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, int, float]] = deque()  # (pts, index, arrival)
        self.count = 0

    def arrived(self, pts: int) -> None:
        with self._lock:
            self._pending.append((pts, self.count, time.perf_counter()))
            self.count += 1

    def lookup(self, pts: int) -> tuple[int, float]:
        """(frame index, arrival time) of the frame with this timestamp; older entries are forgotten."""
        with self._lock:
            while self._pending:
                entry = self._pending.popleft()
                if entry[0] == pts:
                    return entry[1], entry[2]
            return self.count - 1, time.perf_counter()

    def reset_pending(self) -> None:
        """A rebuilt source restarts its timestamps: forget the old ones (numbers keep counting)."""
        with self._lock:
            self._pending.clear()


class DecodeWatch:
    """Counts frames a video decoder consumed but never produced: undecodable, skipped by the decoder.

    GStreamer decoders skip a frame they cannot decode with a debug-log warning only (no bus message),
    so the stream watches the decoder's pads instead. Frames leave a decoder in presentation order,
    so when a frame with timestamp p comes out, every frame that went in with a timestamp below p
    and has not come out never will. Frames without a timestamp are not tracked.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[int] = []  # a heap of timestamps that went in
        self.skipped = 0

    def frame_in(self, pts: int) -> None:
        if pts < NO_TIME:
            with self._lock:
                heapq.heappush(self._pending, pts)

    def frame_out(self, pts: int) -> None:
        with self._lock:
            while self._pending and self._pending[0] < pts:
                heapq.heappop(self._pending)
                self.skipped += 1
            if self._pending and self._pending[0] == pts:
                heapq.heappop(self._pending)

    def end_of_stream(self) -> None:
        with self._lock:
            self.skipped += len(self._pending)
            self._pending.clear()

    def watch(self, Gst, decoder) -> None:
        """Attach to a decoder element's sink and src pads."""

        def on_in(pad, info):
            self.frame_in(info.get_buffer().pts)
            return Gst.PadProbeReturn.OK

        def on_out(pad, info):
            if info.type & Gst.PadProbeType.BUFFER:
                self.frame_out(info.get_buffer().pts)
            elif info.get_event().type == Gst.EventType.EOS:
                self.end_of_stream()
            return Gst.PadProbeReturn.OK

        decoder.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_in)
        decoder.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM, on_out)


def is_video_decoder(element) -> bool:
    factory = element.get_factory()
    klass = (factory.get_metadata("klass") or "") if factory is not None else ""
    return "Decoder" in klass and ("Video" in klass or "Image" in klass)


def frame_from_sample(sample) -> tuple[np.ndarray, int] | None:
    """uint8 RGB [H, W, 3] and its PTS from an appsink sample; None when the buffer is not a whole frame.

    GStreamer pads RGB rows to a multiple of 4 bytes (its default stride for packed formats).
    """
    caps = sample.get_caps().get_structure(0)
    ok_w, width = caps.get_int("width")
    ok_h, height = caps.get_int("height")
    buf = sample.get_buffer()
    stride = (width * 3 + 3) & ~3
    if not (ok_w and ok_h) or buf.get_size() != stride * height:
        return None
    data = np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8)
    return data.reshape(height, stride)[:, : width * 3].reshape(height, width, 3), buf.pts


def framerate_of(sample) -> float:
    ok, num, den = sample.get_caps().get_structure(0).get_fraction("framerate")
    return num / den if ok and num > 0 and den > 0 else DEFAULT_FPS


class StreamRunner:
    """Builds the pipelines for a StreamConfig and runs the loop; `run()` returns the exit code.

    Everything that can be wrong with the configuration (model, source, ROI, output path) raises
    ConfigError in __init__, before any pipeline starts.
    """

    def __init__(self, config: StreamConfig):
        self.config = config
        self.spec = parse_source(config.source)
        roi = parse_roi(config.roi) if config.roi else None
        if config.out:
            suffix = Path(config.out).suffix.lower()
            if suffix not in OUTPUT_MUXERS:
                raise ConfigError(
                    f"--out {config.out}: unsupported container {suffix!r}; expected one of {', '.join(OUTPUT_MUXERS)}"
                )
            Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        if config.save_anomalies:
            Path(config.save_anomalies).mkdir(parents=True, exist_ok=True)
        # The backend's C++ library is loaded before GStreamer, whose libunwind would otherwise break
        # its exceptions (see gst_util._load_onnxruntime_first).
        self.backend = load_backend(
            config.model,
            config.backend,
            op_library=config.op_library,
            plugin_library=config.plugin_library,
            allow_foreign_engine=config.allow_foreign_engine,
        )
        self.Gst = import_gst()
        self.platform = detect_platform()
        if config.display and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or self.platform.nv3dsink
        ):
            # Without a display autovideosink falls through to sinks that crash (dfbvideosink) instead of failing.
            raise ConfigError(
                "--display needs a graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set); use --out instead"
            )
        self.inspector = FrameInspector(self.backend, config.threshold, roi, config.min_region_area)
        self.events = EventWriter(config.events, config.events_mode, config.durable_events) if config.events else None
        self.stats = StreamStats(source=config.source, backend=self.backend.describe())
        self.clock = FrameClock()
        self.watches: list[DecodeWatch] = []  # one per (re)built source
        self.decode_watch: DecodeWatch | None = None  # the current source's
        self.input = None
        self.appsink = None
        self.output = None
        self.appsrc = None
        self._output_size: tuple[int, int] | None = None  # (width, height) of the encoded video
        self._frame_ns = int(SECOND / DEFAULT_FPS)
        self._pushed = 0
        self._last_pts = -1
        self._t0: float | None = None  # first frame's arrival
        self._last_frame_at = time.perf_counter()
        self._reconnect_at: float | None = None
        self._attempts = 0  # consecutive reconnects without a frame
        self._stop_reason: str | None = None
        self._failure: str | None = None

    # --- the input pipeline ----------------------------------------------------------------------
    def _start_input(self) -> None:
        Gst = self.Gst
        description = input_pipeline_description(self.spec, self.platform)
        log.debug("input pipeline: %s", description)
        try:
            self.input = Gst.parse_launch(description)
        except Exception as err:  # GLib.Error: a missing element or a bad description
            raise ConfigError(
                f"--source {self.spec.text}: cannot build the pipeline ({err}); it was: {description}"
            ) from None
        self.appsink = self.input.get_by_name("frames")
        queue_pad = self.input.get_by_name("inqueue").get_static_pad("sink")
        queue_pad.add_probe(Gst.PadProbeType.BUFFER, self._on_frame_in)
        decoder = self.input.get_by_name("decoder")
        if decoder is not None:
            decoder.connect("deep-element-added", self._on_element_added)
        self.decode_watch = DecodeWatch()
        self.watches.append(self.decode_watch)
        self.clock.reset_pending()
        self.input.set_state(Gst.State.PLAYING)  # failures arrive as bus errors

    def _on_frame_in(self, pad, info):
        self.clock.arrived(info.get_buffer().pts)
        return self.Gst.PadProbeReturn.OK

    def _on_element_added(self, bin_, sub_bin, element) -> None:
        """Video decoders skip frames they cannot decode instead of failing the stream; count those."""
        if not is_video_decoder(element):
            return
        if element.find_property("max-errors"):
            element.set_property("max-errors", -1)
        self.decode_watch.watch(self.Gst, element)

    def _stop_input(self) -> None:
        if self.input is not None:
            self.input.set_state(self.Gst.State.NULL)
            self.input = None
            self.appsink = None

    def _poll_input_bus(self) -> None:
        Gst = self.Gst
        bus = self.input.get_bus()
        while self.input is not None and (msg := bus.pop()) is not None:
            if msg.type == Gst.MessageType.ERROR:
                err, debug = msg.parse_error()
                self._source_failed(f"{msg.src.get_name()}: {err.message}")
            elif msg.type == Gst.MessageType.EOS and self.spec.reconnects:
                self._source_failed("end of stream")

    def _source_failed(self, reason: str) -> None:
        """A network source reconnects with back-off; any other source fails the run."""
        if not self.spec.reconnects:
            self._failure = f"source error: {reason}"
            return
        self._stop_input()
        if self._attempts == 0:
            self.stats.source_losses += 1
        self._attempts += 1
        limit = self.config.reconnect_attempts
        if limit >= 0 and self._attempts > limit:
            self._failure = f"source lost ({reason}); gave up after {limit} reconnects"
            return
        delay = min(self.config.backoff_initial * 2 ** (self._attempts - 1), self.config.backoff_max)
        log.warning("source lost (%s); reconnect %d in %.1f s", reason, self._attempts, delay)
        self._reconnect_at = time.perf_counter() + delay

    def _reconnect_if_due(self) -> None:
        if time.perf_counter() < self._reconnect_at:
            time.sleep(0.05)
            return
        self._reconnect_at = None
        self.stats.reconnects += 1
        self._last_frame_at = time.perf_counter()  # the stall watchdog restarts with the new source
        self._start_input()

    # --- the output pipeline ---------------------------------------------------------------------
    def _start_output(self, frame: np.ndarray, fps: float) -> None:
        """Build the encoder / display pipeline for the first frame's size (even sizes: 4:2:0 encoders need them)."""
        Gst = self.Gst
        height, width = frame.shape[0] & ~1, frame.shape[1] & ~1
        self._output_size = (width, height)
        self._frame_ns = int(SECOND / fps)
        caps = f"video/x-raw,format=RGB,width={width},height={height},framerate={round(fps * 1000)}/1000"
        description = output_pipeline_description(self.config.out, self.config.display, caps, self.platform)
        log.debug("output pipeline: %s", description)
        self.output = Gst.parse_launch(description)
        self.appsrc = self.output.get_by_name("annotated")
        self.appsrc.set_property("block", True)  # back-pressure from the encoder instead of an unbounded queue
        self.appsrc.set_property("max-bytes", 4 * height * ((width * 3 + 3) & ~3))
        self.output.set_state(Gst.State.PLAYING)

    def _push(self, annotated: np.ndarray) -> None:
        Gst = self.Gst
        width, height = self._output_size
        annotated = annotated[: annotated.shape[0] & ~1, : annotated.shape[1] & ~1]  # even sizes, as in _start_output
        if annotated.shape[:2] != (height, width):  # a reconnected source with another resolution
            annotated = cv2.resize(annotated, (width, height))
        stride = (width * 3 + 3) & ~3  # GStreamer's row padding for RGB
        if stride == width * 3:
            data = np.ascontiguousarray(annotated).tobytes()
        else:
            rows = np.zeros((height, stride), np.uint8)
            rows[:, : width * 3] = annotated.reshape(height, width * 3)
            data = rows.tobytes()
        buf = Gst.Buffer.new_wrapped(data)
        if self.spec.live:  # real time between inferred frames, so the video plays at the camera's pace
            pts = max(int((time.perf_counter() - self._t0) * SECOND), self._last_pts + 1)
        else:
            pts = self._pushed * self._frame_ns
        buf.pts, buf.duration = pts, self._frame_ns
        self._last_pts = pts
        self._pushed += 1
        if self.appsrc.push_buffer(buf) != Gst.FlowReturn.OK:
            self._failure = self._failure or "the output pipeline stopped accepting frames"

    def _poll_output_bus(self) -> None:
        if self.output is None:
            return
        bus = self.output.get_bus()
        while (msg := bus.pop()) is not None:
            if msg.type == self.Gst.MessageType.ERROR:
                err, _ = msg.parse_error()
                self._failure = f"output error: {msg.src.get_name()}: {err.message}"

    def _finish_output(self, timeout_s: float = 15.0) -> None:
        """EOS into the output pipeline and wait until the muxer has written the file's index."""
        if self.output is None:
            return
        Gst = self.Gst
        self.appsrc.end_of_stream()
        msg = self.output.get_bus().timed_pop_filtered(
            int(timeout_s * SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
        )
        if msg is None:
            log.error("the output did not finish within %.0f s; %s may be incomplete", timeout_s, self.config.out)
        elif msg.type == Gst.MessageType.ERROR:
            log.error("output error while finishing: %s", msg.parse_error()[0].message)
        self.output.set_state(Gst.State.NULL)
        self.output = None

    # --- one frame -------------------------------------------------------------------------------
    def _process(self, sample) -> None:
        t_pulled = time.perf_counter()
        decoded = frame_from_sample(sample)
        if decoded is None:
            self.stats.frames_bad += 1
            log.warning("a buffer that is not a whole frame was skipped")
            return
        frame, pts = decoded
        index, arrived = self.clock.lookup(pts)
        if self._t0 is None:
            self._t0 = arrived
        if self._attempts:
            log.warning("source back after %d reconnect attempt(s)", self._attempts)
            self._attempts = 0

        s = self.stats
        result = self.inspector.inspect(frame)
        timings = self.inspector.timings
        t_inspected = time.perf_counter()
        s.pre += t_inspected - t_pulled - timings.infer - timings.post  # reading the buffer, ROI, resize
        s.infer += timings.infer
        s.post += timings.post

        show = bool(self.config.out or self.config.display)
        save = bool(self.config.save_anomalies and result.anomalous)
        if show or save:
            annotated = self.inspector.overlay(frame, result)
            t_drawn = time.perf_counter()
            s.overlay += t_drawn - t_inspected
            if show:
                if self.output is None:
                    self._start_output(frame, framerate_of(sample))
                self._push(annotated)
            t_inspected = time.perf_counter()
            s.push += t_inspected - t_drawn
            if save:
                self._save(index, frame, annotated)
        pts_s = pts / SECOND if pts is not None and pts < 2**63 else None
        if self.events is not None and self.events.write(result, index, pts_s, self.spec.text):
            s.events_written += 1
        now = time.perf_counter()
        s.events += now - t_inspected

        s.frames_inferred += 1
        s.anomalies += int(result.anomalous)
        s.latencies_ms.append((now - arrived) * 1000.0)
        self._last_frame_at = now

    def _save(self, index: int, frame: np.ndarray, annotated: np.ndarray) -> None:
        folder = Path(self.config.save_anomalies)
        cv2.imwrite(str(folder / f"frame_{index:07d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / f"frame_{index:07d}_overlay.jpg"), cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))

    # --- the loop --------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self._stop_reason is not None:  # a second Ctrl-C: stop now, without finalising
            raise KeyboardInterrupt
        self._stop_reason = signal.Signals(signum).name
        log.warning("%s: finishing the output (press Ctrl-C again to abort)", self._stop_reason)

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to finish (from another thread or a signal handler)."""
        self._stop_reason = reason

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def run(self) -> int:
        """Stream until the source ends, max_frames, a signal or an error; 0, 1 (pipeline error)."""
        previous = self._install_signals()
        log.info("%s -> %s", self.spec.text, self.stats.backend)
        next_stats = time.perf_counter() + self.config.stats_interval
        try:
            self._start_input()
            while self._stop_reason is None and self._failure is None:
                if self._reconnect_at is not None:
                    self._reconnect_if_due()
                    continue
                self._poll_input_bus()
                self._poll_output_bus()
                if self.input is None or self._failure is not None:
                    continue
                t_wait = time.perf_counter()
                sample = self.appsink.try_pull_sample(SECOND // 20)
                if self._t0 is not None:
                    self.stats.wait += time.perf_counter() - t_wait
                if sample is not None:
                    self._process(sample)
                    if self.config.max_frames and self.stats.frames_inferred >= self.config.max_frames:
                        self._stop_reason = f"{self.config.max_frames} frames"
                elif self.appsink.is_eos():
                    if not self.spec.reconnects:
                        self._stop_reason = "end of stream"
                        break
                    self._source_failed("end of stream")
                elif self.spec.reconnects and time.perf_counter() - self._last_frame_at > self.config.stall_timeout:
                    self._source_failed(f"no frame for {self.config.stall_timeout:.0f} s")
                if self.config.stats_interval > 0 and time.perf_counter() >= next_stats:
                    self._update_counts()
                    log.info("%s", self.stats.line())
                    next_stats += self.config.stats_interval
        finally:
            self._shutdown(previous)
        if self._failure:
            log.error("%s", self._failure)
            return 1
        log.info("stopped: %s", self._stop_reason)
        return 0

    def _update_counts(self) -> None:
        self.stats.frames_in = self.clock.count
        skipped = sum(w.skipped for w in self.watches)
        if skipped > self.stats.decode_errors:
            log.warning("%d undecodable frame(s) skipped so far", skipped)
        self.stats.decode_errors = skipped
        if self._t0 is not None:
            self.stats.wall = time.perf_counter() - self._t0

    def _shutdown(self, previous_handlers: dict) -> None:
        self._update_counts()
        try:
            self._stop_input()
            self._finish_output()
        finally:
            if self.events is not None:
                self.events.close()
            self.backend.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        log.info("%s", self.stats.line())
        if self.config.stats_json:
            Path(self.config.stats_json).write_text(json.dumps(self.stats.summary(), indent=2))


def run_stream(config: StreamConfig) -> tuple[int, StreamStats]:
    """Run `mmad stream` in this process: (exit code, stats). ConfigError for a bad configuration."""
    runner = StreamRunner(config)
    code = runner.run()
    return code, runner.stats

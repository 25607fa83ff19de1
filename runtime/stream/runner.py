"""`mmad stream`'s loop: frames in from the input pipeline, verdicts, overlays and events out.

Two pipelines (pipelines.py) around a loop in the calling thread (never a GStreamer streaming thread):

    source ! decode ! queue ! RGB ! appsink  ->  loop: pull, inspect, write events, push
                                             ->  appsrc ! encode ! file / display

The loop pulls the newest frame (live sources drop older ones in the appsink and the leaky queue,
so latency stays at one frame), runs the model, and pushes the annotated frame into the output
pipeline, which encodes in its own threads. Between frames it reads both buses: errors, end of
stream, decoder warnings (an undecodable frame: skipped and counted), and a lost network source,
which is rebuilt with exponential back-off. SIGINT / SIGTERM end the loop the same way the end of
the video does: the output gets EOS, so the file is finalised and playable.

Exit codes: 0 finished or stopped on request, 1 a pipeline error, 2 a bad model, source or option.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from mmad.runtime.backends import load_backend
from mmad.runtime.errors import ConfigError
from mmad.runtime.events import EventWriter
from mmad.runtime.gst_util import import_gst
from mmad.runtime.inspector import FrameInspector
from mmad.runtime.processing import Inspection, parse_roi
from mmad.runtime.sources import detect_platform, output_muxer, parse_source
from mmad.runtime.stream.config import StreamConfig
from mmad.runtime.stream.pipelines import SECOND, InputPipeline, OutputPipeline, frame_from_sample, framerate_of
from mmad.runtime.stream.stats import DecodeWatch, FrameClock, StreamStats

log = logging.getLogger("mmad.stream")


def check_outputs(config: StreamConfig) -> None:
    """Make the output folders; ConfigError for an --out container the stream cannot write."""
    if config.out:
        output_muxer(config.out)
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
    if config.save_anomalies:
        Path(config.save_anomalies).mkdir(parents=True, exist_ok=True)


class StreamRunner:
    """Builds the pipelines for a StreamConfig and runs the loop; `run()` returns the exit code.

    Everything that can be wrong with the configuration (model, source, ROI, output path) raises
    ConfigError in __init__, before any pipeline starts.
    """

    def __init__(self, config: StreamConfig):
        self.config = config
        self.spec = parse_source(config.source)
        roi = parse_roi(config.roi) if config.roi else None
        check_outputs(config)
        # The backend's C++ library is loaded before GStreamer, whose libunwind would otherwise break
        # its exceptions (see gst_util._load_onnxruntime_first).
        self.backend = load_backend(
            config.model,
            config.backend,
            op_library=config.op_library,
            plugin_library=config.plugin_library,
            allow_foreign_engine=config.allow_foreign_engine,
            calibration=config.calibration,
            category=config.category,
        )
        # Gst.init may start gst-plugin-scanner (a stale plugin registry), which loads gst-python's plugin
        # loader when installed; in a virtual environment whose PyGObject has no Gst overrides that loader
        # prints "CRITICAL **: gi.repository.Gst is no dict" and is skipped. Harmless here (the stream uses
        # no Python element); gst_util.import_gst is where the scanner's environment gets fixed.
        self.Gst = import_gst()
        self.platform = detect_platform()
        if config.display and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or self.platform.nv3dsink
        ):
            # Without a display autovideosink falls through to sinks that crash (dfbvideosink) instead of failing.
            raise ConfigError(
                "--display needs a graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set); use --out instead"
            )
        self.inspector = FrameInspector(
            self.backend, config.threshold, roi, config.min_region_area, config.overlay_style
        )
        self.events = EventWriter(config.events, config.events_mode, config.durable_events) if config.events else None
        self.stats = StreamStats(
            source=config.source,
            backend=self.backend.describe(),
            threshold=self.inspector.threshold,
            pixel_threshold=self.inspector.region_threshold,
            threshold_source=self.inspector.threshold_source,
            latency_from="arrival" if self.spec.live else "pull",  # see StreamStats
        )
        self.clock = FrameClock()
        self.watches: list[DecodeWatch] = []  # one per (re)built source
        self.input: InputPipeline | None = None
        self.output: OutputPipeline | None = None
        self._t0: float | None = None  # first frame's arrival
        self._last_frame_at = time.perf_counter()
        self._reconnect_at: float | None = None
        self._attempts = 0  # consecutive reconnects without a frame
        self._stop_reason: str | None = None
        self._failure: str | None = None

    # --- the source: start, failures, reconnects ---------------------------------------------------
    def _start_input(self) -> None:
        watch = DecodeWatch()
        self.input = InputPipeline(self.Gst, self.spec, self.platform, self.clock, watch)
        self.watches.append(watch)

    def _stop_input(self) -> None:
        if self.input is not None:
            self.input.stop()
            self.input = None

    def _poll_input_bus(self) -> None:
        for reason in self.input.bus_failures(end_of_stream_fails=self.spec.reconnects):
            self._source_failed(reason)
            if self.input is None:  # stopped for a reconnect: its bus is gone
                break

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

    # --- the output ------------------------------------------------------------------------------
    def _show(self, annotated: np.ndarray, frame: np.ndarray, sample) -> None:
        """Push an annotated frame to the encoder / display, building the output for the first one."""
        if self.output is None:
            config = self.config
            self.output = OutputPipeline(
                self.Gst, config.out, config.display, self.platform, frame, framerate_of(sample), self.spec.live
            )
            self.output.started_at = self._t0
        if not self.output.push(annotated):
            self._failure = self._failure or "the output pipeline stopped accepting frames"

    def _poll_output_bus(self) -> None:
        if self.output is not None and (failure := self.output.bus_failure()) is not None:
            self._failure = failure

    def _finish_output(self) -> None:
        if self.output is not None:
            self.output.finish()
            self.output = None

    # --- one frame -------------------------------------------------------------------------------
    def _process(self, sample) -> None:
        t_pulled = time.perf_counter()
        decoded = frame_from_sample(sample)
        if decoded is None:
            self.clock.lookup(sample.get_buffer().pts)  # seen, so not counted as dropped
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
        t_done = self._annotate(frame, result, index, sample, t_inspected)
        pts_s = pts / SECOND if pts is not None and pts < 2**63 else None
        if self.events is not None and self.events.write(result, index, pts_s, self.spec.text):
            s.events_written += 1
        now = time.perf_counter()
        s.events += now - t_done

        s.frames_inferred += 1
        s.anomalies += int(result.anomalous)
        s.latencies_ms.append((now - (arrived if self.spec.live else t_pulled)) * 1000.0)
        s.queue_ms.append(max(t_pulled - arrived, 0.0) * 1000.0)
        self._last_frame_at = now

    def _annotate(self, frame: np.ndarray, result: Inspection, index: int, sample, t_inspected: float) -> float:
        """Draw, show and save the frame as configured; returns when the pushing was done (for the timings)."""
        show = bool(self.config.out or self.config.display)
        save = bool(self.config.save_anomalies and result.anomalous)
        if not (show or save):
            return t_inspected
        annotated = self.inspector.overlay(frame, result)
        t_drawn = time.perf_counter()
        self.stats.overlay += t_drawn - t_inspected
        if show:
            self._show(annotated, frame, sample)
        t_pushed = time.perf_counter()
        self.stats.push += t_pushed - t_drawn
        if save:
            self._save(index, frame, annotated)
        return t_pushed

    def _save(self, index: int, frame: np.ndarray, annotated: np.ndarray) -> None:
        folder = Path(self.config.save_anomalies)
        cv2.imwrite(str(folder / f"frame_{index:07d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / f"frame_{index:07d}_overlay.jpg"), cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))

    # --- signals ---------------------------------------------------------------------------------
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

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> int:
        """Stream until the source ends, max_frames, a signal or an error; 0, 1 (pipeline error)."""
        previous = self._install_signals()
        log.info("%s -> %s; %s", self.spec.text, self.stats.backend, self.inspector.describe_thresholds())
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
                if not self._step():
                    break
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

    def _step(self) -> bool:
        """Wait up to 50 ms for a frame and process it; False when a file source has ended."""
        t_wait = time.perf_counter()
        sample = self.input.pull(SECOND // 20)
        if self._t0 is not None:
            self.stats.wait += time.perf_counter() - t_wait
        if sample is not None:
            self._process(sample)
            if self.config.max_frames and self.stats.frames_inferred >= self.config.max_frames:
                self._stop_reason = f"{self.config.max_frames} frames"
        elif self.input.is_eos():
            if not self.spec.reconnects:
                self._stop_reason = "end of stream"
                return False
            self._source_failed("end of stream")
        elif self.spec.reconnects and time.perf_counter() - self._last_frame_at > self.config.stall_timeout:
            self._source_failed(f"no frame for {self.config.stall_timeout:.0f} s")
        return True

    def _update_counts(self) -> None:
        self.stats.frames_in = self.clock.count
        self.stats.frames_dropped = self.clock.dropped
        skipped = sum(w.skipped for w in self.watches)
        if skipped > self.stats.decode_errors:
            log.warning("%d undecodable frame(s) skipped so far", skipped)
        self.stats.decode_errors = skipped
        if self._t0 is not None:
            self.stats.wall = time.perf_counter() - self._t0

    def _shutdown(self, previous_handlers: dict) -> None:
        try:
            queue_capacity = self.input.queue_capacity if self.input is not None else 0
            self._stop_input()
            if self.spec.live:  # the frames since the last one pulled: still held, or dropped meanwhile
                self.clock.settle(queue_capacity)
            self._update_counts()
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

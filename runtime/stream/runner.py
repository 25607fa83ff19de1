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

Fails closed: every output is checked writable before the model loads; a source that gives no frame within
--start-timeout (or none for --frame-timeout) ends the run; a run that inferred nothing exits non-zero; a
non-finite score is an anomaly and an error; a full disk stops the run unless --on-disk-full continue.

Exit codes (EXIT_*): 0 finished or stopped on request, every frame inspected and recorded; 1 the run failed (a
pipeline or source error, a timeout, nothing inferred, a full disk with --on-disk-full stop); 2 a bad model,
source or option (found before the first frame); 3 the run finished but not whole: frames with non-finite
scores (flagged anomalous), or an output given up on a full disk (--on-disk-full continue).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np

from mmad.runtime.backends import load_backend
from mmad.runtime.errors import ConfigError, OutputError
from mmad.runtime.events import EventWriter
from mmad.runtime.gst_util import import_gst
from mmad.runtime.inspector import FrameInspector
from mmad.runtime.processing import Inspection, parse_roi
from mmad.runtime.sources import connection_problem, detect_platform, parse_source
from mmad.runtime.stream.config import StreamConfig
from mmad.runtime.stream.outputs import FrameSaver, RecordingLock, check_stream_outputs, write_stats_json
from mmad.runtime.stream.pipelines import SECOND, InputPipeline, OutputPipeline, frame_from_sample, framerate_of
from mmad.runtime.stream.stats import DecodeWatch, FrameClock, StreamStats

log = logging.getLogger("mmad.stream")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INCOMPLETE = 0, 1, 2, 3  # see the module docstring


class StreamRunner:
    """Builds the pipelines for a StreamConfig and runs the loop; `run()` returns the exit code.

    Everything that can be wrong with the configuration (model, source, ROI, output paths) raises
    ConfigError in __init__, before any pipeline starts; the outputs are checked and opened before the model
    loads, so a bad path fails in the first second.
    """

    def __init__(self, config: StreamConfig):
        self.config = config
        self.spec = parse_source(config.source)
        self.roi = parse_roi(config.roi) if config.roi else None
        check_stream_outputs(config, self.spec)
        self.events = self.recording = self.saver = self.backend = None
        try:
            self.events = (
                EventWriter(config.events, config.events_mode, config.durable_events) if config.events else None
            )
            self.recording = RecordingLock(config.out) if config.out else None
            self.saver = FrameSaver(config.save_anomalies) if config.save_anomalies else None
            self._load(config)
        except BaseException:
            self._close_outputs(discard_empty_recording=True)
            if self.backend is not None:
                self.backend.close()
            raise
        self._out = config.out  # None once the recording is given up (--on-disk-full continue)
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
        self._awaiting_first = True  # no frame yet from the (re)started source: --start-timeout applies
        self._next_sync = time.perf_counter() + config.sync_interval
        self._reconnect_at: float | None = None
        self._attempts = 0  # consecutive reconnects without a frame
        self._stop_reason: str | None = None
        self._failure: str | None = None
        self._failure_code = EXIT_FAILED

    def _load(self, config: StreamConfig) -> None:
        """The model, GStreamer and the inspector; ConfigError for what cannot be used."""
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
            self.backend, config.threshold, self.roi, config.min_region_area, config.overlay_style
        )

    # --- the source: start, failures, reconnects ---------------------------------------------------
    def _start_input(self) -> None:
        watch = DecodeWatch()
        self._last_frame_at = time.perf_counter()  # the start-up watchdog counts from here
        self._awaiting_first = True
        self.input = InputPipeline(self.Gst, self.spec, self.platform, self.clock, watch)
        self.watches.append(watch)

    def _stop_input(self) -> None:
        if self.input is not None:
            self.input.stop()
            self.input = None

    def _poll_input_bus(self) -> None:
        for reason, not_video in self.input.bus_failures(end_of_stream_fails=self.spec.reconnects):
            # Before the first frame a network source's refused connection reads as "not enough data": ask first.
            unreachable = connection_problem(self.spec) if self._t0 is None else None
            if not_video and not unreachable and not self.spec.reconnects:
                self._fail(f"--source {self.spec.text}: not a video this machine can play ({reason})", EXIT_BAD_INPUT)
            self._source_failed(unreachable or reason)
            if self.input is None:  # stopped for a reconnect: its bus is gone
                break

    def _fail(self, reason: str, code: int = EXIT_FAILED) -> None:
        """End the run with this reason and exit code; the first failure is the one reported (the rest follow)."""
        if self._failure is None:
            self._failure, self._failure_code = reason, code

    def _source_failed(self, reason: str) -> None:
        """A network source reconnects with back-off; any other source fails the run."""
        if not self.spec.reconnects:
            self._fail(f"source error: {self.spec.text}: {reason}")
            return
        self._stop_input()
        if self._attempts == 0:
            self.stats.source_losses += 1
        self._attempts += 1
        limit = self.config.reconnect_attempts
        if limit >= 0 and self._attempts > limit:
            self._fail(f"source lost ({connection_problem(self.spec) or reason}); gave up after {limit} reconnects")
            return
        delay = min(self.config.backoff_initial * 2 ** (self._attempts - 1), self.config.backoff_max)
        log.warning("source lost (%s); reconnect %d in %.1f s", reason, self._attempts, delay)
        self._reconnect_at = time.perf_counter() + delay

    def _watch_for_silence(self) -> None:
        """No frame within --start-timeout of (re)starting the source, or for --frame-timeout since the last one:
        the source is lost (a network camera reconnects; anything else ends the run). Every source kind: a file
        whose demuxer stalls in start-up posts no error, and would otherwise be waited on for ever."""
        config = self.config
        limit = config.start_timeout if self._awaiting_first else config.frame_timeout
        if time.perf_counter() - self._last_frame_at <= limit:
            return
        if self._awaiting_first:
            self._source_failed(f"no frame within {limit:g} s of starting (--start-timeout)")
        else:
            self._source_failed(f"no frame for {limit:g} s (--frame-timeout)")

    def _reconnect_if_due(self) -> None:
        if time.perf_counter() < self._reconnect_at:
            time.sleep(0.05)
            return
        self._reconnect_at = None
        self.stats.reconnects += 1
        self._start_input()

    # --- the outputs ----------------------------------------------------------------------------
    def _show(self, annotated: np.ndarray, frame: np.ndarray, sample) -> None:
        """Push an annotated frame to the encoder / display, building the output for the first one."""
        if self.output is None:
            config = self.config
            self.output = OutputPipeline(
                self.Gst, self._out, config.display, self.platform, frame, framerate_of(sample), self.spec.live
            )
            self.output.started_at = self._t0
        if not self.output.push(annotated):
            self._poll_output_bus()  # why it refused, when its bus says
            if self.output is not None:
                self._fail("the output pipeline stopped accepting frames")

    def _poll_output_bus(self) -> None:
        failure = self.output.bus_failure() if self.output is not None else None
        if failure is None:
            return
        self.output.abort()  # it failed: no EOS will come; what the muxer wrote stays playable
        self.output = None
        if self._output_lost(failure):  # the display, if any, comes back without the recording with the next frame
            self._out = None
            self._release_recording()

    def _output_lost(self, err: OutputError) -> bool:
        """An output failed mid-run: True when the run goes on without it (a full disk, --on-disk-full continue);
        else the run fails, saying so."""
        if err.disk_full and self.config.on_disk_full == "continue":
            log.error("%s; inspection goes on without it (--on-disk-full continue)", err)
            self.stats.outputs_lost.append(str(err))
            return True
        hint = " (--on-disk-full stop; 'continue' keeps inspecting without this output)" if err.disk_full else ""
        self._fail(f"{err}{hint}")
        return False

    def _sync_recording_if_due(self) -> None:
        """fsync the recording now and then, so a power cut loses only its last seconds (a kill loses nothing the
        muxer has written: the kernel keeps it)."""
        if self.recording is not None and time.perf_counter() >= self._next_sync:
            self.recording.sync()
            self._next_sync = time.perf_counter() + self.config.sync_interval

    def _finish_output(self) -> None:
        if self.output is not None:
            self.output.finish()
            self.output = None

    def _release_recording(self, discard_empty: bool = False) -> None:
        if self.recording is not None:
            self.recording.release(discard_empty)
            self.recording = None

    def _close_outputs(self, discard_empty_recording: bool = False) -> None:
        if self.events is not None:
            self.events.close()
        self._release_recording(discard_empty_recording)

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
        self._write_event(result, index, pts)
        now = time.perf_counter()
        s.events += now - t_done

        s.frames_inferred += 1
        s.anomalies += int(result.anomalous)
        if result.error is not None:
            s.score_errors += 1
            if s.score_errors == 1:
                log.error("frame %d: %s; such frames are anomalies and error events (exit 3)", index, result.error)
        s.latencies_ms.append((now - (arrived if self.spec.live else t_pulled)) * 1000.0)
        s.queue_ms.append(max(t_pulled - arrived, 0.0) * 1000.0)
        self._last_frame_at = now
        self._awaiting_first = False

    def _write_event(self, result: Inspection, index: int, pts: int | None) -> None:
        if self.events is None:
            return
        pts_s = pts / SECOND if pts is not None and pts < 2**63 else None
        try:
            if self.events.write(result, index, pts_s, self.spec.text):
                self.stats.events_written += 1
        except OutputError as err:
            if self._output_lost(err):
                self.events.close()
                self.events = None

    def _annotate(self, frame: np.ndarray, result: Inspection, index: int, sample, t_inspected: float) -> float:
        """Draw, show and save the frame as configured; returns when the pushing was done (for the timings)."""
        show = bool(self._out or self.config.display)
        save = bool(self.saver is not None and result.anomalous)
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
        try:
            self.saver.save(index, frame, annotated)
            self.stats.frames_saved += 1
        except OutputError as err:
            if self._output_lost(err):
                self.saver = None

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
        """Stream until the source ends, max_frames, a signal or an error; an exit code (EXIT_*)."""
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
                self._sync_recording_if_due()
                if self.config.stats_interval > 0 and time.perf_counter() >= next_stats:
                    self._update_counts()
                    log.info("%s", self.stats.line())
                    next_stats += self.config.stats_interval
        finally:
            self._shutdown(previous)
        return self._exit_code()

    def _exit_code(self) -> int:
        s = self.stats
        if self._failure is None and s.frames_inferred == 0:
            self._fail(f"no frame was inferred before the run ended ({self._stop_reason}): nothing was inspected")
        if self._failure:
            log.error("%s", self._failure)
            return self._failure_code
        log.info("stopped: %s", self._stop_reason)
        if s.score_errors or s.outputs_lost:
            log.error(
                "finished, but not whole: %d frame(s) with a non-finite score (flagged anomalous)%s",
                s.score_errors,
                "".join(f"; lost: {lost}" for lost in s.outputs_lost),
            )
            return EXIT_INCOMPLETE
        return EXIT_OK

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
        else:
            self._watch_for_silence()
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
            self._close_outputs()
            self.backend.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        log.info("%s", self.stats.line())
        if self.config.stats_json:
            try:
                write_stats_json(self.config.stats_json, self.stats.summary())
            except OutputError as err:
                self._fail(str(err))


def run_stream(config: StreamConfig) -> tuple[int, StreamStats]:
    """Run `mmad stream` in this process: (exit code, stats). ConfigError for a bad configuration."""
    runner = StreamRunner(config)
    code = runner.run()
    return code, runner.stats

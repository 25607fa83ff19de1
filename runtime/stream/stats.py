"""What `mmad stream` counts and times: the run's stats, frame numbers and arrival times, undecodable frames.

StreamStats is what the stats lines and `--stats-json` report. FrameClock and DecodeWatch are fed
from GStreamer pad probes (streaming threads) and read by the loop, so they take a lock; they know
nothing of GStreamer beyond timestamps, so they are tested without it.
"""

from __future__ import annotations

import heapq
import statistics
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

NO_TIME = 2**64 - 1  # GST_CLOCK_TIME_NONE: a buffer without a timestamp
MAX_PENDING = 256  # frames FrameClock remembers; the pipeline holds far fewer (queue 4, appsink 1)


@dataclass
class StreamStats:
    """Counters and timings of one run (seconds, summed over frames).

    Every frame that enters the stream (after decoding) is, at the end, exactly one of: inferred, bad
    (not a readable frame), dropped (discarded unseen to stay real-time: by the leaky queue or the
    appsink of a live source, or with a source torn down for a reconnect), or queued (still waiting in
    the pipeline when the run stopped: --max-frames, a signal; a file's decoder runs a few frames ahead).

    Latency is per frame, to its result being out (inferred, drawn, pushed, event written), from where
    it is meaningful (`latency_from`): for a live source from its arrival in the stream, waiting in the
    queue included, since that is how old the verdict is against what the camera sees; for a file from
    when the loop took it from the pipeline, since a file's decoder fills the queue ahead of inference and
    that wait is not latency. `queue_ms_*` reports the wait between arrival and being taken, for both.
    """

    source: str = ""
    backend: str = ""
    threshold: float | None = None  # the image threshold in use
    pixel_threshold: float | None = None  # what regions are drawn above
    threshold_source: str = ""  # where the threshold came from (calibration file, model metadata, --threshold)
    frames_in: int = 0  # frames that reached the stream (after decoding)
    frames_inferred: int = 0
    frames_bad: int = 0  # buffers that were not a readable frame
    frames_dropped: int = 0  # discarded unseen to stay real-time (live sources)
    decode_errors: int = 0  # frames the decoder could not decode (skipped by it)
    anomalies: int = 0
    score_errors: int = 0  # frames whose score was not finite (counted as anomalies too: fail closed)
    events_written: int = 0
    frames_saved: int = 0  # anomalous frames saved by --save-anomalies
    outputs_lost: list[str] = field(default_factory=list)  # outputs given up mid-run (--on-disk-full continue)
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
    latency_from: str = "arrival"  # "arrival" (live sources) or "pull" (files); see the class docstring
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    queue_ms: list[float] = field(default_factory=list, repr=False)  # arrival -> taken by the loop

    @property
    def frames_queued(self) -> int:
        """Frames that entered the stream and were neither inferred, bad nor dropped: still in the pipeline."""
        return max(self.frames_in - self.frames_inferred - self.frames_bad - self.frames_dropped, 0)

    def summary(self) -> dict[str, object]:
        """Counts, FPS, latency and the share of wall time in each stage (None where nothing was measured: no
        frame, no time), so the summary is strict JSON."""
        lat, queue = self.latencies_ms, self.queue_ms
        out = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms", "queue_ms")}
        out.update(
            frames_queued=self.frames_queued,
            frames_undecodable=self.frames_bad + self.decode_errors,
            fps=self.frames_inferred / self.wall if self.wall else 0.0,
            latency_ms_median=statistics.median(lat) if lat else None,
            latency_ms_p95=float(np.percentile(lat, 95)) if lat else None,
            queue_ms_median=statistics.median(queue) if queue else None,
        )
        for name, seconds in self._stage_times().items():
            out[f"share_{name}"] = seconds / self.wall if self.wall > 0 else None
        return out

    def _stage_times(self) -> dict[str, float]:
        return {
            "inference": self.infer,
            "pre": self.pre,
            "post": self.post,
            "overlay": self.overlay,
            "encoder_push": self.push,
            "events": self.events,
            "pipeline_wait": self.wait,
        }

    def line(self) -> str:
        """The one-line stats the stream logs every --stats-interval seconds and at the end."""
        s = self.summary()
        latency = (
            "-"
            if s["latency_ms_median"] is None
            else f"{s['latency_ms_median']:.0f} ms (p95 {s['latency_ms_p95']:.0f}, from {self.latency_from})"
        )
        shares = {
            name: "-" if s[f"share_{name}"] is None else f"{s[f'share_{name}']:.0%}" for name in self._stage_times()
        }
        errors = f" score errors {self.score_errors}" if self.score_errors else ""
        return (
            f"in {self.frames_in} inferred {self.frames_inferred} dropped {self.frames_dropped} "
            f"queued {s['frames_queued']} undecodable {s['frames_undecodable']} anomalies {self.anomalies}{errors} "
            f"reconnects {self.reconnects} | {s['fps']:.1f} fps | latency {latency} | time: inference "
            f"{shares['inference']} pre {shares['pre']} post {shares['post']} overlay {shares['overlay']} "
            f"encoder {shares['encoder_push']} events {shares['events']} waiting for frames {shares['pipeline_wait']}"
        )


ARRIVED, LEFT_QUEUE, AT_SINK = 0, 1, 2  # how far a pending frame has gone (FrameClock)


@dataclass
class _Pending:
    pts: int
    index: int
    arrival: float
    stage: int = ARRIVED


class FrameClock:
    """Frame numbers and arrival times, recorded where frames enter the stream (a pad probe), and drops.

    The probes run in streaming threads; the loop looks a frame up by its timestamp when it pulls it.
    Frames pass the pipeline in order, so the frames that arrived before the one pulled and were never
    pulled themselves were dropped (by the leaky queue or the appsink of a live source): `dropped`
    counts them, and numbers count every arriving frame. A frame whose timestamp was never seen (an
    element that re-stamps) leaves the pending ones alone: they are not counted as dropped on a guess.

    When a live run stops, the frames since the last one pulled are either still in the pipeline or
    were dropped in the meantime; `settle` tells them apart from how far each got (probes after the
    queue and at the appsink: `left_queue`, `at_sink`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self.count = 0
        self.dropped = 0

    def arrived(self, pts: int) -> None:
        with self._lock:
            self._pending.append(_Pending(pts, self.count, time.perf_counter()))
            self.count += 1

    def _advance(self, pts: int, stage: int) -> None:
        with self._lock:
            for entry in self._pending:
                if entry.pts == pts and entry.stage < stage:
                    entry.stage = stage
                    return

    def left_queue(self, pts: int) -> None:
        """The frame left the input queue (the appsink is next)."""
        self._advance(pts, LEFT_QUEUE)

    def at_sink(self, pts: int) -> None:
        """The frame reached the appsink."""
        self._advance(pts, AT_SINK)

    def lookup(self, pts: int) -> tuple[int, float]:
        """(frame index, arrival time) of the frame with this timestamp; the ones before it were dropped."""
        with self._lock:
            for position, entry in enumerate(self._pending):
                if entry.pts == pts:
                    for _ in range(position + 1):
                        self._pending.popleft()
                    self.dropped += position
                    return entry.index, entry.arrival
            while len(self._pending) > MAX_PENDING:  # unmatched timestamps must not grow it forever
                self._pending.popleft()
            return self.count - 1, time.perf_counter()

    def reset_pending(self) -> None:
        """A rebuilt source restarts its timestamps: the old one's pending frames went with it (dropped)."""
        with self._lock:
            self.dropped += len(self._pending)
            self._pending.clear()

    def settle(self, queue_capacity: int) -> int:
        """Once a live source's pipeline has stopped: count the pending frames it had dropped; return how many
        it still held (queued, not inferred because the run stopped).

        Held: the newest frame at the appsink (it keeps one, drop=true), any between the queue and the
        appsink, and the newest `queue_capacity` of those still waiting in the leaky queue after the last
        one to leave it (it drops the oldest when full). The rest were dropped.
        """
        with self._lock:
            entries = list(self._pending)
            self._pending.clear()
        stages = [e.stage for e in entries]
        newest_at_sink = max((i for i, stage in enumerate(stages) if stage == AT_SINK), default=-1)
        last_left = max((i for i, stage in enumerate(stages) if stage != ARRIVED), default=-1)
        in_transit = sum(stage == LEFT_QUEUE for stage in stages[newest_at_sink + 1 :])
        waiting = len(entries) - last_left - 1
        held = int(newest_at_sink >= 0) + in_transit + min(queue_capacity, waiting)
        with self._lock:
            self.dropped += len(entries) - held
        return held


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

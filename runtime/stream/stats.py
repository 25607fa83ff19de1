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
    # From a frame entering the stream to its result being out.
    latencies_ms: list[float] = field(default_factory=list, repr=False)

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
        """The one-line stats the stream logs every --stats-interval seconds and at the end."""
        s = self.summary()
        latency = (
            "-"
            if s["latency_ms_median"] is None
            else f"{s['latency_ms_median']:.0f} ms (p95 {s['latency_ms_p95']:.0f})"
        )
        return (
            f"in {self.frames_in} inferred {self.frames_inferred} dropped {s['frames_dropped']} "
            f"undecodable {s['frames_undecodable']} anomalies {self.anomalies} reconnects {self.reconnects} | "
            f"{s['fps']:.1f} fps | latency {latency} | time: inference {s['share_inference']:.0%} "
            f"pre {s['share_pre']:.0%} post {s['share_post']:.0%} overlay {s['share_overlay']:.0%} "
            f"encoder {s['share_encoder_push']:.0%} events {s['share_events']:.0%} "
            f"waiting for frames {s['share_pipeline_wait']:.0%}"
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

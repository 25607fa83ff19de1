"""Inspection events as JSON lines: one per inferred frame, or one per anomalous frame.

Each line is written, flushed and fsync'ed on its own, so a crash or a power cut loses at most the
line being written and every earlier line is complete JSON.

    {"timestamp": "2025-01-01T12:00:00.123456+00:00", "frame": 17, "pts": 0.68, "source": "cam.mp4",
     "score": 0.93, "threshold": 0.5, "pixel_threshold": 0.3, "anomalous": true,
     "regions": [{"x": 10, "y": 20, "w": 30, ...}]}
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from .errors import ConfigError
from .processing import Inspection

EVENT_MODES = ("frame", "anomaly")


def event_record(inspection: Inspection, frame_index: int, pts: float | None, source: str) -> dict[str, object]:
    """The JSON object for one inspected frame (pts: seconds into the stream, None when unknown)."""
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "frame": frame_index,
        "pts": None if pts is None else round(pts, 6),
        "source": source,
        "score": round(inspection.score, 6),
        "threshold": inspection.threshold,
        "pixel_threshold": inspection.pixel_threshold,  # regions are drawn above it
        "anomalous": inspection.anomalous,
        "regions": [r.as_dict() for r in inspection.regions],
    }


class EventWriter:
    """Appends event lines to a file; mode "frame" writes every frame, "anomaly" only anomalous ones."""

    def __init__(self, path: str | Path, mode: str = "anomaly", durable: bool = True):
        if mode not in EVENT_MODES:
            raise ConfigError(f"--events-mode {mode!r}: expected one of {', '.join(EVENT_MODES)}")
        self.path = Path(path)
        self.mode = mode
        self.durable = durable  # fsync each line: survives a power cut, costs a disk flush per line
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"--events {self.path}: cannot open for writing ({err.strerror})") from None
        self.written = 0

    def write(self, inspection: Inspection, frame_index: int, pts: float | None, source: str) -> bool:
        """Write the frame's event if the mode wants it; True when a line was written."""
        if self._file is None:
            raise ValueError(f"{self.path}: the event writer is closed")
        if self.mode == "anomaly" and not inspection.anomalous:
            return False
        self._file.write(json.dumps(event_record(inspection, frame_index, pts, source)) + "\n")
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())
        self.written += 1
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path) -> list[dict[str, object]]:
    """Every complete line of an events file (a torn last line, left by a crash, is skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events

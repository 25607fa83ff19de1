"""Inspection events as JSON lines: one per inferred frame, or one per anomalous frame.

Each line is written, flushed and fsync'ed on its own, so a crash or a power cut loses at most the
line being written and every earlier line is complete JSON. A line cut off (a kill mid-write, a full
disk) is ended with a newline when the file is next opened or written, so the next line never merges
into it; read_events skips it.

Lines are strict JSON (no NaN / Infinity): a non-finite number is written as null and its field named
in "nonfinite"; a frame whose score is not finite carries "error" (it is also anomalous: fail closed).

    {"timestamp": "2025-01-01T12:00:00.123456+00:00", "frame": 17, "pts": 0.68, "source": "cam.mp4",
     "score": 0.93, "threshold": 0.5, "pixel_threshold": 0.3, "anomalous": true,
     "regions": [{"x": 10, "y": 20, "w": 30, ...}], "error": null, "nonfinite": []}
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path

from .errors import ConfigError, OutputError, is_disk_full, os_error_text
from .processing import Inspection

EVENT_MODES = ("frame", "anomaly")
log = logging.getLogger("mmad.events")


def finite_or_null(value: object, where: str = "", nonfinite: list[str] | None = None) -> object:
    """`value` with every non-finite float (in dicts and lists too) replaced by None, for strict JSON; the places
    replaced ("score", "regions[0].peak") are appended to `nonfinite` when given."""
    if isinstance(value, float) and not math.isfinite(value):
        if nonfinite is not None:
            nonfinite.append(where)
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v, f"{where}.{k}" if where else k, nonfinite) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_null(v, f"{where}[{i}]", nonfinite) for i, v in enumerate(value)]
    return value


def event_record(inspection: Inspection, frame_index: int, pts: float | None, source: str) -> dict[str, object]:
    """The JSON object for one inspected frame (pts: seconds into the stream, None when unknown); strict JSON."""
    record = {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "frame": frame_index,
        "pts": None if pts is None else round(pts, 6),
        "source": source,
        "score": round(inspection.score, 6),
        "threshold": inspection.threshold,
        "pixel_threshold": inspection.pixel_threshold,  # regions are drawn above it
        "anomalous": inspection.anomalous,
        "regions": [r.as_dict() for r in inspection.regions],
        "error": inspection.error,
    }
    nonfinite: list[str] = []
    record = finite_or_null(record, "", nonfinite)
    record["nonfinite"] = nonfinite
    return record


class EventWriter:
    """Appends event lines to a file; mode "frame" writes every frame, "anomaly" only anomalous ones.

    ConfigError when the file cannot be opened; OutputError (disk_full for ENOSPC) when a line cannot be written.
    """

    def __init__(self, path: str | Path, mode: str = "anomaly", durable: bool = True):
        if mode not in EVENT_MODES:
            raise ConfigError(f"--events-mode {mode!r}: expected one of {', '.join(EVENT_MODES)}")
        self.path = Path(path)
        self.mode = mode
        self.durable = durable  # fsync each line: survives a power cut, costs a disk flush per line
        self.written = 0
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            regular = self.path.is_file()  # not a pipe or a terminal (/dev/stdout): nothing to repair or fsync
            self.durable = durable and regular
            self._torn = regular and _ends_mid_line(self.path)
            if self._torn:
                log.warning("%s: its last line was cut off (a kill or a full disk); it is ended here", self.path)
                self._append(b"")
        except OSError as err:
            self.close()
            raise ConfigError(f"--events {self.path}: cannot write there ({os_error_text(err)})") from None

    def _append(self, data: bytes) -> None:
        """Write data whole (after a newline when the file ends mid-line) and fsync; OSError as os.write raises it."""
        if self._torn:
            data = b"\n" + data
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except OSError:
                self._torn = self._torn or len(view) < len(data)  # part of the line is on disk: end it next time
                raise
            view = view[n:]
            self._torn = bool(view)
        if self.durable:
            os.fsync(self._fd)

    def write(self, inspection: Inspection, frame_index: int, pts: float | None, source: str) -> bool:
        """Write the frame's event if the mode wants it; True when a line was written."""
        if self._fd is None:
            raise ValueError(f"{self.path}: the event writer is closed")
        if self.mode == "anomaly" and not inspection.anomalous:
            return False
        line = json.dumps(event_record(inspection, frame_index, pts, source), allow_nan=False) + "\n"
        try:
            self._append(line.encode("utf-8"))
        except OSError as err:
            raise OutputError(f"--events {self.path}: {os_error_text(err)}", is_disk_full(err)) from None
        self.written += 1
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_mid_line(path: Path) -> bool:
    """Whether a file is non-empty and its last byte is not a newline (a line torn by a kill or a full disk)."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def read_events(path: str | Path) -> list[dict[str, object]]:
    """Every complete line of an events file (a torn last line, left by a crash, is skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events

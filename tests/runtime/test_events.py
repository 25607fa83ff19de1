"""Event lines (issue 13.1 and 13.8): strict JSON with non-finite values as null plus a flag, a line torn by a
kill or a full disk ended on the next open or write, and a full disk reported as such (OutputError)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mmad.runtime.errors import OutputError
from mmad.runtime.events import EventWriter, event_record, read_events
from mmad.runtime.processing import Inspection, Region


def inspection(score: float, peak: float = 0.9, error: str | None = None) -> Inspection:
    region = Region(1, 2, 3, 4, 12, peak)
    return Inspection(score, 0.5, True, [region], np.zeros((4, 4), np.float32), 0.3, None, error)


def strict(line: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON: {line}")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_are_null_and_named():
    record = event_record(inspection(float("nan"), peak=float("inf"), error="non-finite score (nan)"), 3, 0.1, "cam")
    assert record["score"] is None and record["regions"][0]["peak"] is None
    assert record["nonfinite"] == ["score", "regions[0].peak"] and record["error"] == "non-finite score (nan)"
    assert strict(json.dumps(record, allow_nan=False))["anomalous"] is True
    fine = event_record(inspection(0.7), 4, None, "cam")
    assert fine["score"] == 0.7 and fine["nonfinite"] == [] and fine["error"] is None


def test_events_file_lines_are_strict_json(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path, mode="frame", durable=False) as writer:
        writer.write(inspection(float("nan"), error="non-finite score (nan)"), 0, 0.0, "cam")
        writer.write(inspection(0.8), 1, 0.1, "cam")
    lines = [strict(line) for line in path.read_text().splitlines()]
    assert [e["score"] for e in lines] == [None, 0.8]


def test_a_torn_last_line_is_ended_on_open(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"frame": 0}\n{"frame": 1, "sco')
    with EventWriter(path, mode="frame", durable=False) as writer:
        writer.write(inspection(0.8), 7, None, "cam")
    lines = path.read_text().splitlines()
    assert lines[:2] == ['{"frame": 0}', '{"frame": 1, "sco'] and strict(lines[2])["frame"] == 7
    assert [e["frame"] for e in read_events(path)] == [0, 7]


def test_a_write_cut_short_by_a_full_disk_is_reported_and_never_merged(tmp_path, monkeypatch):
    """The write layer as the kernel behaves on a full disk: part of the line is written, then ENOSPC."""
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path, mode="frame", durable=False)
    writer.write(inspection(0.8), 0, None, "cam")
    real_write, room = os.write, [10]

    def disk_fills_up(fd: int, data) -> int:
        if room[0] == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[: room[0]]))  # a short write: the disk had room for 10 bytes
        room[0] -= written
        return written

    monkeypatch.setattr("mmad.runtime.events.os.write", disk_fills_up)
    with pytest.raises(OutputError, match="disk full") as lost:
        writer.write(inspection(0.9), 1, None, "cam")
    assert lost.value.disk_full and str(path) in str(lost.value)
    monkeypatch.setattr("mmad.runtime.events.os.write", real_write)  # space again
    writer.write(inspection(0.95), 2, None, "cam")
    writer.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and len(lines[1]) == 10  # the torn piece stays on a line of its own
    assert [e["frame"] for e in read_events(path)] == [0, 2]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (a device whose writes fail with ENOSPC)")
def test_dev_full_is_a_disk_full_error():
    writer = EventWriter("/dev/full", mode="frame", durable=False)
    with pytest.raises(OutputError, match="disk full") as lost:
        writer.write(inspection(0.8), 0, None, "cam")
    writer.close()
    assert lost.value.disk_full

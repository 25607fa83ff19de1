"""What `mmad stream` writes, checked before the model loads, and what happens when an output fails mid-run.

    check_writable(path, what)         a file can be written there (folder made, read-only / full disk found now)
    check_writable_folder(folder, what) the same for a folder of files (--save-anomalies)
    check_stream_outputs(config, spec) every output of a run: writable, none the source or another output
    RecordingLock                      --out held for the run (flock): a second run writing it is refused
    FrameSaver                         --save-anomalies: JPEGs encoded, then written with every error checked
    write_stats_json                   --stats-json: strict JSON, written whole

A full disk mid-run raises OutputError(disk_full=True); the runner applies --on-disk-full to it.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
from pathlib import Path

import cv2
import numpy as np

from mmad.runtime.contract import atomic_write
from mmad.runtime.errors import ConfigError, OutputError, is_disk_full, os_error_text
from mmad.runtime.sources import SourceSpec, output_muxer

# --on-disk-full: "stop" ends the run (exit 1) when an output cannot be written because the disk is full;
# "continue" goes on inspecting without that output (exit 3 at the end). See StreamConfig.on_disk_full.
DISK_FULL_POLICIES = ("stop", "continue")


def _probe(folder: Path) -> None:
    """Create, write one byte to, flush and remove a file in `folder` (OSError when any of that fails)."""
    probe = folder / f".mmad-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
    finally:
        probe.unlink(missing_ok=True)


def _make_folder(folder: Path, what: str, shown: Path) -> None:
    """mkdir -p, with a clear ConfigError when a file stands where a folder must be (mkdir says "File exists")."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ConfigError(f"{what} {shown}: cannot write there ({ancestor} is a file, not a folder)")
            break
    folder.mkdir(parents=True, exist_ok=True)


def check_writable(path: str | Path, what: str) -> Path:
    """`path`, once a file can be written there: ConfigError naming `what` for a folder, a folder that cannot be
    made, a read-only place, an existing file that is read-only, or a full disk."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; expected a file name")
    if path.exists() and not path.is_file():  # a pipe or a terminal (/dev/stdout): no folder to write a probe in
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{what} {path}: cannot write there (not writable)")
        return path
    try:
        _make_folder(path.parent, what, path)
        _probe(path.parent)
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot write there ({os_error_text(err)})") from None
    return path


def check_writable_folder(folder: str | Path, what: str) -> Path:
    """`folder`, made if needed, once files can be written in it; ConfigError naming `what` otherwise."""
    folder = Path(folder)
    try:
        _make_folder(folder, what, folder)
        _probe(folder)
    except OSError as err:
        raise ConfigError(f"{what} {folder}: cannot write there ({os_error_text(err)})") from None
    return folder


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_stream_outputs(config, spec: SourceSpec) -> None:
    """Every output of a `mmad stream` run (a StreamConfig), before the model loads: a container the stream can
    write, writable, and neither the source, the model nor another output (ConfigError naming the flags)."""
    named = (("--out", config.out), ("--events", config.events), ("--stats-json", config.stats_json))
    files = {flag: value for flag, value in named if value}
    if config.out:
        output_muxer(config.out)
    reads = {"--model": config.model, **({"--source": spec.location} if spec.kind == "file" else {})}
    for flag, value in files.items():
        for other, read in reads.items():
            if _same_file(Path(value), Path(read)):
                raise ConfigError(f"{flag} {value} is the {other} file; writing it would destroy it")
    for (flag, value), (other, written) in itertools.combinations(files.items(), 2):
        if _same_file(Path(value), Path(written)):
            raise ConfigError(f"{other} and {flag} are the same file ({value}); give each its own")
    for flag, value in files.items():
        check_writable(value, flag)
    if config.save_anomalies:
        check_writable_folder(config.save_anomalies, "--save-anomalies")


class RecordingLock:
    """--out opened (never truncated) and locked with flock for the whole run, before the model loads.

    A second `mmad stream` writing the same file is refused instead of both writing an unplayable file; the
    kernel drops the lock when the process ends, even killed. The open descriptor also lets the runner
    fsync the recording (sync()), so a power cut loses only what came after the last sync.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.created = not self.path.exists()  # made by this run: removed again if the run never starts
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(f"--out {self.path}: cannot write there ({os_error_text(err)})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise ConfigError(
                f"--out {self.path}: another mmad stream is writing this file; give this run another --out"
            ) from None

    def sync(self) -> None:
        """Flush what the muxer has written so far to the disk (a power cut keeps it)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass  # the recording's own write errors arrive on the output pipeline's bus

    def release(self, discard_empty: bool = False) -> None:
        """Unlock; discard_empty: remove the file when this run made it and wrote nothing (it never started)."""
        if self._fd is None:
            return
        if discard_empty and self.created and os.fstat(self._fd).st_size == 0:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


class FrameSaver:
    """--save-anomalies: each anomalous frame as FOLDER/frame_NNNNNNN.jpg (raw) and _overlay.jpg (annotated).

    The JPEG is encoded in memory and written with Python's file calls rather than cv2.imwrite, whose False
    says nothing of why; an OSError becomes OutputError (disk_full for ENOSPC), so nothing is lost unnoticed.
    """

    def __init__(self, folder: str | Path):
        self.folder = check_writable_folder(folder, "--save-anomalies")
        self.saved = 0

    def _write(self, path: Path, rgb: np.ndarray) -> None:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OutputError(f"--save-anomalies {path}: OpenCV could not encode the frame as JPEG")
        try:
            with open(path, "wb") as f:
                f.write(jpeg.tobytes())
        except OSError as err:
            raise OutputError(f"--save-anomalies {path}: {os_error_text(err)}", is_disk_full(err)) from None

    def save(self, index: int, frame: np.ndarray, annotated: np.ndarray) -> None:
        self._write(self.folder / f"frame_{index:07d}.jpg", frame)
        self._write(self.folder / f"frame_{index:07d}_overlay.jpg", annotated)
        self.saved += 1


def write_stats_json(path: str | Path, summary: dict) -> None:
    """--stats-json: the final stats, strict JSON, replaced whole (a reader never sees half a file); OutputError."""
    text = json.dumps(summary, indent=2, allow_nan=False)
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    except OSError as err:
        raise OutputError(f"--stats-json {path}: {os_error_text(err)}", is_disk_full(err)) from None

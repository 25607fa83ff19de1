"""The table-driven bad-input suites' shared parts: a row (Case), the folder a row runs in (Workspace), and the
runner that starts the real `mmad` command on it and checks the exit code and the message.

    CASES = [
        Case("folder-as-source", argv=("stream", "--model", "{model}", "--source", "{tmp}"), rc=2,
             fragment="is a folder"),
        Case("torn-events", setup=write_torn_events, argv=(...), rc=0, fragment="..."),
    ]

    @pytest.mark.parametrize("case", params(CASES))
    def test_bad_input(case, tmp_path, synthetic_onnx):
        check_case(case, Workspace(tmp_path, {"model": synthetic_onnx}))

argv items and the fragment may name the workspace's paths in braces: "{tmp}" (the row's own folder) and
every key of Workspace.paths ("{model}", "{video}", ...); a setup function may add paths before they are
filled in.
Rows that need a read-only folder or a small disk call read_only_folder() / small_disk() in their setup: mmad
then runs in a mount namespace of its own (`unshare -rm`), and the row is skipped where that is not allowed.
A row passes when `mmad` exits with `rc`, `fragment` is in its stderr (case-insensitive), and stderr
holds no Python traceback (a bad input gets a sentence, never a stack).
Used by tests/e2e/test_bad_inputs.py (stream and runtime) and tests/e2e/test_bad_inputs_model.py (model side).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MMAD = (sys.executable, "-m", "mmad.runtime.cli")  # the `mmad` console script's entry point, in this venv
DEFAULT_TIMEOUT = 120.0  # seconds; a row that runs longer has hung, which is itself a failure


@dataclass
class Workspace:
    """Where a row runs: its own folder `tmp` and named paths (fixtures, generated files) for argv."""

    tmp: Path
    paths: dict[str, Path | str] = field(default_factory=dict)  # names for argv's "{name}" fields
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the mmad process
    mounts: list[str] = field(default_factory=list)  # shell mount commands run (in a namespace of its own) first
    cleanups: list[Callable[[], object]] = field(default_factory=list)  # run after the row (close, kill, ...)

    def fill(self, argv: Sequence[str]) -> list[str]:
        """argv with "{name}" fields replaced by the workspace's paths."""
        names = {"tmp": str(self.tmp), **{k: str(v) for k, v in self.paths.items()}}
        return [item.format(**names) for item in argv]


@dataclass(frozen=True)
class Case:
    """One bad input: how to set it up, the `mmad` arguments, the exit code and a fragment of the message."""

    id: str
    argv: tuple[str, ...]
    rc: int
    fragment: str
    setup: Callable[[Workspace], None] | None = None
    timeout: float = DEFAULT_TIMEOUT
    check: Callable[[Workspace, subprocess.CompletedProcess], None] | None = None  # more assertions, if any


def mount_namespace_reason() -> str | None:
    """None when this machine lets a test mount a tmpfs or a read-only bind in a namespace of its own
    (`unshare -rm`), else why not (a skip reason)."""
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux) to mount a small or read-only file system"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"cannot mount in a user and mount namespace here: {probe.stderr.strip()}"
    return None


def _mounted_folder(workspace: Workspace, name: str, mounts: Callable[[str], list[str]]) -> Path:
    """The workspace's folder `name`, with mounts(quoted path) run on it for the mmad process; skips the test where
    mounts are not allowed."""
    reason = mount_namespace_reason()
    if reason:
        pytest.skip(reason)
    folder = workspace.tmp / name
    folder.mkdir(exist_ok=True)
    workspace.mounts.extend(mounts(shlex.quote(str(folder))))
    workspace.paths[name] = folder
    return folder


def read_only_folder(workspace: Workspace, name: str = "read_only") -> Path:
    """A folder `name` in the workspace that is read-only for the mmad process (a read-only bind mount; the test
    runs as root here, which chmod does not stop). Skips the test where mounts are not allowed."""
    return _mounted_folder(workspace, name, lambda q: [f"mount --bind {q} {q}", f"mount -o remount,bind,ro {q}"])


def small_disk(workspace: Workspace, size_kib: int, name: str = "disk") -> Path:
    """A folder `name` in the workspace that is a tmpfs of `size_kib` KiB for the mmad process: a disk that fills
    up. Skips the test where mounts are not allowed."""
    return _mounted_folder(workspace, name, lambda q: [f"mount -t tmpfs -o size={size_kib}k tmpfs {q}"])


def mmad_command(argv: Sequence[str], mounts: Sequence[str] = ()) -> list[str]:
    """The command line that runs `mmad ARGV`, after `mounts` in a mount namespace of its own when there are any."""
    if not mounts:
        return [*MMAD, *argv]
    script = " && ".join([*mounts, 'exec "$@"'])
    return ["unshare", "-rm", "sh", "-c", script, "sh", *MMAD, *argv]


def run_mmad(
    argv: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    mounts: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """`mmad ARGV` in a child process, as a user runs it; a run past `timeout` fails the test as a hang."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    try:
        return subprocess.run(
            mmad_command(argv, mounts), capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"mmad {' '.join(argv)} hung: no exit within {timeout:.0f} s\nstderr: {hung.stderr}")


def check_case(case: Case, workspace: Workspace) -> subprocess.CompletedProcess:
    """Set the row up, run it, and assert its exit code, its message and that no traceback was printed."""
    try:
        if case.setup is not None:
            case.setup(workspace)
        argv = workspace.fill(case.argv)
        fragment = workspace.fill([case.fragment])[0]
        result = run_mmad(argv, case.timeout, workspace.env, cwd=workspace.tmp, mounts=workspace.mounts)
    finally:
        for cleanup in reversed(workspace.cleanups):
            cleanup()
    shown = f"mmad {' '.join(argv)}\nrc {result.returncode}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == case.rc, f"expected exit code {case.rc}\n{shown}"
    assert fragment.lower() in result.stderr.lower(), f"expected {fragment!r} in stderr\n{shown}"
    assert "Traceback (most recent call last)" not in result.stderr, f"a traceback instead of a message\n{shown}"
    if case.check is not None:
        case.check(workspace, result)
    return result


def params(cases: Sequence[Case]) -> list:
    """pytest.param per row, named by its id (so a regression shows up as one failing row)."""
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"bad-input rows with the same id: {duplicates}")
    return [pytest.param(c, id=c.id) for c in cases]

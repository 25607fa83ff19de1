"""The runtime's error classes: a bad model, source or option (ConfigError), and an output that can no longer be
written during a run (OutputError), each reported in one sentence.

`mmad stream` turns a ConfigError into a message on stderr and exit code 2 (a usage error), never a
traceback. It subclasses ValueError so callers that already catch ValueError keep working.
os_error_text() says an OSError in words, "disk full" first when it is one (is_disk_full()).
"""

from __future__ import annotations

import errno

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class ConfigError(ValueError):
    """A model, source or option that cannot be used; the message names it and says what was expected."""


class OutputError(RuntimeError):
    """An output (recording, events, saved frames, stats) that could not be written during a run; the message names
    it and says why. disk_full: the disk or the quota is full, which `mmad stream --on-disk-full` decides about."""

    def __init__(self, message: str, disk_full: bool = False):
        super().__init__(message)
        self.disk_full = disk_full


def is_disk_full(err: OSError) -> bool:
    return err.errno in DISK_FULL_ERRNOS


def os_error_text(err: OSError) -> str:
    """An OSError in words for a message, "disk full" first when it is one (ENOSPC, EDQUOT)."""
    reason = err.strerror or str(err)
    return f"disk full ({reason})" if is_disk_full(err) else reason

"""The runtime's error class: a bad model, source or option, reported in one sentence.

`mmad stream` turns it into a message on stderr and exit code 2 (a usage error), never a
traceback. It subclasses ValueError so callers that already catch ValueError keep working.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A model, source or option that cannot be used; the message names it and says what was expected."""

"""The errors a user can cause, and the one place that turns them into one line and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ConfigError(ValueError):
    """A config value that is not allowed; the message is one line: key, value, what is allowed."""


class SearchSpaceError(ConfigError):
    """A malformed search-space value; the message names the key and the value."""


class SelectionError(ConfigError):
    """Nothing to select, or a request that would select on test data (`hypersweep best`)."""


def one_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, cut to `limit` characters, to quote in a ConfigError."""
    return " ".join(str(error).split())[:limit]


# Called once when a bad input is reported: a sweep's parent run, opened before the sweep
# checked its settings, is deleted then rather than left FAILED (tracking.SweepTracking).
_on_reject: list[Callable[[], None]] = []


def on_reject(hook: Callable[[], None]) -> None:
    _on_reject.append(hook)


def exit_with(error: BaseException, status: int = 2, what: str = "error") -> SystemExit:
    """Print `hypersweep: error: <message>` on stderr and return the SystemExit to raise."""
    message = " ".join(str(error).split()) if "\n" in str(error) else str(error)
    print(f"hypersweep: {what}: {message}", file=sys.stderr, flush=True)
    while status == 2 and _on_reject:
        _on_reject.pop()()
    return SystemExit(status)

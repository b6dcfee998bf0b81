"""The errors a user can cause, and the one place that turns them into one line and exit 2."""

from __future__ import annotations

import sys


class ConfigError(ValueError):
    """A config value that is not allowed; the message is one line: key, value, what is allowed."""


def exit_with(error: BaseException, status: int = 2, what: str = "error") -> SystemExit:
    """Print `hypersweep: error: <message>` on stderr and return the SystemExit to raise."""
    message = " ".join(str(error).split()) if "\n" in str(error) else str(error)
    print(f"hypersweep: {what}: {message}", file=sys.stderr, flush=True)
    return SystemExit(status)

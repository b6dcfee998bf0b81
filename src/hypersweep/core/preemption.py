"""Preemption: SIGTERM (a scheduler's notice: SLURM before a requeue, Kubernetes before an
eviction) and SIGINT (Ctrl-C) stop training at the next mini-batch, save a resumable checkpoint
and end the runs KILLED with status_reason=preempted; the same command continues from there.

The handler only records the signal; the training loop polls `requested()` between batches and
the sweeper between trials, so that nothing is interrupted halfway through a write. A second
signal while the first is being honoured stops at once (KeyboardInterrupt), as a second Ctrl-C
does elsewhere. Processes this one started to run jobs (the pool's workers) are registered with
`forward_to`: they get SIGTERM when this process gets either signal, and ignore Ctrl-C of their
own (`as_worker`), so that the sweep decides once for all of them and says so in one line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: int | None = None
_installed: dict[int, object] = {}
_forward: Callable[[], Iterable[int]] | None = None
_idle: Callable[[], bool] | None = None  # a worker: whether it runs no job now


class Preempted(SystemExit):
    """The command stops because of a signal; exit status 128 + the signal's number, as a
    process killed by it would have (what SLURM and shells expect). Its line is printed where
    it is raised (`stop`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __reduce__(self):  # crosses process boundaries (a pool worker's job)
        return (Preempted, (self.signum,))


def _handle(signum: int, frame: object) -> None:
    global _received
    if _idle is not None and _idle():  # a worker with nothing to save
        os._exit(128 + signum)
    if _received is not None:  # the second signal: stop now
        raise KeyboardInterrupt
    _received = signum
    for pid in list(_forward() if _forward else ()):
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def install() -> None:
    """Take over SIGTERM and SIGINT for this process (main thread only; elsewhere nothing)."""
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        _installed[signum] = signal.signal(signum, _handle)


def as_worker(idle: Callable[[], bool]) -> None:
    """For a worker process: Ctrl-C reaches the whole terminal's process group, and the
    sweep that started this worker forwards it as SIGTERM; the worker heeds that one only,
    and exits at once when `idle()`. Its job's line goes to its log, not the terminal."""
    global _idle
    _idle = idle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _installed[signal.SIGTERM] = signal.signal(signal.SIGTERM, _handle)


def forward_to(pids: Callable[[], Iterable[int]] | None) -> None:
    """The processes (as a function returning their pids) that get SIGTERM with this one."""
    global _forward
    _forward = pids


def requested() -> int | None:
    """The signal received, if any."""
    return _received


def name(signum: int) -> str:
    return signal.Signals(signum).name


def stop(what: str | None) -> Preempted:
    """Print `hypersweep: preempted (SIGTERM): <what>` and return the Preempted to raise
    (`what=None`: print nothing, the caller says it for several)."""
    assert _received is not None
    line = f"hypersweep: preempted ({name(_received)}): {what}"
    if what is None:
        pass
    elif _idle is not None:
        logging.getLogger("hypersweep").warning(line)
    else:
        print(line, file=sys.stderr, flush=True)
    return Preempted(_received)


def raise_if_requested(what: str) -> None:
    if _received is not None:
        raise stop(what)


def reset() -> None:
    """Forget a received signal and restore the previous handlers (tests, and a process that
    runs commands one after another)."""
    global _received, _idle
    _received, _idle = None, None
    for signum, previous in _installed.items():
        signal.signal(signum, previous)
    _installed.clear()

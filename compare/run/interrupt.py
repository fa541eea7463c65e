"""Ctrl-C stops a run even when something below swallows the cancellation it causes.

`asyncio.run` turns SIGINT into one `cancel()` of the main task. That cancellation is thrown in
wherever the task happens to be waiting, and code that catches it there (a plug-in pipeline, a
library shielding a clean-up step) absorbs it: the run then goes on to the end and exits 0
(tests/reliability/test_kill_resume.py shows it with a pipeline that swallows it). So the signal
also sets a latch, checked before each request: a swallowed cancellation still stops the run at
the next request, marked interrupted, with exit 130. A SIGINT the process was started to ignore
(a background job of a shell) stays ignored, as it does for any POSIX tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType


@dataclass
class Latch:
    """Set once Ctrl-C was pressed during the run."""

    requested: bool = False

    def check(self) -> None:
        """Raise the cancellation a swallowed Ctrl-C should have raised; asyncio.run then turns it
        into KeyboardInterrupt, as it does for one that was not swallowed."""
        if self.requested:
            raise asyncio.CancelledError("interrupted (Ctrl-C)")


@contextlib.contextmanager
def latch_sigint(latch: Latch) -> Iterator[Latch]:
    """Chain a handler that sets `latch` in front of the current SIGINT handler (asyncio's, which
    cancels the main task); put the old one back on exit. Outside the main thread signals cannot
    be handled, and the latch simply stays unset."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield latch
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        latch.requested = True
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield latch
    finally:
        signal.signal(signal.SIGINT, previous)

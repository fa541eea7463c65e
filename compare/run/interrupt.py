"""Ctrl-C stops a run even when something below swallows the cancellation it causes.

`asyncio.run` turns SIGINT into one `cancel()` of the main task. That cancellation is thrown in
wherever the task happens to be waiting, and a library that shields a clean-up step (a response
being closed, a connection returned to its pool) can absorb it: the run then went on to the end
and exited 0 (seen in CI under load: SIGINT after request 2 of 10, all 10 answered). So the
signal also sets a latch, checked before each request: a swallowed cancellation still stops the
run at the next request, marked interrupted, with exit 130.
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
    if threading.current_thread() is not threading.main_thread():
        yield latch
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        latch.requested = True
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield latch
    finally:
        signal.signal(signal.SIGINT, previous)

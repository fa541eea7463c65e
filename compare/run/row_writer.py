"""The runner's store writes, off the event loop (compare/run/runner.py and load.py use it)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class RowWriter:
    """Store writes, in order, on one worker thread, while the next request is already out.

    A DuckDB write (~10 ms, more under load) on the event loop would stall the streams in
    flight and add to their measured TTFT/ITL; awaited in line, it would still delay the next
    request of a serial run by that much. Queued here, it costs neither. One worker keeps the
    connection on one thread at a time and the rows in order; `close` waits for the queue, and
    the main thread touches the store again only after it. A failed write is not swallowed:
    it is raised by the next `submit` (stopping the run) or by `close`. A process killed with
    rows still queued loses those rows only; a rerun redoes them (they were never stored).
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragvslc-store")
        self._error: BaseException | None = None
        self.written = 0  # rows on disk (only the worker changes it)

    def submit(
        self, then: Callable[[], None] | None, fn: Callable[..., None], *args: Any, **kwargs: Any
    ) -> None:
        """Queue `fn(*args, **kwargs)`; `then()` runs on the worker once it is stored, so a
        progress line ("[n/total]") never counts a row that is not on disk yet."""
        self._raise()
        self._pool.submit(self._call, then, fn, args, kwargs)

    def _call(
        self, then: Callable[[], None] | None, fn: Callable[..., None], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        if self._error is not None:  # after a failed write, write nothing more (rows stay in order)
            return
        try:
            fn(*args, **kwargs)
            self.written += 1
            if then is not None:
                then()
        except BaseException as exc:
            self._error = exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            msg = f"row writer failed (nothing after it was stored): {self._error}"
            raise RuntimeError(msg) from self._error

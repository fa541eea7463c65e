"""Heartbeat lines for requests in flight: a log that stays silent for minutes looks hung.

A cold 8k-token prompt on a 2-core CPU without native bf16 takes minutes before its first
token. On a terminal the progress bar's clock shows the wait; in a log (CI, nohup, a
supervisor) nothing would, so every `interval_s` each request still in flight gets a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compare.core.protocols import Role


@dataclass
class _Flight:
    label: str
    started: float
    first_token: float | None = None


class InFlight:
    """Which requests are out, since when, and whether their first token came."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self._clock = clock
        self._flights: dict[int, _Flight] = {}

    def start(self, i: int, label: str) -> None:
        self._flights[i] = _Flight(label, self._clock())

    def first_token(self, i: int) -> None:
        f = self._flights.get(i)
        if f is not None and f.first_token is None:
            f.first_token = self._clock()

    def end(self, i: int) -> None:
        self._flights.pop(i, None)

    def lines(self, min_age_s: float) -> list[str]:
        """`[1/18] long_context needle-8000-050: 60 s, no first token yet` per old request."""
        now = self._clock()
        out = []
        for i, f in sorted(self._flights.items()):
            age = now - f.started
            if age < min_age_s:
                continue
            state = ("no first token yet" if f.first_token is None
                     else f"first token after {f.first_token - f.started:.0f} s, decoding")
            out.append(f"[{i + 1}/{self.total}] {f.label}: {age:.0f} s, {state}")
        return out


@contextlib.asynccontextmanager
async def heartbeat(
    flights: InFlight, say: Callable[[str], None] | None, interval_s: float = 30.0
) -> AsyncIterator[None]:
    """Say the lines every interval while the body runs; nothing at all without `say`."""
    if say is None:
        yield
        return

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval_s)
            for line in flights.lines(interval_s):
                say(line)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class Watch:
    """What a run tells the person waiting, besides the per-row progress: an estimate before
    the first request (given the planned (example, pipeline params, role) triples) and heartbeats."""

    say: Callable[[str], None] | None = None
    interval_s: float = 30.0
    estimate: Callable[[Sequence[tuple[Any, Mapping[str, Any], Role]]], None] | None = None

"""Heartbeat lines for requests in flight: a log that stays silent for minutes looks hung.

A cold 8k-token prompt on a 2-core CPU without native bf16 takes minutes before its first
token. On a terminal the progress bar's clock shows the wait; in a log (CI, nohup, a
supervisor) nothing would, so every `interval_s` each request still in flight gets a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from compare.core.protocols import Plan, Role


@dataclass
class _Request:
    started: float
    first_token: float | None = None
    ended: float | None = None


@dataclass
class _Flight:
    label: str
    started: float
    # A row's requests in order: one for a plain pipeline; a router's fallback (Self-Route's
    # long-context re-ask) and a retry add more. Empty until the first is seen.
    requests: list[_Request] = field(default_factory=list)


class InFlight:
    """Which requests are out, since when, and whether the first token of the one in flight came:
    a row with several requests (a router's fallback) is described by its latest, so a fallback
    still prefilling is not reported as "decoding" on the strength of the first request's token."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self._clock = clock
        self._flights: dict[int, _Flight] = {}

    def start(self, i: int, label: str) -> None:
        self._flights[i] = _Flight(label, self._clock())

    def request(self, i: int) -> None:
        """Row `i` sends another request (see `watched`)."""
        f = self._flights.get(i)
        if f is not None:
            f.requests.append(_Request(self._clock()))

    def request_done(self, i: int) -> None:
        r = self._current(i)
        if r is not None and r.ended is None:
            r.ended = self._clock()

    def first_token(self, i: int) -> None:
        """The first token of row `i`'s request in flight (a row without `request` calls counts as
        one request from its start)."""
        f = self._flights.get(i)
        if f is None:
            return
        if not f.requests:
            f.requests.append(_Request(f.started))
        r = f.requests[-1]
        if r.first_token is None:
            r.first_token = self._clock()

    def end(self, i: int) -> None:
        self._flights.pop(i, None)

    def _current(self, i: int) -> _Request | None:
        f = self._flights.get(i)
        return f.requests[-1] if f is not None and f.requests else None

    def lines(self, min_age_s: float) -> list[str]:
        """`[1/18] long_context needle-8000-050: 60 s, no first token yet` per old request;
        a row on its second request or later names it: `..., request 2 for 148 s, no first token
        yet (request 1 took 4 s)`."""
        now = self._clock()
        out = []
        for i, f in sorted(self._flights.items()):
            age = now - f.started
            if age < min_age_s:
                continue
            out.append(f"[{i + 1}/{self.total}] {f.label}: {age:.0f} s, {_state(f, now)}")
        return out


def _state(f: _Flight, now: float) -> str:
    if not f.requests:
        return "no first token yet"
    r, n = f.requests[-1], len(f.requests)
    if r.ended is not None:
        what = f"request {n} answered after {r.ended - r.started:.0f} s, no request in flight"
    elif r.first_token is None:
        what = "no first token yet"
    else:
        what = f"first token after {r.first_token - r.started:.0f} s, decoding"
    if n == 1:
        return what
    before = f.requests[-2]
    took = f"request {n - 1} took {(before.ended or r.started) - before.started:.0f} s"
    if r.ended is not None:
        return f"{what} ({took})"
    return f"request {n} for {now - r.started:.0f} s, {what} ({took})"


B = TypeVar("B")


class _Watched:
    """The backend a row's pipeline is given: every `complete` is marked in `flights` as one of
    the row's requests (a proxy, not a Backend of its own: everything else is the wrapped one's)."""

    def __init__(self, backend: Any, flights: InFlight, i: int) -> None:
        self._backend, self._flights, self._i = backend, flights, i

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        self._flights.request(self._i)
        try:
            return await self._backend.complete(*args, **kwargs)
        finally:
            self._flights.request_done(self._i)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def watched(backend: B, flights: InFlight, i: int) -> B:
    """`backend`, with row `i`'s requests marked in `flights` as they start and end."""
    return cast(B, _Watched(backend, flights, i))


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
    the first request (given the planned (example, the pipeline's Plan, role) triples) and heartbeats."""

    say: Callable[[str], None] | None = None
    interval_s: float = 30.0
    estimate: Callable[[Sequence[tuple[Any, Plan, Role]]], None] | None = None

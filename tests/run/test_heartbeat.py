"""A row's heartbeat names the request in flight (issue 26 item 7): Self-Route's long-context
fallback, still prefilling, is not "decoding" on the strength of the RAG step's first token.

The row is driven through `watched` (the proxy the runner gives each pipeline); below it, a
scripted backend stands in for the server: its first token arrives when the test says so."""

from __future__ import annotations

import asyncio
from typing import Any

from compare.run.heartbeat import InFlight, watched


class _Scripted:
    """Below the thing under test: a backend whose requests end when the test releases them."""

    model = "scripted"

    def __init__(self, flights: InFlight, i: int) -> None:
        self.flights, self.i = flights, i
        self.go: list[asyncio.Event] = []

    async def complete(self, messages: Any, *, max_tokens: int) -> str:
        gate = asyncio.Event()
        self.go.append(gate)
        await gate.wait()
        return "answer"

    async def tokenize(self, text: str) -> int:
        return len(text.split())


async def test_a_fallback_still_prefilling_is_not_called_decoding() -> None:
    now = [0.0]
    flights = InFlight(total=18, clock=lambda: now[0])
    flights.start(2, "self_route needle-8000-050")
    raw = _Scripted(flights, 2)
    backend = watched(raw, flights, 2)
    assert backend.model == "scripted" and await backend.tokenize("two words") == 2  # the rest passes through

    async def router_row() -> None:  # Self-Route: RAG asked first, then the whole document
        await backend.complete([{"role": "user", "content": "rag"}], max_tokens=8)
        await backend.complete([{"role": "user", "content": "long"}], max_tokens=8)

    row = asyncio.create_task(router_row())
    await asyncio.sleep(0)
    now[0] = 2.0
    flights.first_token(2)  # the RAG step's first token (the client's hook)
    now[0] = 4.0
    raw.go[0].set()  # the RAG step ends ("unanswerable"): the fallback starts
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(raw.go) == 2
    now[0] = 152.0
    [line] = flights.lines(30.0)
    assert line == ("[3/18] self_route needle-8000-050: 152 s, request 2 for 148 s, no first token yet "
                    "(request 1 took 4 s)")
    now[0] = 160.0
    flights.first_token(2)  # now the fallback decodes
    now[0] = 190.0
    assert flights.lines(30.0)[0].endswith("request 2 for 186 s, first token after 156 s, decoding "
                                           "(request 1 took 4 s)")
    raw.go[1].set()
    await row


def test_a_single_request_row_reads_as_before() -> None:
    now = [0.0]
    flights = InFlight(total=2, clock=lambda: now[0])
    flights.start(0, "long_context d1")
    flights.request(0)
    now[0] = 12.0
    flights.first_token(0)
    now[0] = 60.0
    assert flights.lines(30.0) == ["[1/2] long_context d1: 60 s, first token after 12 s, decoding"]

"""What a run's start costs behind a gateway (issue 27 items 3 and 4): the probe chat can be
turned off (`[server] probe_chat = false`: its answers are then unknown, said once), and a
/health that takes a gateway's upstream round trip is given up after a few seconds, recorded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from typer.testing import CliRunner

from compare.core.endpoints import Endpoint
from compare.run.spec import validate_spec
from compare.serving import capabilities as capability
from compare.serving.client import HttpBackend
from main import app

EVERYTHING = {"api_url": "http://h/v1", "tokenize": True, "metrics": True, "health": True, "version": True,
              "tokenizer": "server /tokenize", "tokenizer_approximate": False}


def test_without_the_probe_chat_its_answers_are_unknown_and_said_once() -> None:
    caps = {**EVERYTHING, **capability.UNPROBED}
    line = capability.fallback_line(caps)  # said even on a full vLLM: something is not known
    assert line is not None and line.count("probe_chat = false") == 1, line
    assert "cache_salt not sent" in line and "which reports none" not in line, line
    src = capability.sources(caps)
    assert src["cache_isolation"] == "none (probe chat off: cache_salt not sent)"
    assert src["cached_tokens"].endswith("(not probed)") and src["prompt_tokens"] == "each response's usage"
    probed = {**EVERYTHING, "probe_chat": True, "cache_salt": True, "stream_usage": True,
              "cached_tokens_reported": True}
    assert capability.fallback_line(probed) is None
    assert capability.sources(probed)["cache_isolation"] == "cache_salt"


def test_probe_chat_is_a_server_knob_that_keeps_run_ids() -> None:
    base = {"corpus": {"kind": "needle", "lengths": [200]}, "pipelines": [{"kind": "long_context"}]}
    on = validate_spec(base)
    off = validate_spec({**base, "server": {"probe_chat": False}})
    assert on.server.probe_chat is True and off.server.probe_chat is False
    assert on.run_id() == off.run_id()  # where, not what: a resumed run keeps its id either way
    assert off.model_dump(mode="json")["server"]["probe_chat"] is False  # but recorded with the run


def test_replicas_probe_chats_are_summed_and_an_unknown_count_stays_unknown() -> None:
    one = {"requests": 1, "prompt_tokens": 14, "output_tokens": 2, "cached_tokens": 0}
    two = {"requests": 2, "prompt_tokens": 15, "output_tokens": 2, "cached_tokens": None}
    assert capability.total_usage([one, two]) == {"requests": 3, "prompt_tokens": 29, "output_tokens": 4,
                                                  "cached_tokens": None}


async def _slow_health(release: asyncio.Event) -> asyncio.Server:
    """A gateway whose /health asks its upstreams first (LiteLLM's took 37-53 s on this CPU): it
    answers 200 only when `release` is set (10 s at most); any other path is a 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.read(65536)
        if head.startswith(b"GET /health "):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 10)  # under the old 30 s, over the new 5 s
            body = b'{"status": "ok"}'
            status = b"200 OK"
        else:
            body, status = b'{"error": "not found"}', b"404 Not Found"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_slow_health_is_given_up_after_its_recorded_timeout() -> None:
    """Fails before the fix: every route waited up to 30 s, so this /health was awaited 10 s and
    taken as vLLM's liveness, and each run's start behind LiteLLM waited the full 30 s."""
    release = asyncio.Event()
    server = await _slow_health(release)
    port = server.sockets[0].getsockname()[1]
    try:
        endpoint = Endpoint(f"http://127.0.0.1:{port}")  # the root: asked once
        async with HttpBackend(endpoint, "m") as backend:
            t0 = time.monotonic()
            url, tried, _ = await capability.find_route(backend._http, endpoint, "health", "m")
            took = time.monotonic() - t0
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    wait = capability.PROBE_TIMEOUTS_S["health"]
    assert url is None and took < wait + 3, (url, took)
    assert tried == [f"http://127.0.0.1:{port}/health: ReadTimeout after {wait:g} s"], tried


def test_the_judge_takes_header_values_from_the_environment_only(tmp_path: Path) -> None:
    """A secret-looking literal on the command line (shell history, `ps`) is refused before any
    database is opened or request sent, without echoing it; a malformed --header is one line."""
    base = ["judge", "--db", str(tmp_path / "none.duckdb"), "--base-url", "http://127.0.0.1:9/v1"]
    literal = CliRunner().invoke(app, [*base, "--header", "X-Team-Token=team-secret-8e41"])
    assert literal.exit_code == 2 and "secret-looking" in literal.output, literal.output
    assert "team-secret-8e41" not in literal.output and "${VAR}" in literal.output
    bare = CliRunner().invoke(app, [*base, "--header", "X-Team-Token"])
    assert bare.exit_code == 2 and "NAME=${VAR}" in bare.output, bare.output
    from_env = CliRunner().invoke(app, [*base, "--header", "X-Team-Token=${GW_TEAM}"])
    assert from_env.exit_code == 2 and "no database at" in from_env.output, from_env.output  # got past it

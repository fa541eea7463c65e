"""Pin the timing rules: a scripted SSE byte stream from a loopback server (below the client)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from compare.backend import (
    Backend,
    EmptyStreamError,
    StreamChunk,
    collect_stream,
    metric_deltas,
    parse_metrics,
)

DELAYS = (0.30, 0.05, 0.10, 0.05)  # before each token chunk
TOKENS = ("The", " answer", " is", " 42")


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    body = {
        "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content} if content is not None else {},
                     "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _usage(prompt: int, cached: int, out: int) -> bytes:
    body = {
        "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
                  "prompt_tokens_details": {"cached_tokens": cached}},
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class _Scripted(BaseHTTPRequestHandler):
    script: str = "normal"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(_chunk(None))  # role-only chunk: carries no token, must not start TTFT
        self.wfile.flush()
        if self.script == "normal":
            for delay, tok in zip(DELAYS, TOKENS, strict=True):
                time.sleep(delay)
                self.wfile.write(_chunk(tok))
                self.wfile.flush()
            self.wfile.write(_chunk("", "stop"))
            self.wfile.write(_usage(120, 96, len(TOKENS)))
        else:
            self.wfile.write(_chunk("", "length"))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("H", (_Scripted,), {})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()


async def test_stream_timing_follows_vllm_rules(scripted: tuple[str, type[_Scripted]]) -> None:
    url, _ = scripted
    async with Backend(url, "m") as b:
        c = await b.complete([{"role": "user", "content": "q"}], max_tokens=8)
    assert c.text == "The answer is 42"
    assert (c.prompt_tokens, c.cached_tokens, c.output_tokens) == (120, 96, 4)
    assert c.finish_reason == "stop"
    assert c.ttft_s >= DELAYS[0] * 0.9
    assert len(c.itl_s) == len(TOKENS) - 1
    assert c.e2e_s - c.ttft_s == pytest.approx(sum(c.itl_s), abs=1e-9)
    assert c.itl_s[1] >= DELAYS[2] * 0.8  # gaps land on the right chunks
    assert c.tpot_s == pytest.approx((c.e2e_s - c.ttft_s) / 3)


async def test_stream_without_token_is_a_failure(scripted: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted
    handler.script = "empty"
    async with Backend(url, "m") as b:
        with pytest.raises(EmptyStreamError):
            await b.complete([{"role": "user", "content": "q"}], max_tokens=8)


def test_collect_stream_pure() -> None:
    chunks = [
        (1.0, StreamChunk("")),
        (1.5, StreamChunk("a")),
        (1.7, StreamChunk("b")),
        (2.0, StreamChunk("c", finish_reason="stop")),
        (2.1, StreamChunk("", prompt_tokens=10, cached_tokens=None, output_tokens=3)),
    ]
    c = collect_stream(1.0, chunks)
    assert c.ttft_s == pytest.approx(0.5)
    assert c.e2e_s == pytest.approx(1.0)  # ends at the last token chunk, not the usage chunk
    assert c.itl_s == pytest.approx((0.2, 0.3))
    assert c.cached_tokens is None
    single = collect_stream(0.0, [(0.4, StreamChunk("x"))])
    assert single.tpot_s is None and single.output_tokens == 1


def test_parse_metrics_sums_labels_and_strips_total() -> None:
    text = """# HELP vllm:prefix_cache_hits_total hits
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 96.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 4.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 120.0
# TYPE vllm:prompt_tokens_by_source_total counter
vllm:prompt_tokens_by_source_total{engine="0",source="local_compute"} 20.0
vllm:prompt_tokens_by_source_total{engine="0",source="local_cache_hit"} 100.0
# TYPE vllm:request_prefill_time_seconds histogram
vllm:request_prefill_time_seconds_sum{engine="0",model_name="m"} 1.5
vllm:request_prefill_time_seconds_count{engine="0",model_name="m"} 2.0
"""
    m = parse_metrics(text)
    assert m["vllm:prefix_cache_hits"] == 100.0
    assert m["vllm:prompt_tokens"] == 120.0
    assert m["vllm:request_prefill_time_seconds_sum"] == 1.5
    assert "vllm:request_prefill_time_seconds_count" not in m
    assert m["vllm:prompt_tokens_by_source:local_cache_hit"] == 100.0
    assert m["vllm:prompt_tokens_by_source:local_compute"] == 20.0
    assert metric_deltas({"a": 1.0}, {"a": 3.0, "b": 2.0}) == {"a": 2.0, "b": 2.0}

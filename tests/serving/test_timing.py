"""Pin the timing rules: a scripted SSE byte stream from a loopback server (below the client)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from compare.core.errors import BackendError, EmptyStreamError, MissingUsageError, TruncatedStreamError
from compare.core.types import Document, Example
from compare.serving.client import HttpBackend, StreamChunk, collect_stream
from compare.serving.prometheus import metric_deltas, parse_metrics
from tests.fixtures.sse_server import send_json, serve, sse_chunk, sse_usage

DELAYS = (0.30, 0.05, 0.10, 0.05)  # before each token chunk
TOKENS = ("The", " answer", " is", " 42")


class _Scripted(BaseHTTPRequestHandler):
    script: str = "normal"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/tokenize":  # a pipeline measures its prompt before it streams
            send_json(self, {"count": 12, "max_model_len": 4096})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(sse_chunk(None))  # role-only chunk: carries no token, must not start TTFT
        self.wfile.flush()
        if self.script == "normal":
            for delay, tok in zip(DELAYS, TOKENS, strict=True):
                time.sleep(delay)
                self.wfile.write(sse_chunk(tok))
                self.wfile.flush()
            self.wfile.write(sse_chunk("", "stop"))
            self.wfile.write(sse_usage(120, 96, len(TOKENS)))
        elif self.script == "cut":  # two tokens, then the connection closes: no finish, no [DONE]
            for tok in TOKENS[:2]:
                self.wfile.write(sse_chunk(tok))
            self.wfile.flush()
            return
        elif self.script == "no_usage":  # a complete answer, but the server sends no usage chunk
            for tok in TOKENS:
                self.wfile.write(sse_chunk(tok))
            self.wfile.write(sse_chunk("", "stop"))
        else:
            self.wfile.write(sse_chunk("", "length"))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("H", (_Scripted,), {})
    with serve(handler) as url:
        yield url, handler


async def test_stream_timing_follows_vllm_rules(scripted: tuple[str, type[_Scripted]]) -> None:
    url, _ = scripted
    async with HttpBackend(url, "m") as b:
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
    async with HttpBackend(url, "m") as b:
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
    single = collect_stream(0.0, [(0.4, StreamChunk("x", finish_reason="length")),
                                  (0.5, StreamChunk("", prompt_tokens=5, cached_tokens=0, output_tokens=1))])
    assert single.tpot_s is None and single.output_tokens == 1


# stream hygiene (issue 14, item 9) ----------------------------------------------------------------
USAGE = StreamChunk("", prompt_tokens=10, cached_tokens=0, output_tokens=2)


def test_a_stream_cut_before_its_finish_reason_is_a_failure() -> None:
    cut = [(1.0, StreamChunk("The")), (1.2, StreamChunk(" answer")), (1.3, USAGE)]
    with pytest.raises(TruncatedStreamError, match="without a finish reason"):
        collect_stream(0.0, cut)
    done = collect_stream(0.0, [*cut[:2], (1.25, StreamChunk("", finish_reason="stop")), (1.3, USAGE)])
    assert done.text == "The answer" and done.finish_reason == "stop"


def test_a_stream_without_usage_is_never_priced() -> None:
    chunks = [(1.0, StreamChunk("The")), (1.2, StreamChunk(" answer", finish_reason="stop"))]
    with pytest.raises(MissingUsageError, match="usage"):
        collect_stream(0.0, chunks)
    assert issubclass(MissingUsageError, BackendError) and issubclass(TruncatedStreamError, BackendError)


async def test_scripted_cut_and_usage_less_streams_fail(scripted: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted
    async with HttpBackend(url, "m") as b:
        handler.script = "cut"
        with pytest.raises(TruncatedStreamError):
            await b.complete([{"role": "user", "content": "q"}], max_tokens=8)
        handler.script = "no_usage"
        with pytest.raises(MissingUsageError):
            await b.complete([{"role": "user", "content": "q"}], max_tokens=8)


async def test_a_cut_stream_becomes_an_error_row(scripted: tuple[str, type[_Scripted]]) -> None:
    """Through a real pipeline: the failure is a row with its error, not a half answer."""
    from pipelines.long_context import LongContextPipeline

    url, handler = scripted
    handler.script = "cut"
    async with HttpBackend(url, "m") as b:
        pipe = LongContextPipeline()
        await pipe.prepare({"d": Document("d", "The answer is 42.")}, b)
        pred = await pipe.answer(Example("e", ("d",), "q?", ("42",)), b)
    assert not pred.ok and pred.completion is None and "finish reason" in str(pred.error)


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


def test_replica_deltas_are_summed_per_replica_and_a_dead_one_charges_nobody() -> None:
    """Over replicas each name's delta is the sum of the replicas' own deltas; a replica that is
    gone at the end has none, and its history is not charged to the others (subtracting sums
    gave 12 - 110 = -98 here)."""
    before = {"p": 110.0, "replica0/p": 10.0, "replica1/p": 100.0}
    after = {"p": 12.0, "replica0/p": 12.0}  # replica1 did not answer the last scrape
    assert metric_deltas(before, after) == {"p": 2.0, "replica0/p": 2.0}
    both = {"p": 117.0, "replica0/p": 12.0, "replica1/p": 105.0}
    assert metric_deltas(before, both) == {"p": 7.0, "replica0/p": 2.0, "replica1/p": 5.0}

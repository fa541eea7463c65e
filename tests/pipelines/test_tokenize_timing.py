"""One rule for /tokenize time (issue #14, item 10): token counting is outside the measured time
of every pipeline, recorded in the params of the one pipeline whose measurement it changed.

Below the pipelines sits a loopback server (the real HttpBackend talks to it over HTTP) whose
/tokenize takes DELAY_S per call and whose chat completion streams one token at once; the RAG
pipeline above it is real (MiniLM, FAISS, the budget fill). Before the fix, RAG's budget mode
counted its /tokenize round trips as retrieval time (retrieval_s >= calls * DELAY_S) while long
context counted its own outside TTFT.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from compare.core.types import Document, Example
from compare.serving.client import HttpBackend
from pipelines.long_context import LongContextPipeline
from pipelines.rag import RagPipeline
from pipelines.routers import SelfRoutePipeline
from tests.fixtures.sse_server import send_json, serve, sse_chunk, sse_usage

DELAY_S = 0.5  # per /tokenize call: far above a question's embedding + search (~15 ms here)
SENTENCES = [f"Fact number {i} says that the colour of box {i} is shade {i * 7 % 13}." for i in range(60)]
DOC = Document("d1", " ".join(SENTENCES))
EX = Example("q1", ("d1",), "What is the colour of box 42?", ("shade 8",))


class _Server(BaseHTTPRequestHandler):
    tokenize_calls = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/tokenize":
            type(self).tokenize_calls += 1
            time.sleep(DELAY_S)
            text = body.get("prompt") or json.dumps(body.get("messages"))
            send_json(self, {"count": len(str(text).split()), "max_model_len": 100_000})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        body = sse_chunk("shade") + sse_chunk(" 8", "stop") + sse_usage(120, 0, 2)
        self.wfile.write(body + b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Server]]]:
    handler = type("H", (_Server,), {"tokenize_calls": 0})
    with serve(handler) as url:
        yield url, handler


def _rag(tmp_path: Path) -> RagPipeline:
    rag = RagPipeline(chunk_size=40, chunk_overlap=0, budget_tokens=60, cache_dir=tmp_path)
    rag.build({"d1": DOC})
    return rag


def test_the_rule_is_recorded_where_it_changed_the_measurement(tmp_path: Path) -> None:
    budget = RagPipeline(budget_tokens=60, cache_dir=tmp_path)
    router = SelfRoutePipeline(budget, LongContextPipeline()).params()
    assert budget.params()["tokenize_in_latency"] is False
    assert router["rag"]["tokenize_in_latency"] is False  # type: ignore[index]
    # top-k RAG and long context never counted inside a measured time: their params (and so the
    # resume key of their stored rows) are unchanged
    assert "tokenize_in_latency" not in RagPipeline(cache_dir=tmp_path).params()
    assert "tokenize_in_latency" not in LongContextPipeline().params()


async def test_rag_budget_counting_is_outside_retrieval_time(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    url, handler = server
    rag = _rag(tmp_path)
    async with HttpBackend(url, "m", timeout_s=30) as backend:
        pred = await rag.answer(EX, backend)
    assert pred.ok and pred.answer == "shade 8"
    calls = handler.tokenize_calls
    # The budget fill asks the server at least twice (doubling, then the first prefix over the
    # budget): >= 2 * 0.5 s of counting, none of which may be in retrieval time.
    assert calls >= 2
    assert pred.retrieval_s < DELAY_S, (pred.retrieval_s, calls)
    assert pred.completion is not None and pred.completion.e2e_s < DELAY_S


async def test_router_rag_step_and_long_context_follow_the_same_rule(
    server: tuple[str, type[_Server]], tmp_path: Path
) -> None:
    url, handler = server
    router = SelfRoutePipeline(_rag(tmp_path), LongContextPipeline())
    lc = LongContextPipeline()
    await lc.prepare({"d1": DOC}, None)  # type: ignore[arg-type]  # prepare only keeps the documents
    async with HttpBackend(url, "m", timeout_s=30) as backend:
        routed = await router.answer(EX, backend)
        before = handler.tokenize_calls
        long = await lc.answer(EX, backend)
    assert routed.ok and routed.route == "rag" and routed.retrieval_s < DELAY_S
    # long context counted the document, the window and the prompt (>= 2 calls, >= 1 s) and
    # none of it is in its measured time (it has no retrieval; E2E is the request's own)
    assert handler.tokenize_calls - before >= 2
    assert long.ok and long.retrieval_s == 0.0
    assert long.completion is not None and long.completion.e2e_s < DELAY_S

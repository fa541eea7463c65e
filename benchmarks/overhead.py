"""(a) What ragvslc adds on top of the engine: the long-context pipeline vs a bare `openai` call.

Both send the same messages with the same sampling (temperature 0, seed 0, same max_tokens) and
stream the answer, as any harness that measures time to first token must. The pipeline also
tokenizes with the server (the exact context length it records, the overflow check) and the
runner scores and stores every row: that is the overhead measured here. The document is
prefilled once before timing, so both sides see a warm cache and the comparison is not
swamped by a cold prefill. Calls alternate A B B A so drift in the machine's load hits both;
the same question is asked each time (after one untimed call per side) so both find the same
cache and generate the same answer.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from benchmarks.common import Row, median, ratio_row
from compare.core.types import Corpus, Document, Example
from compare.run.runner import run
from compare.serving import weights as models
from compare.serving.client import HttpBackend
from compare.store.db import Store
from corpora.needle import book_text, prefix_with_tokens
from pipelines.long_context import LongContextPipeline
from pipelines.prompts import build_messages

QUESTIONS = (
    "Who is the bishop of the town?", "What did the bishop give away?", "Where does the story begin?",
    "How old was the bishop?", "Who lived with the bishop?", "What was the bishop's name?",
    "What did the townspeople call him?", "Which city is named first?", "Who is Madame Magloire?",
    "What does the bishop do each morning?", "What was his salary?", "Who is his sister?",
)


async def _bare(client: openai.AsyncOpenAI, messages: list[dict[str, str]], max_tokens: int) -> float:
    """The baseline: one streamed chat completion, nothing else."""
    t0 = time.perf_counter()
    stream = await client.chat.completions.create(  # type: ignore[call-overload]
        model=models.DEFAULT_MODEL, messages=messages, max_tokens=max_tokens, temperature=0.0,
        seed=0, stream=True, stream_options={"include_usage": True},
    )
    async for _ in stream:
        pass
    return time.perf_counter() - t0


class _EngineClock:
    """Sums the time spent inside HttpBackend.complete (the engine call, streamed to the end), so
    the time outside it, which is ours, can be measured in the same calls despite load noise."""

    def __init__(self, backend: HttpBackend) -> None:
        self.total = 0.0
        inner = backend.complete

        async def complete(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - t0

        backend.complete = complete  # type: ignore[method-assign]


async def _measure(base_url: str, doc_tokens: int, repeats: int, rows_n: int) -> list[Row]:
    async with HttpBackend(base_url, models.DEFAULT_MODEL) as backend:
        text = await prefix_with_tokens(
            book_text("les_miserables", "BOOK FIRST—A JUST MAN", None), doc_tokens, backend.tokenize
        )
        doc = Document("bench-doc", text)
        pipe = LongContextPipeline(max_tokens=16)
        await pipe.prepare({doc.id: doc}, backend)
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0)
        clock = _EngineClock(backend)
        # One question, asked once untimed by each side: then every timed call finds the same
        # cached prefix and generates the same answer, so only the overhead differs.
        q = QUESTIONS[0]
        ex = Example("q", (doc.id,), q, ("x",))
        msgs = build_messages(text, q)
        await pipe.answer(ex, backend)
        await _bare(client, msgs, 16)
        pipe_s: list[float] = []
        bare_s: list[float] = []
        outside: list[float] = []  # pipeline time not spent in the engine call
        for i in range(repeats):
            for side in ("AB" if i % 2 == 0 else "BA"):
                if side == "A":
                    engine0 = clock.total
                    t0 = time.perf_counter()
                    pred = await pipe.answer(ex, backend)
                    pipe_s.append(time.perf_counter() - t0)
                    outside.append(pipe_s[-1] - (clock.total - engine0))
                    assert pred.ok, pred.error
                else:
                    bare_s.append(await _bare(client, msgs, 16))

        # The runner around it: store writes, scores, tokenization, for rows_n questions.
        exs = [Example(f"r{i}", (doc.id,), QUESTIONS[i % len(QUESTIONS)] + f" ({i})", ("x",))
               for i in range(rows_n)]
        for e in exs:  # every prompt once, untimed, so both sides run warm
            await _bare(client, build_messages(text, e.question), 16)
        corpus = Corpus("bench", {doc.id: doc}, exs)
        runner_s: list[float] = []
        runner_out: list[float] = []
        loop_s: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(2):
                for side in ("AB" if rep % 2 == 0 else "BA"):
                    if side == "A":
                        with Store(Path(tmp) / f"o{rep}.duckdb") as store:
                            engine0 = clock.total
                            t0 = time.perf_counter()
                            res = await run(
                                run_id=f"overhead-{rep}", corpus=corpus, pipelines=[pipe],
                                backend=backend, store=store, metric_names=["contains", "exact_match"],
                                run_meta=_meta(base_url),
                            )
                            runner_s.append(time.perf_counter() - t0)
                            runner_out.append(runner_s[-1] - (clock.total - engine0))
                            assert res.done == rows_n and res.errors == 0
                    else:
                        t0 = time.perf_counter()
                        for e in exs:
                            await _bare(client, build_messages(text, e.question), 16)
                        loop_s.append(time.perf_counter() - t0)
        await client.close()

    pairs = sorted(p / b for p, b in zip(pipe_s, bare_s, strict=True))
    req = median(bare_s)
    per_row = median(runner_out) / rows_n
    details = {"doc_tokens": doc_tokens, "repeats": repeats, "pipeline_s": _r(pipe_s), "bare_s": _r(bare_s),
               "median_pair_ratio": round(median(pairs), 4), "outside_engine_s": _r(outside)}
    return [
        ratio_row("a_overhead", "LC pipeline request (warm), A/B", "bare openai stream", req,
                  median(pipe_s), "s (median)", higher_is_better=False, goal=1.05, goal_text="<= 1.05x",
                  details=details),
        ratio_row("a_overhead", "LC pipeline: engine call + time outside it", "bare openai stream", req,
                  req + median(outside), "s (median)", higher_is_better=False, goal=1.05,
                  goal_text="<= 1.05x", details={"outside_engine_ms": round(median(outside) * 1e3, 1)}),
        ratio_row("a_overhead", f"runner per row ({rows_n} rows stored+scored)", "bare openai stream",
                  req, req + per_row, "s", higher_is_better=False, goal=1.05, goal_text="<= 1.05x",
                  details={"runner_s": _r(runner_s), "loop_s": _r(loop_s), "outside_engine_s": _r(runner_out),
                           "outside_engine_ms_per_row": round(per_row * 1e3, 1),
                           "wall_ratio_best_of_2": round(min(runner_s) / min(loop_s), 3)}),
    ]


def _meta(base_url: str) -> dict[str, Any]:
    return {"model": models.DEFAULT_MODEL, "base_url": base_url, "spec": {}, "corpus_params": {},
            "server": {"managed": False}}


def _r(xs: list[float]) -> list[float]:
    return [round(x, 4) for x in xs]


def bench_overhead(base_url: str, *, doc_tokens: int, repeats: int, rows: int) -> list[Row]:
    return asyncio.run(_measure(base_url, doc_tokens, repeats, rows))

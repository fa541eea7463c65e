"""(e) Where order matters: a KV cache that holds about one document, questions interleaved.

On a GPU serving long documents the KV cache holds a handful of them (a 128k-token prompt of
an 8B model is ~16 GB of KV), and a QA file is often not grouped by document. Then naive order
evicts each document before its next question and every question pays a cold prefill, while
the prefix schedule asks one document's questions back to back: one cold prefill each. This
benchmark reproduces that regime at CPU scale: a managed vLLM whose cache is capped at one
window (`--num-gpu-blocks-override`, passed through ServerConfig.extra_args) and documents
that fill most of it. Both arms start from an emptied cache and must give identical answers.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BLOCK,
    Row,
    bounded_server,
    cache_blocks,
    computed_tokens,
    reset_cache,
    server_work,
)
from compare.core.types import Corpus, Document, Example
from compare.run.runner import run
from compare.serving import weights as models
from compare.serving.client import HttpBackend
from compare.serving.schedule import Schedule
from compare.store.db import Store
from corpora.needle import book_text, prefix_with_tokens

WINDOW = 2048
QUESTIONS = ("Who is mentioned first?", "What place is described?", "What happens at the end?",
             "Which object is named?", "Who speaks?")


async def _corpus(backend: HttpBackend, docs: int, questions: int, doc_tokens: int) -> Corpus:
    book = book_text("les_miserables", "BOOK FIRST—A JUST MAN", None)
    documents: dict[str, Document] = {}
    for d in range(docs):
        text = await prefix_with_tokens(book[30_000 + d * 40_000 :], doc_tokens, backend.tokenize)
        documents[f"doc{d}"] = Document(f"doc{d}", text)
    # Interleaved, as a QA file sorted by question type would be: q0 of every doc, then q1...
    examples = [Example(f"doc{d}-q{q}", (f"doc{d}",), QUESTIONS[q % len(QUESTIONS)], ("x",))
                for q in range(questions) for d in range(docs)]
    return Corpus("bounded", documents, examples)


async def _arms(url: str, docs: int, questions: int, doc_tokens: int) -> list[dict[str, Any]]:
    out = []
    async with HttpBackend(url, models.DEFAULT_MODEL, timeout_s=1800) as backend:
        corpus = await _corpus(backend, docs, questions, doc_tokens)
        from pipelines.long_context import LongContextPipeline

        with tempfile.TemporaryDirectory() as tmp:
            for label, schedule in (("naive (interleaved) order", "given"), ("prefix schedule", "prefix")):
                sched: Schedule = "given" if schedule == "given" else "prefix"
                print(f"  (e) {label}: {len(corpus.examples)} questions on {docs} documents", flush=True)
                cold = reset_cache(url)
                with Store(Path(tmp) / f"{schedule}.duckdb") as store, server_work(url) as work:
                    t0 = time.perf_counter()
                    res = await run(
                        run_id=f"bounded-{schedule}", corpus=corpus, pipelines=[LongContextPipeline()],
                        backend=backend, store=store, metric_names=["contains"], schedule=sched,
                        run_meta={"model": models.DEFAULT_MODEL, "base_url": url, "spec": {},
                                  "corpus_params": {}, "server": {}},
                    )
                    wall = time.perf_counter() - t0
                    answers = dict(store.con.execute("SELECT example_id, answer FROM predictions").fetchall())
                out.append({"label": label, "wall_s": round(wall, 2), "errors": res.errors,
                            "cold_start": cold,
                            "prefilled_tokens": computed_tokens(work), "server": work, "answers": answers})
                print(f"      {wall:.1f}s, prefilled {computed_tokens(work):.0f} tokens", flush=True)
    return out


def bench_bounded(*, docs: int, questions: int, doc_tokens: int = 1700) -> tuple[list[Row], dict[str, Any]]:
    blocks = cache_blocks(WINDOW)
    with bounded_server(WINDOW) as url:
        arms = asyncio.run(_arms(url, docs, questions, doc_tokens))
    naive, sched = arms
    same = sum(sched["answers"].get(k) == v for k, v in naive["answers"].items())
    speedup = naive["wall_s"] / sched["wall_s"]
    details = {"docs": docs, "questions_per_doc": questions, "doc_tokens": doc_tokens,
               "cache_tokens": blocks * BLOCK, "identical_answers": f"{same}/{len(naive['answers'])}",
               "prefill_tokens": sched["prefilled_tokens"],
               "baseline_prefill_tokens": naive["prefilled_tokens"],
               "errors": [naive["errors"], sched["errors"]]}
    rows = [
        Row("e_bounded_cache", "prefix schedule: time (cache ~1 document)", naive["label"], naive["wall_s"],
            sched["wall_s"], "s", round(speedup, 3), ">= 1.8x faster, same answers",
            speedup >= 1.8 and same == len(naive["answers"]), details),
        Row("e_bounded_cache", "prefix schedule: prefilled tokens", naive["label"], naive["prefilled_tokens"],
            sched["prefilled_tokens"], "tokens",
            round(naive["prefilled_tokens"] / max(sched["prefilled_tokens"], 1), 3)),
    ]
    return rows, {"arms": arms, "cache_tokens": blocks * BLOCK}

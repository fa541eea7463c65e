"""(b) Throughput at concurrency 1, 2 and 4 on a real QA set (L-Eval TPO: lectures + questions).

What concurrency can buy on this machine is batching in the engine: vLLM decodes the requests
in flight together, so several short answers cost little more than one. It cannot make a cold
prefill faster (the CPU engine runs on one core), so the documents are prefilled once before
the arms and every arm measures the same warm questions through the real runner (prefix
schedule, rows stored in DuckDB). The arms run c=4, c=2, then the c=1 baseline: anything the
server keeps between arms (question blocks) then helps the baseline, never the ratio.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, computed_tokens, ratio_row, server_work
from compare.core.types import Corpus
from compare.run.runner import run
from compare.serving import weights as models
from compare.serving.client import HttpBackend
from compare.serving.schedule import Schedule
from compare.store.db import Store
from corpora.leval import load_leval
from pipelines.long_context import LongContextPipeline


async def _measure(base_url: str, docs: int, questions: int, levels: list[int]) -> list[dict[str, Any]]:
    corpus = load_leval("tpo", max_docs=docs, max_questions_per_doc=questions)
    out: list[dict[str, Any]] = []
    async with HttpBackend(base_url, models.DEFAULT_MODEL, timeout_s=1800) as backend:
        pipe = LongContextPipeline()
        await pipe.prepare(corpus.documents, backend)
        t0 = time.perf_counter()
        for ex in corpus.examples:  # every prompt once, untimed: all arms then find the same cache
            pred = await pipe.answer(ex, backend)
            assert pred.ok, pred.error
        warm_s = time.perf_counter() - t0
        arms: list[tuple[int, Schedule]] = [(c, "prefix") for c in sorted(levels, reverse=True)]
        arms.insert(0, (max(levels), "given"))
        with tempfile.TemporaryDirectory() as tmp:
            for c, sched in arms:
                print(f"  (b) concurrency {c} ({sched} order): {len(corpus.examples)} questions", flush=True)
                with Store(Path(tmp) / f"c{c}{sched}.duckdb") as store, server_work(base_url) as work:
                    t0 = time.perf_counter()
                    res = await run(
                        run_id=f"conc-{c}", corpus=Corpus(corpus.name, corpus.documents, corpus.examples),
                        pipelines=[pipe], backend=backend, store=store,
                        metric_names=["choice_accuracy"], concurrency=c, schedule=sched,
                        run_meta={"model": models.DEFAULT_MODEL, "base_url": base_url, "spec": {},
                                  "corpus_params": {}, "server": {}},
                    )
                    wall = time.perf_counter() - t0
                    acc = store.con.execute(
                        "SELECT avg(value) FROM scores WHERE metric = 'choice_accuracy'").fetchone()
                    toks = store.con.execute("SELECT sum(output_tokens) FROM predictions").fetchone()
                out.append({"concurrency": c, "schedule": sched, "wall_s": round(wall, 2),
                            "requests": res.done,
                            "errors": res.errors, "req_per_s": res.done / wall,
                            "output_tokens": toks[0] if toks else None,
                            "accuracy": acc[0] if acc else None, "warm_prefill_s": round(warm_s, 1),
                            "prefilled_tokens": computed_tokens(work), "server": work})
                print(f"      {wall:.1f}s, {res.done / wall:.3f} req/s", flush=True)
    return sorted(out, key=lambda r: (r["concurrency"], r["schedule"] != "prefix"))


def bench_concurrency(
    base_url: str, *, docs: int, questions: int, levels: list[int]
) -> tuple[list[Row], Any]:
    arms = asyncio.run(_measure(base_url, docs, questions, levels))
    base = arms[0]
    rows = [
        ratio_row("b_concurrency", f"throughput at concurrency {a['concurrency']}"
                  + (" (given order, no gating)" if a["schedule"] == "given" else ""), "concurrency 1",
                  base["req_per_s"], a["req_per_s"], "req/s", higher_is_better=True,
                  goal=1.5 if a["concurrency"] == 4 and a["schedule"] == "prefix" else None,
                  goal_text=">= 1.5x" if a["concurrency"] == 4 and a["schedule"] == "prefix" else "",
                  details={k: a[k] for k in ("wall_s", "requests", "errors", "accuracy", "output_tokens")})
        for a in arms[1:]
    ]
    return rows, {"arms": arms}

"""(d) A needle grid through the real runner: prefix-sharing schedule vs naive order.

Every arm starts from an emptied prefix cache (vLLM dev mode's /reset_prefix_cache) and runs
the same grid with the long-context pipeline at temperature 0 through `compare.run.runner.run`,
storing rows in a throwaway DuckDB file, so what is timed is what a user's run does. The
baseline is the issue's: the grid run serially in a naive order (shuffled). The prefill the
server really did comes from its /metrics (`prompt_tokens_by_source`), and answers must be
identical across arms.

What to expect, and why the arms are there: in a serial run whose cache holds the whole grid,
order cannot change the total prefill (every shared prefix is computed once, whoever comes
first); the schedule pays off when requests run concurrently (siblings otherwise prefill the
same haystack side by side) and when the cache holds only a few documents (d2).

The ceiling row bounds every arm: a cell shares with another only the haystack before the
shallower of their needles, so prompt tokens / fewest prefilled tokens is the most any order
can save. Measured: 1.36x for 2 lengths x 3 depths, 1.59x for 2 x 11 depths (cache ~1
document). The issue's goal of 1.8x over naive serial order lies above both ceilings; a grid
reaches it only with dense depths (the ceiling tends to 2x) and a naive order that reuses
nothing, which vLLM's automatic prefix cache does not allow: shuffled cells still share most
of their haystacks with the cell before them.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, bounded_server, computed_tokens, reset_cache, server_work
from compare.core.types import Corpus
from compare.run.runner import run
from compare.serving import weights as models
from compare.serving.client import HttpBackend
from compare.serving.schedule import Schedule
from compare.store.db import Store
from corpora.needle import build_needle_corpus
from pipelines.long_context import LongContextPipeline

BOUNDED_WINDOW = 2048
Arm = tuple[str, str, int]  # (label, order, concurrency); order: "shuffled" or "prefix"


async def _arm(
    base_url: str, corpus: Corpus, order: str, concurrency: int, db: Path, seed: int
) -> dict[str, Any]:
    examples = list(corpus.examples)
    schedule: Schedule = "prefix"
    if order == "shuffled":
        random.Random(seed).shuffle(examples)
        schedule = "given"
    elif order == "depth_desc":
        examples.sort(key=lambda e: (-float(e.tags["depth"]), float(e.tags["target_tokens"])))
        schedule = "given"
    grid = Corpus(corpus.name, corpus.documents, examples, corpus.params)
    cold = reset_cache(base_url)
    async with HttpBackend(base_url, models.DEFAULT_MODEL, timeout_s=1800) as backend:
        with Store(db) as store, server_work(base_url) as work:
            t0 = time.perf_counter()
            res = await run(
                run_id=f"grid-{order}-c{concurrency}", corpus=grid, pipelines=[LongContextPipeline()],
                backend=backend, store=store, metric_names=["contains"], concurrency=concurrency,
                schedule=schedule,
                run_meta={"model": models.DEFAULT_MODEL, "base_url": base_url, "spec": {},
                          "corpus_params": dict(corpus.params), "server": {}},
            )
            wall = time.perf_counter() - t0
            rows = store.con.execute(
                "SELECT example_id, answer, cached_tokens, prompt_tokens, ttft_ms FROM predictions "
                "WHERE run_id = ? ORDER BY seq", [res.run_id]).fetchall()
            found = store.con.execute(
                "SELECT avg(value) FROM scores WHERE run_id = ? AND metric = 'contains'", [res.run_id]
            ).fetchone()
    return {
        "order": order, "concurrency": concurrency, "cold_start": cold, "wall_s": round(wall, 2),
        "errors": res.errors, "requests": res.done, "computed_tokens": computed_tokens(work),
        "server": work, "answers": {r[0]: r[1] for r in rows}, "found": found[0] if found else None,
        "sequence": [r[0] for r in rows],
        "cached_tokens": sum(r[2] or 0 for r in rows), "prompt_tokens": sum(r[3] or 0 for r in rows),
    }


async def _grid(base_url: str, lengths: list[int], depths: list[float], arms: list[Arm],
                seed: int) -> tuple[list[dict[str, Any]], int]:
    async with HttpBackend(base_url, models.DEFAULT_MODEL) as backend:
        corpus = await build_needle_corpus(backend.tokenize, lengths=lengths, depths=depths, seed=seed)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, order, c in arms:
            print(f"  (d) {label}: {len(corpus.examples)} cells, order={order}, concurrency={c}", flush=True)
            r = await _arm(base_url, corpus, order, c, Path(tmp) / f"{label}.duckdb", seed)
            r["label"] = label
            print(f"      {r['wall_s']}s, prefilled {r['computed_tokens']:.0f} of "
                  f"{r['server'].get('vllm:prompt_tokens', 0):.0f} prompt tokens", flush=True)
            out.append(r)
    return out, len(corpus.examples)


def bench_needle_grid_bounded(*, lengths: list[int], depths: list[float], concurrency: int,
                              seed: int = 0) -> tuple[list[Row], dict[str, Any]]:
    """The same grid where the cache holds about one of its longest documents (a grid of 128k
    documents on a GPU): here the order decides how much of each haystack is still cached."""
    window = BOUNDED_WINDOW
    if max(lengths) > window - 400:
        raise ValueError(f"lengths must leave room for the question in a {window}-token window")
    with bounded_server(window) as url:
        return bench_needle_grid(url, lengths=lengths, depths=depths, concurrency=concurrency,
                                 seed=seed, bench="d_needle_grid_bounded", regime="cache ~1 document, ")


def bench_needle_grid(base_url: str, *, lengths: list[int], depths: list[float], concurrency: int,
                      seed: int = 0, serial_prefix: bool = True, bench: str = "d_needle_grid",
                      regime: str = "") -> tuple[list[Row], dict[str, Any]]:
    arms: list[Arm] = [("naive serial (shuffled)", "shuffled", 1)]
    if serial_prefix:
        arms.append(("prefix schedule, serial", "prefix", 1))
    if concurrency > 1:
        arms += [(f"naive, concurrency {concurrency}", "shuffled", concurrency),
                 (f"prefix schedule, concurrency {concurrency}", "prefix", concurrency)]
    results, n = asyncio.run(_grid(base_url, lengths, depths, arms, seed))
    base = results[0]
    rows: list[Row] = []
    for r in results[1:]:
        same = sum(r["answers"].get(k) == v for k, v in base["answers"].items())
        details = {
            "cells": n, "lengths": lengths, "depths": depths,
            "prefill_tokens": r["computed_tokens"], "baseline_prefill_tokens": base["computed_tokens"],
            "saved_prefill_vs_baseline": round(1 - r["computed_tokens"] / base["computed_tokens"], 3)
            if base["computed_tokens"] else None,
            "identical_answers": f"{same}/{len(base['answers'])}",
            # The most any order could save: prompt tokens / tokens a perfect cache must prefill.
            "prompt_tokens": r["server"].get("vllm:prompt_tokens"),
            "prefill_s_server": r["server"].get("vllm:request_prefill_time_seconds_sum"),
            "baseline_prefill_s_server": base["server"].get("vllm:request_prefill_time_seconds_sum"),
            "cold_start_both": bool(r["cold_start"] and base["cold_start"]),
        }
        rows.append(Row(
            bench, f"{regime}{r['label']}: grid time", base["label"], base["wall_s"], r["wall_s"], "s",
            round(base["wall_s"] / r["wall_s"], 3), ">= 1.8x faster, same answers",
            base["wall_s"] / r["wall_s"] >= 1.8 and same == len(base["answers"]), details,
        ))
        rows.append(Row(
            bench, f"{regime}{r['label']}: prefilled tokens", base["label"], base["computed_tokens"],
            r["computed_tokens"], "tokens", round(base["computed_tokens"] / max(r["computed_tokens"], 1), 3),
        ))
    # The ceiling of prefix reuse on this grid: prompt tokens over the fewest any arm prefilled.
    # One question per cell shares only the haystack before each needle, so however requests are
    # ordered, time can drop by about this factor at most (more only from batching).
    prompt = base["server"].get("vllm:prompt_tokens", 0.0)
    fewest = min(r["computed_tokens"] for r in results)
    rows.append(Row(
        bench, f"{regime}ceiling of prefix reuse (prompt / fewest prefilled tokens)", "no reuse",
        prompt, fewest, "tokens", round(prompt / max(fewest, 1), 3),
    ))
    return rows, {"arms": results, "prompt_tokens": prompt, "fewest_prefilled": fewest}

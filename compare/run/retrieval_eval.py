"""Retrieval alone (no LLM): evidence recall@k and MRR@k of RAG configurations on a corpus.

Answer quality mixes two failures, "the evidence was not retrieved" and "the model did not use
it"; scoring the retriever on its own separates them, costs no server time, and shows the k
(or token budget) at which a configuration reaches the evidence before any answer is asked for.
Scores come from span overlap with the examples' evidence (the same `evidence_recall` and
`evidence_mrr` metrics a full run stores), never from chunk ids, so configurations with
different chunkers are comparable.

For each configuration the ranking is computed once per example at the largest k; recall@k and
MRR@k are read from its first k entries (for flat indexes that is exactly the top-k search).
Budget rows select as the pipeline would for a prompt, counting tokens with the embedder's
tokenizer unless a counter (e.g. a server's `/tokenize`) is given.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Sequence
from statistics import fmean
from typing import Any

from compare.core.metrics import evidence_mrr, evidence_recall
from compare.core.types import Corpus, Example, Prediction, Span, TokenCounter
from compare.run.runner import params_hash
from pipelines.rag import RagPipeline

Row = dict[str, Any]
COLUMNS = ("config", "k", "budget_tokens", "recall", "mrr", "n_examples", "mean_chunks",
           "mean_context_tokens", "build_s", "cache_hit", "query_ms")


def label(pipe: RagPipeline) -> str:
    """A short human name for a configuration: what distinguishes RAG variants in a sweep."""
    p = pipe.params()
    index = str(p["index"])
    extra = p["index_params"]
    if isinstance(extra, dict) and extra:
        index += "(" + ",".join(f"{k}={v}" for k, v in extra.items()) + ")"
    return f"{p['splitter']}-{p['chunk_size']}/{p['chunk_overlap']} {index} {p['scope']}"


def _scores(ex: Example, spans: Sequence[Span]) -> tuple[float, float]:
    """(recall, reciprocal rank); retrieving nothing scores 0 for an example with evidence."""
    pred = Prediction(answer="", completion=None, context_tokens=0, retrieved=tuple(spans))
    return evidence_recall(ex, pred) or 0.0, evidence_mrr(ex, pred) or 0.0


def _with_budget(pipe: RagPipeline, budget: int) -> RagPipeline:
    """The same pipeline (sharing its built indexes) selecting by a token budget."""
    clone = copy.copy(pipe)
    clone.budget_tokens = budget
    return clone


def _build_info(pipe: RagPipeline) -> Row:
    stats = list(pipe.index_stats.values())
    built = sorted({json.dumps(s["index"], sort_keys=True) for s in stats})
    return {
        "params_hash": params_hash(pipe.params()),
        "index": pipe.index.kind,
        "index_built": [json.loads(b) for b in built],
        "n_chunks": sum(int(s["n_chunks"]) for s in stats),
        "build_s": sum(float(s["build_s"]) for s in stats),
        "cache_hit": all(bool(s["cache_hit"]) for s in stats),
    }


async def evaluate_retrieval_async(
    corpus: Corpus,
    configs: Sequence[RagPipeline],
    ks: Sequence[int],
    *,
    budgets: Sequence[int] = (),
    count: TokenCounter | None = None,
) -> list[Row]:
    """One row per (configuration, k) and per (configuration, budget); see the module doc.

    A configuration that has its own `budget_tokens` also gets a row for that budget. Only
    examples with evidence spans are scored; `n_without_evidence` counts the others.
    """
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    scored = [ex for ex in corpus.examples if ex.evidence]
    skipped = len(corpus.examples) - len(scored)
    labels = [label(p) for p in configs]
    rows: list[Row] = []
    for pipe, name in zip(configs, labels, strict=True):
        if labels.count(name) > 1:  # variants differing only in knobs the label omits
            name = f"{name} #{params_hash(pipe.params())[:6]}"
        await asyncio.to_thread(pipe.build, corpus.documents)
        common = {"config": name, **_build_info(pipe), "n_examples": len(scored),
                  "n_without_evidence": skipped}
        ranked: list[list[Span]] = []
        query_s: list[float] = []
        for ex in scored:
            t0 = time.perf_counter()
            hits = await asyncio.to_thread(pipe.rank, ex.question, ex.doc_ids, ks[-1])
            query_s.append(time.perf_counter() - t0)
            ranked.append([c.span() for c, _ in hits])
        query_ms = 1000 * fmean(query_s) if query_s else None
        for k in ks:
            pairs = [_scores(ex, spans[:k]) for ex, spans in zip(scored, ranked, strict=True)]
            rows.append({**common, "k": k, "budget_tokens": None, **_means(pairs),
                         "mean_chunks": _mean([min(k, len(s)) for s in ranked]),
                         "mean_context_tokens": None, "counter": None, "query_ms": query_ms})
        own = [pipe.budget_tokens] if pipe.budget_tokens is not None else []
        for budget in sorted(set(budgets) | set(own)):
            rows.append({**common, **await _budget_row(_with_budget(pipe, budget), scored, count)})
    return rows


async def _budget_row(pipe: RagPipeline, scored: Sequence[Example], count: TokenCounter | None) -> Row:
    pairs, chunks, tokens, query_s = [], [], [], []
    counter = None
    for ex in scored:
        t0 = time.perf_counter()
        sel = await pipe.select(ex, count)
        query_s.append(time.perf_counter() - t0)
        pairs.append(_scores(ex, [c.span() for c in sel.ranked]))
        chunks.append(len(sel.ranked))
        tokens.append(sel.counted_tokens or 0)
        counter = sel.counter
    return {"k": None, "budget_tokens": pipe.budget_tokens, **_means(pairs),
            "mean_chunks": _mean(chunks), "mean_context_tokens": _mean(tokens),
            "max_context_tokens": max(tokens, default=None), "counter": counter,
            "query_ms": 1000 * fmean(query_s) if query_s else None}


def _mean(values: Sequence[float]) -> float | None:
    return fmean(values) if values else None


def _means(pairs: Sequence[tuple[float, float]]) -> Row:
    return {"recall": _mean([r for r, _ in pairs]), "mrr": _mean([m for _, m in pairs])}


def format_rows(rows: Sequence[Row]) -> str:
    """A plain fixed-width table of the rows (the CLI prints it; rich is not needed here)."""

    def cell(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    table = [list(COLUMNS)] + [[cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    def fmt(line: list[str]) -> str:
        cells = zip(line, widths, strict=True)
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(cells))

    return "\n".join(fmt(line) for line in table)

"""Measure how much of its document each question needs (issue 30 item 1), once per corpus.

Questions with evidence spans are measured from them (compare/analysis/strata.py: chunks touched
at the spec's RAG chunk size, with each document's own characters per token), at no cost.
Questions without spans get the retrieval probe: the spec's RAG configuration answers them with
top-k = each of `ks` in turn, the model really answering, and a question's context need is the
smallest k whose answer is correct (its own primary metric >= CORRECT_SCORE); correct at no k
tried: it needs the whole document. A question stops being asked once it is answered right, so
the probe costs about one request per question per k below its need.

The probe's requests are kept in `context_probe_requests` (kind 'context_probe', with their
tokens and times), never in `predictions`, so they cannot mix into a comparison; each
question's row in `context_need` carries their summed cost. Rows are keyed by the corpus's
content hash: every run of the same corpus reuses them, and a second probe with the same ks,
chunk size and model asks nothing again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compare.analysis.strata import Need, assign, evidence_spans, span_need
from compare.core.metrics import headline
from compare.core.types import Corpus, Example, Prediction
from compare.run.limits import answer_budget, with_answer_budget
from compare.run.runner import params_hash
from compare.run.spec import RagSpec, RunSpec
from compare.store.context_need import read_needs, write_needs, write_probe_requests
from compare.store.db import Store
from compare.store.rows import now

DEFAULT_KS = (1, 2, 4, 8)
CORRECT_SCORE = 0.5  # 0/1 metrics: right; graded ones (token F1): at least half right
PROBE_KIND = "context_probe"


@dataclass
class ProbeResult:
    """What one `context-need` command measured and what it cost."""

    corpus_key: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per question, as stored
    requests: int = 0  # probe requests sent by this command
    reused: int = 0  # questions whose measurement was already stored
    prompt_tokens: int = 0
    output_tokens: int = 0
    e2e_ms: float = 0.0


def smallest_correct(correct: Mapping[int, bool], ks: Sequence[int]) -> int | None:
    """The smallest k whose answer was right; None: right at no k tried (needs the whole)."""
    return next((k for k in sorted(ks) if correct.get(k)), None)


def is_correct(ex: Example, pred: Prediction) -> bool:
    score = headline(ex, pred)
    return score is not None and score >= CORRECT_SCORE


def rag_spec(spec: RunSpec) -> RagSpec:
    """The spec's first RAG configuration (a plain one if it has none), in top-k mode."""
    rag = next((p for p in spec.pipelines if isinstance(p, RagSpec)), RagSpec())
    return rag.model_copy(update={"budget_tokens": None}) if rag.budget_tokens is not None else rag


def span_rows(corpus: Corpus, key: str, chunk_tokens: int) -> dict[str, dict[str, Any]]:
    """Measured from spans, each document cut at its own characters per token (its doc_tokens tag)."""
    out: dict[str, dict[str, Any]] = {}
    for ex in corpus.examples:
        spans = evidence_spans(ex.tags, ex.evidence)
        if not spans:
            continue
        text = corpus.documents[ex.doc_ids[0]].text
        tokens = float(ex.tags.get("doc_tokens", 0) or 0)
        need = span_need(spans, chunk_tokens, len(text) / tokens if tokens > 0 else 4.0)
        out[ex.id] = _row(key, ex, need, None, chunk_tokens)
    return out


def _row(key: str, ex: Example, need: Need | None, ks: Sequence[int] | None, chunk_tokens: int,
         cost: Mapping[str, float] | None = None, model: str | None = None) -> dict[str, Any]:
    a = assign(ex.tags, need)
    cost = cost or {}
    return {"corpus_key": key, "example_id": ex.id, "source": need.source if need else "label",
            "context_need": float(need.places) if need and need.places is not None else None,
            "stratum": a.stratum, "spread_chars": need.spread_chars if need else None,
            "chunk_tokens": chunk_tokens, "ks": json.dumps(list(ks)) if ks else None,
            "requests": int(cost.get("requests", 0)), "prompt_tokens": int(cost.get("prompt_tokens", 0)),
            "output_tokens": int(cost.get("output_tokens", 0)), "e2e_ms": float(cost.get("e2e_ms", 0.0)),
            "model": model, "measured_at": now()}


async def probe(
    corpus: Corpus, rag: RagSpec, ks: Sequence[int], backend: Any, store: Store, *,
    model: str, concurrency: int = 1, say: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Spans where a question has them, else the retrieval probe (module docstring); stored."""
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be whole numbers >= 1, got {list(ks)}")
    key = corpus.content_sha256()
    result = ProbeResult(key)
    spans = span_rows(corpus, key, rag.chunk_size)
    stored = read_needs(store.con, key, "probe")
    same = json.dumps(ks)
    todo = [ex for ex in corpus.examples if ex.id not in spans and not (
        (s := stored.get(ex.id)) and s["ks"] == same and s["chunk_tokens"] == rag.chunk_size
        and s["model"] == model)]
    result.reused = len(corpus.examples) - len(spans) - len(todo)
    correct: dict[str, dict[int, bool]] = {ex.id: {} for ex in todo}
    cost: dict[str, dict[str, float]] = {ex.id: {} for ex in todo}
    budget = (await answer_budget(corpus.examples, backend.tokenize))["answer_tokens"] if todo else 0
    gate = asyncio.Semaphore(concurrency)
    remaining = list(todo)
    for k in ks:
        if not remaining:
            break
        pipe = _build(with_answer_budget(rag.model_copy(update={"top_k": k}), budget))
        phash = params_hash(pipe.params())
        if say:
            say(f"context-need probe: top_k = {k}, {len(remaining)} question(s)")
        await pipe.prepare({d: corpus.documents[d] for ex in remaining for d in ex.doc_ids}, backend)

        async def ask(ex: Example, pipe: Any = pipe) -> Prediction:
            async with gate:
                return await pipe.answer(ex, backend)

        preds = await asyncio.gather(*(ask(ex) for ex in remaining))
        rows = []
        for ex, pred in zip(remaining, preds, strict=True):
            ok = is_correct(ex, pred)
            correct[ex.id][k] = ok
            c = pred.completion
            spent = {"requests": 1, "prompt_tokens": c.prompt_tokens if c else 0,
                     "output_tokens": c.output_tokens if c else 0, "e2e_ms": c.e2e_s * 1e3 if c else 0.0}
            for name, v in spent.items():
                cost[ex.id][name] = cost[ex.id].get(name, 0) + v
            result.requests += 1
            result.prompt_tokens += int(spent["prompt_tokens"])
            result.output_tokens += int(spent["output_tokens"])
            result.e2e_ms += spent["e2e_ms"]
            rows.append({"corpus_key": key, "example_id": ex.id, "k": k, "kind": PROBE_KIND,
                         "params_hash": phash, "answer": pred.answer, "correct": float(ok),
                         "error": pred.error,
                         "context_tokens": pred.context_tokens,
                         "prompt_tokens": c.prompt_tokens if c else None,
                         "output_tokens": c.output_tokens if c else None,
                         "e2e_ms": c.e2e_s * 1e3 if c else None, "retrieval_ms": pred.retrieval_s * 1e3,
                         "measured_at": now()})
        write_probe_requests(store.con, rows)
        remaining = [ex for ex in remaining if not correct[ex.id][k]]
    probed = {ex.id: _row(key, ex, Need("probe", smallest_correct(correct[ex.id], ks),
                                        chunk_tokens=rag.chunk_size),
                          ks, rag.chunk_size, cost[ex.id], model) for ex in todo}
    write_needs(store.con, [*spans.values(), *probed.values()])
    fresh = {**spans, **probed}
    result.rows = [fresh.get(ex.id) or stored[ex.id] for ex in corpus.examples]
    return result


def _build(ps: Any) -> Any:
    from compare.run.execute import build_pipeline  # lazy: execute imports the serving stack

    return build_pipeline(ps)


async def measure(spec: RunSpec, db: Path, ks: Sequence[int], *, base_url: str | None = None,
                  data_dir: Path | None = None, say: Callable[[str], None] | None = None) -> ProbeResult:
    """`ragvslc context-need`: the spec's corpus and RAG configuration against its server (the
    spec's base_url, else a managed vLLM, as `run` does)."""
    from compare.run.execute import build_corpus, server_for
    from compare.serving.client import HttpBackend

    with server_for(spec, say or (lambda _: None), base_url) as (url, _, _servers):
        first = url if isinstance(url, str) else url[0]
        async with HttpBackend(first, spec.server.model, timeout_s=spec.timeout_s) as backend:
            corpus = await build_corpus(spec, backend, data_dir)
            with Store(db) as store:
                return await probe(corpus, rag_spec(spec), ks, backend, store, model=spec.server.model,
                                   concurrency=spec.concurrency, say=say)

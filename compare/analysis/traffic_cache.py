"""Cache survival at the user's traffic (issue 28 item 4, second half): how often a later question
about a document still finds that document in the deployment's KV cache, from the cache model.

compare/analysis/cache_model.py replays requests through vLLM's LRU over KV blocks. Here the
requests are the workload's, not a run's: `documents` documents (their sizes spread over the
workload's lengths by weight, interleaved so that popularity and size are independent), asked in
the order a Zipf popularity (or uniform) draws them, each prompt the document plus the measured
question tokens, each answer the measured output tokens. The cost function's rule for a later
question is `(1 - p) x later + p x cold` (compare/analysis/doc_costs.py, cache_terms.py): p here
is the share of the document's cacheable tokens (its full blocks, the last prompt token always
recomputed) that a later question does NOT find cached, token-weighted over the simulated later
questions. Counted in steady state only: the first half of the replay warms the cache up, and a
document's first question in the counted half is its cold one (the one-time term), not a later.

This is DERIVED, never measured: it assumes one request at a time (requests in flight pin their
blocks, so under queueing the real hit rate is lower; the load report shows both) and that a
router's fallbacks survive as long context's documents do (its RAG prompts take blocks too, so
that is optimistic for the router; said).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb

from compare.analysis import cache_model
from compare.analysis.cache_terms import CacheUse
from compare.store import views

WORK_BUDGET = 1_500_000  # block look-ups per replay: about a second or two in pure Python
MIN_REQUESTS, PER_DOCUMENT = 1_000, 20


@dataclass(frozen=True)
class Survival:
    """Of the later questions about some documents: the share of their cacheable document tokens
    they would find evicted (`miss`, the cost function's p), and how many were simulated (`n`)."""

    miss: float
    n: int

    @property
    def hit(self) -> float:
        return 1.0 - self.miss


@dataclass(frozen=True)
class TrafficCache:
    """The cache model at a workload's traffic: a survival per workload length and the basis."""

    by_length: dict[str, Survival]
    documents: int
    blocks: int
    block_size: int
    zipf: float | None
    requests: int

    def line(self) -> str:
        """The basis, said once: DERIVED, what was assumed, each length's hit share with its n."""
        pop = f"Zipf {self.zipf:g}" if self.zipf else "uniform"
        per = ", ".join(f"{k} tokens {s.hit:.2f} (n={s.n})" for k, s in self.by_length.items())
        return (f"cache survival (self-hosted view): DERIVED, not measured: LRU over {self.blocks:,} KV "
                f"blocks of {self.block_size} tokens (compare/analysis/cache_model.py), {self.documents:,} "
                f"documents, {pop} popularity, {self.requests:,} requests replayed one at a "
                f"time (second half counted); share of a later question's document found cached: {per}; "
                "long context's later questions pay cold for the rest (a router's fallbacks: the same "
                "share, optimistic)")


def sizes_by_length(lengths: Mapping[str, tuple[float, Sequence[int]]], documents: int
                    ) -> list[tuple[str, int]]:
    """`documents` (length key, tokens) pairs: each key its weight's share of the documents,
    interleaved (the next document goes to the key furthest below its share), and within a key
    its listed sizes in turn (a range's evenly spaced sizes)."""
    total = sum(w for w, _ in lengths.values())
    given = dict.fromkeys(lengths, 0)
    out: list[tuple[str, int]] = []
    for i in range(documents):
        order = list(lengths)
        key = max(order, key=lambda k: (lengths[k][0] / total * (i + 1) - given[k], -order.index(k)))
        sizes = lengths[key][1]
        out.append((key, int(sizes[given[key] % len(sizes)])))
        given[key] += 1
    return out


def survival(
    docs: Sequence[tuple[str, int]], blocks: int, block_size: int, zipf: float | None,
    question_tokens: int = 32, output_tokens: int = 32, questions_per_doc: int = 1, seed: int = 0,
) -> tuple[dict[str, Survival], int]:
    """Replay the documents' traffic (list order = popularity rank) and return each group's
    survival (by the pair's first element) and the requests replayed."""
    if not docs:
        raise ValueError("the cache model needs at least one document")
    mean_blocks = max(1, sum(t for _, t in docs) // len(docs) // block_size)
    requests = min(max(MIN_REQUESTS, PER_DOCUMENT * len(docs)), max(200, WORK_BUDGET // mean_blocks))
    names = {f"d{i}": (group, tokens) for i, (group, tokens) in enumerate(docs)}
    wl = cache_model.Workload({n: t for n, (_, t) in names.items()}, zipf or 0.0, questions_per_doc,
                              question_tokens, output_tokens, requests, seed)
    reqs = cache_model.workload_requests(wl)
    pred = cache_model.predict(reqs, blocks, block_size)
    seen: set[str] = set()
    lost: dict[str, float] = {}
    possible: dict[str, float] = {}
    count: dict[str, int] = {}
    for i, (r, hit) in enumerate(zip(reqs, pred.per_request, strict=True)):
        later = r.doc in seen
        seen.add(r.doc)
        if i < len(reqs) // 2 or not later:
            continue
        group = names[r.doc][0]
        cacheable = min(r.shared_tokens, r.prompt_tokens - 1) // block_size * block_size
        possible[group] = possible.get(group, 0.0) + cacheable
        lost[group] = lost.get(group, 0.0) + cacheable - min(hit, cacheable)
        count[group] = count.get(group, 0) + 1
    groups = dict.fromkeys(g for g, _ in docs)
    return {g: Survival(lost[g] / possible[g] if possible.get(g) else 1.0, count.get(g, 0))
            for g in groups}, requests


def at_workload(
    lengths: Mapping[str, tuple[float, Sequence[int]]], documents: int, kv_cache_tokens: int,
    block_size: int, zipf: float | None, question_tokens: int, output_tokens: int, questions_per_doc: int = 1,
) -> TrafficCache:
    """The cache model over a workload's documents: `lengths` maps each workload length key to
    (its weight, the document sizes that stand for it)."""
    blocks = kv_cache_tokens // block_size
    by, requests = survival(sizes_by_length(lengths, documents), blocks, block_size, zipf,
                            question_tokens, output_tokens, questions_per_doc)
    return TrafficCache(by, documents, blocks, block_size, zipf, requests)


@dataclass(frozen=True)
class KvCache:
    """`ragvslc cost --kv-cache-tokens`: the deployment's KV cache and the traffic over the runs'
    own documents (`documents`: how many share it, sizes taken in turn; None: the runs' own)."""

    tokens: int
    block_size: int = cache_model.CPU_BLOCK_SIZE
    zipf: float | None = None
    documents: int | None = None

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.block_size < 1 or (self.documents is not None and self.documents < 1):
            raise ValueError("the KV cache, its block size and the document count must be >= 1")
        if self.zipf is not None and not 0 <= self.zipf <= 10:
            raise ValueError(f"a Zipf exponent must be in [0, 10], got {self.zipf}")


_LC_DOCS = """
SELECT max(p.context_tokens) AS doc, avg(p.prompt_tokens - p.context_tokens) AS question,
    avg(coalesce(p.output_tokens, 0)) AS output
FROM request_rows p JOIN example_rows e USING (run_id, example_id)
WHERE list_contains($runs, p.run_id) AND p.role = 'long_context' AND p.error IS NULL
    AND p.context_tokens > 0 AND p.prompt_tokens IS NOT NULL
GROUP BY p.run_id, e.doc_ids ORDER BY p.run_id, e.doc_ids
"""


def over_runs(con: duckdb.DuckDBPyConnection, runs: Sequence[str], kv: KvCache, use: CacheUse) -> CacheUse:
    """`use` with the cache model's p over the runs' documents (their long-context sizes, in run
    order as popularity rank; the questions' and answers' mean tokens as measured): one p for
    every document, with its basis in words."""
    views.install(con)
    rows = con.execute(_LC_DOCS, {"runs": list(runs)}).fetchall()
    if not rows:
        raise ValueError("--kv-cache-tokens: no long-context request in the selected runs to size "
                         "documents by")
    count = kv.documents or len(rows)
    docs = [("the runs' documents", int(rows[i % len(rows)][0])) for i in range(count)]
    question = max(1, round(sum(float(r[1]) for r in rows) / len(rows)))
    output = max(1, round(sum(float(r[2]) for r in rows) / len(rows)))
    blocks = kv.tokens // kv.block_size
    by, requests = survival(docs, blocks, kv.block_size, kv.zipf, question, output)
    model = TrafficCache(by, count, blocks, kv.block_size, kv.zipf, requests)
    (s,) = by.values()
    return CacheUse(use.queries_per_doc_per_hour, use.hold_hours, s.miss, model.line())

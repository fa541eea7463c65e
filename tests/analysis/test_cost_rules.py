"""Issue #14's cost rules, against values worked out by hand, on a real DuckDB filled through
the real Store API (the cost model sits above the runner, so the rows are chosen).

Every run: document context 1000 tokens, long-context prompt 1050, RAG prompt 330, 10 output
tokens, API sheet $1 fresh / $0.10 cached / $4 output per 1M, local CPU $0.36/h = $1e-4/s,
self-hosted $3.60/h = $1e-3/s. So, per request:
  long context from nothing   1050*1 + 10*4            = 1090e-6
  long context, document cached 50*1 + 1000*0.1 + 40   =  190e-6
  long context, 500 cached     550*1 + 500*0.1 + 40    =  640e-6
  RAG                          330*1 + 40              =  370e-6, + retrieval 0.05 s * 1e-4 = 5e-6
  RAG index 0.2 s per document                         =   20e-6 once

Runs:
  "order"     the issue's worked example: d1 asked 3 times; the first found 500 tokens cached
              from a sibling (TTFT 1.1 s), then two warm (1000 cached, TTFT 0.2 s); E2E = TTFT
              + 1 s. RAG 3 times (TTFT 0.5, E2E 1.5). /metrics: prefill 1.5 s over a summed
              client TTFT of 1.5 + 1.5 = 3.0 s -> k_prefill 0.5; decode 3 s over 6 s -> k_decode 0.5.
  "order-rev" the same long-context rows, the 500-cached one asked last (the first warm).
  "evict"     d2: from nothing, warm, then from nothing again (evicted and re-prefilled).
  "route"     d1: Self-Route (answered by RAG; fallback with both steps; fallback failed after
              its RAG step), long context (cold, warm, context overflow: nothing sent) and RAG.
  "fallback"  issue 24 item 5: d1 x3, a Self-Route that always falls back (RAG step 330, then its
              long-context step: from nothing, then twice warm), long context (cold, warm, warm),
              both with a 0.2 s index for Self-Route.
  "overflow"  item 6: d1 and d2 x3; long context cold/warm/warm on d1 and overflows on every d2
              question (nothing sent); RAG on both, d2's RAG prompts 630 tokens (670e-6).
  "conc1", "conc4"  item 7: the "order" run's rows (d1: cold, warm, warm long context; RAG x3)
              at concurrency 1 and 4, uncalibrated.
  "oracle"    item 8: d1 x3, long context cold/warm/warm (all right), RAG right on q1 only.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from compare.analysis import prices, summary
from compare.analysis.cache_terms import CacheUse
from compare.analysis.cost import CacheWrite, PriceSheet, Tier, break_even, cost_report, cost_table
from compare.analysis.prices import ChosenSheet, sheet_json
from compare.analysis.recommend import recommend
from compare.analysis.workload import Workload
from compare.core.types import Completion, Example, Prediction, Step
from compare.report import data as dashboard
from compare.store.db import Store
from tests.fixtures.cost import API, LC, LC_LABEL, RAG, RAG_LABEL, SHEET, SR, Pipe
from tests.fixtures.store import store_fixtures

# A long-prompt tier just above one long-context prompt (1050) but below it plus a RAG try (1380).
TIER = Tier(above_prompt_tokens=1200, input_usd_per_mtok=2.0, cached_input_usd_per_mtok=0.2,
            output_usd_per_mtok=8.0)
TIERED = SHEET.model_copy(update={"api": API.model_copy(update={"tiers": [TIER]})})
# Everything a sheet can charge, for the "one cost function" test: tier, cache storage, both views.
FULL = SHEET.model_copy(update={"api": API.model_copy(update={
    "tiers": [TIER], "cache_storage_usd_per_mtok_hour": 1.0, "cache_hold_hours": 2.0})})


def _done(prompt: int, cached: int, ttft: float, e2e: float) -> Completion:
    return Completion("answer", prompt, cached, 10, ttft, e2e, ())


def _ok(prompt: int, cached: int, ttft: float, ctx: int = 1000, retr: float = 0.0) -> Prediction:
    return Prediction("answer", _done(prompt, cached, ttft, ttft + 1.0), ctx, retrieval_s=retr)


def _rag() -> Prediction:
    return _ok(330, 0, 0.5, ctx=300, retr=0.05)


class _Run:
    def __init__(self, s: Store, run: str, docs: list[str], n: int = 3, concurrency: int = 1) -> None:
        self.s, self.run, self.seq = s, run, 0
        s.start_run(run, corpus="needle", model="tiny", base_url=None, concurrency=concurrency, spec={},
                    corpus_params={}, server={})
        exs = [Example(f"{d}-q{i}", (d,), f"question {i}?", ("answer",))
               for d in docs for i in range(1, n + 1)]
        s.add_examples(run, exs, dict.fromkeys(docs, 1000))

    def add(self, ex: str, pipe: Pipe, pred: Prediction, score: float | None = 1.0) -> None:
        name, h, params = pipe
        self.s.add_prediction(self.run, ex, name, h, params, pred, seq=self.seq, resumed=False,
                              started_at=datetime(2026, 1, 1), scores={"contains": score})
        self.seq += 1

    def index(self, pipe: Pipe, docs: list[str]) -> None:
        self.s.add_index_stats(self.run, pipe[0], pipe[1], {
            d: {"build_s": 0.2, "n_chunks": 5, "bytes": 100, "cache_hit": False} for d in docs})


def _fill(db: Path) -> None:
    with Store(db) as s:
        for run, cached in (("order", (500, 1000, 1000)), ("order-rev", (1000, 1000, 500))):
            r = _Run(s, run, ["d1"])
            for i, c in enumerate(cached, 1):
                r.add(f"d1-q{i}", LC, _ok(1050, c, 1.1 if c == 500 else 0.2))
                r.add(f"d1-q{i}", RAG, _rag())
            r.index(RAG, ["d1"])
            s.add_server_stats(run, {"vllm:request_prefill_time_seconds_sum": 1.5,
                                     "vllm:request_decode_time_seconds_sum": 3.0})
            s.finish_run(run, "done")

        r = _Run(s, "evict", ["d2"])
        for i, c in enumerate((0, 1000, 0), 1):
            r.add(f"d2-q{i}", LC, _ok(1050, c, 2.0 if c == 0 else 0.2))
        s.finish_run("evict", "done")

        r = _Run(s, "route", ["d1"])
        rag_step = Step("rag", _done(330, 0, 0.5, 1.5), 300)
        lc_step = Step("long_context", _done(1050, 1000, 0.2, 1.2), 1000)
        both = Completion("answer", 1380, 1000, 20, 1.5 + 0.2, 1.5 + 1.2, ())  # hybrid.combine's sums
        r.add("d1-q1", SR, Prediction("answer", _done(330, 0, 0.5, 1.5), 300, retrieval_s=0.05, route="rag"))
        r.add("d1-q2", SR, Prediction("answer", both, 1300, retrieval_s=0.05, route="long_context",
                                      steps=(rag_step, lc_step)))
        r.add("d1-q3", SR, Prediction("", None, 0, retrieval_s=0.05, route="long_context",
                                      error="BackendError: APITimeoutError", steps=(rag_step,)), None)
        r.add("d1-q1", LC, _ok(1050, 0, 2.0))
        r.add("d1-q2", LC, _ok(1050, 1000, 0.2))
        r.add("d1-q3", LC, Prediction("", None, 1000, error="context_overflow: prompt is 5000 tokens"),
              None)
        for i in (1, 2, 3):
            r.add(f"d1-q{i}", RAG, _rag(), float(i != 2))
        r.index(SR, ["d1"])
        r.index(RAG, ["d1"])
        s.finish_run("route", "done")
        _fill_issue_24(s)


def _fill_issue_24(s: Store) -> None:
    r = _Run(s, "fallback", ["d1"])
    for i, c in enumerate((0, 1000, 1000), 1):
        rag_step = Step("rag", _done(330, 0, 0.5, 1.5), 300)
        lc_step = Step("long_context", _done(1050, c, 2.0 if c == 0 else 0.2, 3.0 if c == 0 else 1.2), 1000)
        lc_done = lc_step.completion
        both = Completion("answer", 1380, c, 20, 0.5 + lc_done.ttft_s, 1.5 + lc_done.e2e_s, ())
        r.add(f"d1-q{i}", SR, Prediction("answer", both, 1300, retrieval_s=0.05, route="long_context",
                                         steps=(rag_step, lc_step)))
        r.add(f"d1-q{i}", LC, _ok(1050, c, 2.0 if c == 0 else 0.2))
    r.index(SR, ["d1"])
    s.finish_run("fallback", "done")

    r = _Run(s, "overflow", ["d1", "d2"])
    for i, c in enumerate((0, 1000, 1000), 1):
        r.add(f"d1-q{i}", LC, _ok(1050, c, 2.0 if c == 0 else 0.2))
        r.add(f"d1-q{i}", RAG, _rag())
        overflow = Prediction("", None, 5000, error="context_overflow: prompt is 5050 tokens")
        r.add(f"d2-q{i}", LC, overflow, None)
        r.add(f"d2-q{i}", RAG, _ok(630, 0, 0.5, ctx=600, retr=0.05))
    r.index(RAG, ["d1", "d2"])
    s.finish_run("overflow", "done")

    for run, conc in (("conc1", 1), ("conc4", 4)):
        r = _Run(s, run, ["d1"], concurrency=conc)
        for i, c in enumerate((0, 1000, 1000), 1):
            r.add(f"d1-q{i}", LC, _ok(1050, c, 2.0 if c == 0 else 0.2))
            r.add(f"d1-q{i}", RAG, _rag())
        r.index(RAG, ["d1"])
        s.finish_run(run, "done")

    r = _Run(s, "oracle", ["d1"])
    for i, c in enumerate((0, 1000, 1000), 1):
        r.add(f"d1-q{i}", LC, _ok(1050, c, 2.0 if c == 0 else 0.2))
        r.add(f"d1-q{i}", RAG, _rag(), float(i == 1))
    s.finish_run("oracle", "done")


db, con = store_fixtures(_fill, "cost-rules")


def _rows(con: duckdb.DuckDBPyConnection, run: str, sheet: PriceSheet = SHEET,
          qs: tuple[int, ...] = (1, 10)) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["label"], r["view"]): r for r in cost_table(con, [run], sheet, qs)}


# 1. cold means the document's own first prefill ---------------------------------------------
def test_worked_example_one_time_is_the_prefill_from_nothing(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, "order")
    lc, rag = rows[(LC_LABEL, "api")], rows[(RAG_LABEL, "api")]
    # one-time = from nothing - document cached = 1090e-6 - 190e-6, whatever the first request found
    assert lc["one_time_usd_per_doc"] == pytest.approx(900e-6)
    assert lc["marginal_usd_per_query"] == pytest.approx(190e-6)  # the two later, warm requests
    assert rag["one_time_usd_per_doc"] == pytest.approx(20e-6)
    assert rag["marginal_usd_per_query"] == pytest.approx(375e-6)
    # q* = (900 - 20) / (375 - 190) = 880 / 185 = 4.757 (today's code: 430 / 185 = 2.32)
    (pair,) = [p for p in break_even(cost_table(con, ["order"], SHEET, (1, 10))) if p["view"] == "api"]
    assert pair["break_even_q"] == pytest.approx(880 / 185)
    # what this run really paid, beside the model: (640 + 190 + 190) / 3 per question
    assert lc["run_paid_usd_per_query"] == pytest.approx(340e-6)
    assert "cold cost DERIVED for 1/1 docs" in lc["caveats"]


def test_worked_example_self_hosted(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, "order")
    lc, rag = rows[(LC_LABEL, "self_hosted")], rows[(RAG_LABEL, "self_hosted")]
    # first request: prefill 1.1 * 0.5 = 0.55 s for its 550 computed tokens (0.001 s/token), decode
    # 1.0 * 0.5 = 0.5 s; from nothing = 0.55 + 500 * 0.001 + 0.5 = 1.55 s. Warm: 0.2*0.5 + 0.5 = 0.6 s.
    assert lc["one_time_usd_per_doc"] == pytest.approx((1.55 - 0.6) * 1e-3)
    assert lc["marginal_usd_per_query"] == pytest.approx(0.6e-3)
    # RAG: 0.5*0.5 + 0.5 + 0.05 retrieval = 0.8 s per query, index 0.2 s once
    assert rag["marginal_usd_per_query"] == pytest.approx(0.8e-3)
    assert rag["one_time_usd_per_doc"] == pytest.approx(0.2e-3)


def test_the_first_question_costs_cold_whatever_the_run_order(con: duckdb.DuckDBPyConnection) -> None:
    first, last = _rows(con, "order")[(LC_LABEL, "api")], _rows(con, "order-rev")[(LC_LABEL, "api")]
    assert first["usd_per_query_q1"] == last["usd_per_query_q1"] == pytest.approx(1090e-6)
    assert first["one_time_usd_per_doc"] == pytest.approx(900e-6)
    # asked last, the 500-cached request is a partial re-prefill: marginal (190 + 640) / 2, and
    # one-time = cold - later = 1090 - 415 (issue 24 item 4; was cold - warm = 900, so q = 1 cost 1315)
    assert last["marginal_usd_per_query"] == pytest.approx(415e-6)
    assert last["one_time_usd_per_doc"] == pytest.approx(675e-6)


def test_a_re_prefill_after_eviction_raises_the_marginal_not_the_one_time(
    con: duckdb.DuckDBPyConnection,
) -> None:
    lc = _rows(con, "evict")[(LC_LABEL, "api")]
    # the requests after the first: warm 190e-6 and re-prefilled 1090e-6 -> later 640e-6
    assert lc["marginal_usd_per_query"] == pytest.approx((190e-6 + 1090e-6) / 2)
    # issue 24 item 4: one-time = cold - later = 1090 - 640 (was cold - warm = 900e-6, so one
    # question cost 1540e-6 > the cold request's 1090e-6, and q = 3 940e-6 where the run paid 790e-6)
    assert lc["one_time_usd_per_doc"] == pytest.approx(450e-6)
    assert _rows(con, "evict", qs=(1, 3))[(LC_LABEL, "api")]["usd_per_query_q1"] == pytest.approx(1090e-6)
    at3 = _rows(con, "evict", qs=(3,))[(LC_LABEL, "api")]
    assert at3["usd_per_query_q3"] == pytest.approx(790e-6) == at3["run_paid_usd_per_query"]
    assert (lc["cold"], lc["warm"]) == (2, 1)


# 3. failed rows are not free; 4. each router step at its own tier ------------------------------
def test_router_steps_priced_apart_and_a_failed_fallback_pays_its_rag_step(
    con: duckdb.DuckDBPyConnection,
) -> None:
    sr = _rows(con, "route", TIERED)[("self_route", "api")]
    # q1 RAG 370e-6; q2 RAG step 370e-6 + long-context step 50 + 1000*0.1 + 40 = 190e-6, each below
    # the tier (the summed 1380-token prompt is above it: 380*2 + 1000*0.2 + 20*8 = 1120e-6 today);
    # q3 failed after its RAG step: 370e-6 spent. Mean (370 + 560 + 370) / 3, + retrieval 5e-6.
    assert sr["marginal_usd_per_query"] == pytest.approx((370 + 560 + 370) / 3 * 1e-6 + 5e-6)
    # issue 24 item 5: per step, the marginal is the RAG try 370e-6 + 1/3 x the fallback's later
    # (its warm step, 190e-6): the same 438.3e-6 + 5e-6. The one-time carries the fallback's cold
    # (derived: the step found the document cached; 1090 - 190 = 900e-6) beside the 20e-6 index,
    # paid on a document with probability 1 - (2/3)^q: q = 1 costs 370 + 1090/3 + 20 + 5.
    assert sr["one_time_usd_per_doc"] == pytest.approx(920e-6)
    assert sr["usd_per_query_q1"] == pytest.approx((370 + 1090 / 3 + 20 + 5) * 1e-6)
    assert sr["usd_per_query_q10"] == pytest.approx(
        (370 + 190 / 3 + 5) * 1e-6 + (920e-6 - 900e-6 * (2 / 3) ** 10) / 10)
    assert (sr["n"], sr["failed"], sr["unpriced"]) == (3, 1, 0)
    assert "1 failed requests priced at what they spent before failing" in sr["caveats"]
    # uncalibrated self-hosted: busy per request 1.5 / 1.5 + 1.2 / 1.5 s, + 0.05 s retrieval
    hosted = _rows(con, "route", TIERED)[("self_route", "self_hosted")]
    assert hosted["marginal_usd_per_query"] == pytest.approx(((1.5 + 2.7 + 1.5) / 3 + 0.05) * 1e-3)


def test_a_failed_request_without_usage_is_counted_and_said(con: duckdb.DuckDBPyConnection) -> None:
    lc = _rows(con, "route")[(LC_LABEL, "api")]
    assert (lc["n"], lc["failed"], lc["unpriced"]) == (2, 1, 1)
    assert lc["one_time_usd_per_doc"] == pytest.approx(900e-6)
    assert "1 requests with no usage reported" in lc["caveats"]


def test_summary_shows_asked_answered_and_failed_scores_zero(con: duckdb.DuckDBPyConnection) -> None:
    rows = {r["label"]: r for r in summary.pipeline_summary(con, ["route"])}
    sr, lc, rag = rows["self_route"], rows[LC_LABEL], rows[RAG_LABEL]
    assert (sr["asked"], sr["answered"]) == (3, 2) and (rag["asked"], rag["answered"]) == (3, 3)
    # headline: the failed question scores 0 over all three asked: (1 + 1 + 0) / 3
    assert sr["contains"] == pytest.approx(2 / 3) and lc["contains"] == pytest.approx(2 / 3)
    assert rag["contains"] == pytest.approx(2 / 3)
    answered = {r["label"]: r for r in summary.pipeline_summary(con, ["route"], answered_only=True)}
    assert answered["self_route"]["contains"] == pytest.approx(1.0)  # the named second view


# 2. one cost function ------------------------------------------------------------------------
def _workload(sheet: Path | None, q: int) -> Workload:
    return Workload.model_validate({
        "documents": {"tokens": [1000]}, "questions_per_doc": q, "requests_per_s": 0.001,
        "latency": {"metric": "ttft", "p95_ms": 1e9}, "quality_floor": 0.0, "price_sheet": sheet,
        "quality_metric": "contains",
    })


@pytest.mark.parametrize("run", ["order", "order-rev", "evict", "route"])
def test_cost_report_and_recommend_give_the_same_dollars(db: Path, tmp_path: Path, run: str) -> None:
    path = tmp_path / "full.toml"
    path.write_text(_toml(FULL))
    qs = (1, 2, 3, 10, 100)
    cli = {(r["label"], r["view"]): r for r in cost_report(db, [run], path, qs)}
    with duckdb.connect(str(db), read_only=True) as c:
        data = dashboard.cost_data(c, [run], ChosenSheet(prices.load_price_sheet(path), "test"), qs)
    assert data is not None
    page = {(r["label"], r["view"]): r for r in data.table}
    assert set(cli) == set(page) and len(cli) > 1
    for view in ("api", "self_hosted"):
        for q in qs:
            rec = {r["strategy"]: r for r in recommend(db, _workload(path, q), [run], view=view).rows}
            for (label, v), row in cli.items():
                if v != view:
                    continue
                want = row[f"usd_per_query_q{q}"]
                assert dashboard.usd_at(page[(label, v)], q) == pytest.approx(want, rel=1e-9, abs=0)
                got = rec[label]["usd_per_1k"] / 1000
                assert got == pytest.approx(want, rel=1e-9, abs=0), (label, view, q)


def test_recommend_without_a_sheet_prices_like_the_report(db: Path) -> None:
    with duckdb.connect(str(db), read_only=True) as c:
        chosen = prices.choose_sheet(c, ["order"])  # none stored: the shipped example
        table = {r["label"]: r for r in cost_table(c, ["order"], chosen.sheet, (10,)) if r["view"] == "api"}
    rec = {r["strategy"]: r for r in recommend(db, _workload(None, 10), ["order"]).rows}
    for label, row in table.items():
        assert rec[label]["usd_per_1k"] / 1000 == pytest.approx(row["usd_per_query_q10"], rel=1e-9)


def _toml(sheet: PriceSheet) -> str:
    """The sheet as a TOML file (via its canonical JSON: every field written out)."""
    import json

    data = json.loads(sheet_json(sheet))

    def section(name: str, body: dict[str, Any]) -> str:
        lines = [f"[{name}]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in body.items()
                  if not isinstance(v, list) and v is not None]
        for tier in body.get("tiers", []):
            lines += [f"[[{name}.tiers]]", *(f"{k} = {json.dumps(v)}" for k, v in tier.items())]
        return "\n".join(lines)

    head = "\n".join(f"{k} = {json.dumps(data[k])}" for k in ("name", "source", "note"))
    api, hosted = section("api", data["api"]), section("self_hosted", data["self_hosted"])
    return f"{head}\ndate = {data['date']}\n{api}\n{hosted}\n"


# issue #15: a cache-writing sheet (5-min write at 1.25x, storage) keeps the three in agreement,
# with no rate (cost and the report) and with the workload's rate (cost_table told the same).
WRITING = FULL.model_copy(update={"api": FULL.api.model_copy(update={  # type: ignore[union-attr]
    "cache_writes": [CacheWrite(ttl_minutes=5, input_multiplier=1.25)], "cache_ttl_minutes": 5.0})})


@pytest.mark.parametrize("run", ["order", "order-rev", "evict", "route"])
def test_a_cache_writing_sheet_gives_the_same_dollars_everywhere(db: Path, tmp_path: Path, run: str) -> None:
    path = tmp_path / "writing.toml"
    path.write_text(_toml(WRITING) + "[[api.cache_writes]]\nttl_minutes = 5\ninput_multiplier = 1.25\n")
    sheet, qs, use = prices.load_price_sheet(path), (1, 3, 10), CacheUse(queries_per_doc_per_hour=2.0)
    assert sheet == WRITING
    cli = {r["label"]: r for r in cost_report(db, [run], path, qs) if r["view"] == "api"}
    with duckdb.connect(str(db), read_only=True) as c:
        data = dashboard.cost_data(c, [run], ChosenSheet(sheet, "test"), qs)
        told = {r["label"]: r for r in cost_table(c, [run], sheet, qs, use) if r["view"] == "api"}
    assert data is not None
    page = {r["label"]: r for r in data.table if r["view"] == "api"}
    for q in qs:
        plain = {r["strategy"]: r for r in recommend(db, _workload(path, q), [run], view="api").rows}
        rated_wl = _workload(path, q).model_copy(update={"queries_per_doc_per_hour": 2.0})
        rated = {r["strategy"]: r for r in recommend(db, rated_wl, [run], view="api").rows}
        for label, row in cli.items():
            want = row[f"usd_per_query_q{q}"]
            assert dashboard.usd_at(page[label], q) == pytest.approx(want, rel=1e-9, abs=0)
            assert plain[label]["usd_per_1k"] / 1000 == pytest.approx(want, rel=1e-9, abs=0)
            got = rated[label]["usd_per_1k"] / 1000
            assert got == pytest.approx(told[label][f"usd_per_query_q{q}"], rel=1e-9, abs=0), (label, q)

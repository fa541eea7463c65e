"""Cost model against hand-computed numbers, on a real DuckDB filled through the real Store API.

The cost model sits above the runner, so the fixture writes chosen tokens and timings: every
expected dollar below is worked out by hand in the comment beside it.

Run "run-lc-rag", concurrency 1, two documents x three questions, asked of both pipelines:
  long_context  prompt 1050 (context 1000), 10 output tokens
                first question cold: cached 0,   TTFT 2.0 s, E2E 3.0 s
                later ones warm:     cached 992, TTFT 0.2 s, E2E 1.2 s
  rag           prompt 330 (context 300), cached 0, 10 output, TTFT 0.5 s, E2E 1.5 s,
                retrieval 0.05 s; index build 0.2 s per document
  one more long_context request fails (excluded).
Server stats (two sessions): prefill 5.0 + 2.02 = 7.02 s over a summed TTFT of
  2*(2.0+0.2+0.2) + 6*0.5 = 7.8 s -> k_prefill 0.9; decode 4 + 2 = 6 s over 12 s -> k_decode 0.5.
Sheet: API $1 / $0.10 / $4 per 1M (input / cached / output), local CPU $0.36/h = $1e-4/s;
  self-hosted $3.60/h = $1e-3/s (index at the same rate).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from compare.analysis import cost
from compare.analysis.cost import (
    ApiPrices,
    PriceSheet,
    PriceSheetError,
    Tier,
    api_cost,
    break_even,
    cost_columns,
    cost_curve_frame,
    cost_report,
    cost_table,
    load_price_sheet,
    sheet_json,
)
from compare.core.types import Completion, Example, Prediction
from compare.store.db import Store
from tests.fixtures.cost import API, LC, LC_LABEL, RAG, RAG_LABEL, SHEET, SR, Pipe
from tests.fixtures.store import store_fixtures

PRICES = Path(__file__).resolve().parents[2] / "prices"
RUN, RUN1 = "run-lc-rag", "run-one-question"
LC2 = ("long_context", "h-lc2", {"kind": "long_context", "truncation": "error", "max_tokens": 64})


def _pred(prompt: int, cached: int | None, ctx: int, ttft: float, e2e: float, retr: float = 0) -> Prediction:
    """A successful request with 10 output tokens."""
    done = Completion("answer", prompt, cached, 10, ttft, e2e, ())
    return Prediction("answer", done, ctx, retrieval_s=retr)


def _start(s: Store, run: str, examples: list[Example], concurrency: int = 1) -> None:
    s.start_run(run, corpus="test", model="tiny", base_url=None, concurrency=concurrency, spec={},
                corpus_params={}, server={})
    s.add_examples(run, examples)


def _add(s: Store, run: str, ex: str, pipe: Pipe, pred: Prediction, seq: int) -> None:
    name, h, params = pipe
    s.add_prediction(run, ex, name, h, params, pred, seq=seq, resumed=False,
                     started_at=datetime(2026, 1, 1), scores={})


def _fill(db: Path) -> None:
    with Store(db) as s:
        exs = [Example(f"{d}-q{i}", (d,), f"question {i}?", ("a",)) for d in ("d1", "d2") for i in (1, 2, 3)]
        _start(s, RUN, [*exs, Example("d2-q4", ("d2",), "question 4?", ("a",))])
        seq = 0
        for ex in exs:
            cold = ex.id.endswith("q1")
            lc = _pred(1050, 0, 1000, 2.0, 3.0) if cold else _pred(1050, 992, 1000, 0.2, 1.2)
            _add(s, RUN, ex.id, LC, lc, seq)
            _add(s, RUN, ex.id, RAG, _pred(330, 0, 300, 0.5, 1.5, retr=0.05), seq + 1)
            seq += 2
        _add(s, RUN, "d2-q4", LC, Prediction("", None, 0, error="TimeoutError: boom"), seq)
        stats = {d: {"build_s": 0.2, "n_chunks": 5, "bytes": 100, "cache_hit": False} for d in ("d1", "d2")}
        s.add_index_stats(RUN, "rag", "h-rag", stats)
        s.add_server_stats(RUN, {"vllm:request_prefill_time_seconds_sum": 5.0,
                                 "vllm:request_decode_time_seconds_sum": 4.0})
        s.add_server_stats(RUN, {"vllm:request_prefill_time_seconds_sum": 2.02,
                                 "vllm:request_decode_time_seconds_sum": 2.0})
        s.finish_run(RUN, "done")

        # One question per document, no server stats, concurrency 4. LC2 shares LC's prompt, so its only
        # request is warm (cached 992): its cold cost must be derived. rag reports no cached_tokens.
        _start(s, RUN1, [Example("d9-q1", ("d9",), "question?", ("a",))], concurrency=4)
        _add(s, RUN1, "d9-q1", LC, _pred(1050, 0, 1000, 2.0, 3.0), 0)
        _add(s, RUN1, "d9-q1", LC2, _pred(1050, 992, 1000, 0.2, 1.2), 1)
        _add(s, RUN1, "d9-q1", RAG, _pred(330, None, 300, 0.5, 1.5, retr=0.05), 2)
        _add(s, RUN1, "d9-q1", SR, _pred(330, 0, 300, 0.5, 1.5), 3)
        s.finish_run(RUN1, "done")


db, con = store_fixtures(_fill, "cost")


def _rows(
    con: duckdb.DuckDBPyConnection, run: str, sheet: PriceSheet = SHEET, qs: tuple[int, ...] = (1, 3, 10)
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["label"], r["view"]): r for r in cost_table(con, [run], sheet, qs)}


# per-request prices ---------------------------------------------------------------------------
def test_api_cost_formula_and_tiers() -> None:
    # 1000 computed at $1, 500 cached at $0.10, 20 output at $4 (per 1M)
    assert api_cost(API, 1500, 500, 20) == pytest.approx((1000 * 1.0 + 500 * 0.1 + 20 * 4.0) / 1e6)
    tiers = [{"above_prompt_tokens": 20_000, "input_usd_per_mtok": 3.0, "cached_input_usd_per_mtok": 0.3,
              "output_usd_per_mtok": 12.0},
             {"above_prompt_tokens": 10_000, "input_usd_per_mtok": 2.0, "cached_input_usd_per_mtok": 0.2,
              "output_usd_per_mtok": 8.0}]
    tiered = ApiPrices.model_validate({**API.model_dump(), "tiers": tiers})  # validation sorts them
    assert [t.above_prompt_tokens for t in tiered.tiers] == [10_000, 20_000]
    assert api_cost(tiered, 10_000, 0, 0) == pytest.approx(10_000 * 1.0 / 1e6)  # "above": not at
    assert api_cost(tiered, 10_001, 1, 100) == pytest.approx((10_000 * 2.0 + 1 * 0.2 + 100 * 8.0) / 1e6)
    assert api_cost(tiered, 30_000, 0, 0) == pytest.approx(30_000 * 3.0 / 1e6)


# the table on the fixture run -----------------------------------------------------------------
def test_cold_warm_counts_latency_and_failed_request_left_out(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, RUN)
    lc, rag = rows[(LC_LABEL, "api")], rows[(RAG_LABEL, "api")]
    assert (lc["n"], lc["docs"], lc["cold"], lc["warm"], lc["warm_basis"]) == (6, 2, 2, 4, "measured")
    assert (lc["failed"], lc["unpriced"]) == (1, 1)  # the timeout reported no usage: spend unknown
    assert (rag["n"], rag["cold"], rag["warm"], rag["warm_basis"]) == (6, 6, 0, "n/a")
    assert (lc["cold_total_p50_ms"], lc["warm_total_p50_ms"]) == (pytest.approx(3000), pytest.approx(1200))
    assert rag["cold_total_p50_ms"] == pytest.approx(1550) and rag["warm_total_p50_ms"] is None
    unknown = "1 requests with no usage reported: left out of the means (spend unknown)"
    assert lc["caveats"] == rows[(LC_LABEL, "self_hosted")]["caveats"] == unknown  # calibrated, conc. 1


def test_api_view_by_hand(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, RUN)
    lc, rag = rows[(LC_LABEL, "api")], rows[(RAG_LABEL, "api")]
    cold = (1050 * 1.0 + 10 * 4.0) / 1e6  # 1090e-6
    warm = (58 * 1.0 + 992 * 0.1 + 10 * 4.0) / 1e6  # 197.2e-6
    assert lc["one_time_usd_per_doc"] == pytest.approx(cold - warm)
    assert lc["marginal_usd_per_query"] == pytest.approx(warm)
    assert lc["usd_per_query_q1"] == pytest.approx(cold)
    assert lc["usd_per_query_q3"] == pytest.approx((cold + 2 * warm) / 3)
    assert lc["usd_per_query_q10"] == pytest.approx((cold + 9 * warm) / 10)
    # rag: index 0.2 s of local CPU once per doc; per query 370 tokens' worth + 0.05 s retrieval
    assert rag["one_time_usd_per_doc"] == pytest.approx(0.2 * 1e-4)
    assert rag["marginal_usd_per_query"] == pytest.approx((330 + 40) / 1e6 + 0.05 * 1e-4)


def test_self_hosted_view_calibrated_by_server_stats(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, RUN)
    lc, rag = rows[(LC_LABEL, "self_hosted")], rows[(RAG_LABEL, "self_hosted")]
    cold_s, warm_s = 0.9 * 2.0 + 0.5 * 1.0, 0.9 * 0.2 + 0.5 * 1.0  # 2.3 s, 0.68 s
    assert lc["one_time_usd_per_doc"] == pytest.approx((cold_s - warm_s) * 1e-3)
    assert lc["marginal_usd_per_query"] == pytest.approx(warm_s * 1e-3)
    assert rag["one_time_usd_per_doc"] == pytest.approx(0.2 * 1e-3)
    assert rag["marginal_usd_per_query"] == pytest.approx((0.9 * 0.5 + 0.5 * 1.0 + 0.05) * 1e-3)


def test_long_context_falls_with_q_rag_flat_and_curve_frame(con: duckdb.DuckDBPyConnection) -> None:
    df = cost_curve_frame(con, [RUN], SHEET)
    assert list(df.columns) == ["pipeline", "queries_per_doc", "view", "usd_per_query"]
    assert len(df) == 2 * 2 * len(cost.DEFAULT_CURVE_Q)
    def curve(label: str, view: str) -> list[float]:
        part = df[(df["pipeline"] == label) & (df["view"] == view)].sort_values("queries_per_doc")
        return list(part["usd_per_query"])

    for view in ("api", "self_hosted"):
        lc = curve(LC_LABEL, view)
        assert lc == sorted(lc, reverse=True) and lc[0] > 3 * lc[-1]
    api_rag, self_rag = curve(RAG_LABEL, "api"), curve(RAG_LABEL, "self_hosted")
    assert api_rag[0] / api_rag[-1] < 1.06  # the index costs 5% of one query
    assert 1.0 < self_rag[0] / self_rag[-1] < 1.25  # on the server's clock the index weighs more


def test_break_even_where_computed_by_hand(con: duckdb.DuckDBPyConnection) -> None:
    pairs = {p["view"]: p for p in break_even(cost_table(con, [RUN], SHEET, [1, 10, 100]))}
    # api: (892.8e-6 - 20e-6) / (375e-6 - 197.2e-6)
    assert pairs["api"]["break_even_q"] == pytest.approx(872.8 / 177.8)
    # self-hosted: (1.62e-3 - 0.2e-3) / (1.0e-3 - 0.68e-3)
    assert pairs["self_hosted"]["break_even_q"] == pytest.approx(1.42 / 0.32)
    for p in pairs.values():
        assert (p["cheaper_below"], p["cheaper_above"]) == (RAG_LABEL, LC_LABEL)
        assert p["status"].startswith("crosses at q=4.") and "outside" not in p["status"]


def test_break_even_closed_form_cases() -> None:
    def row(label: str, one_time: float, marginal: float) -> dict[str, object]:
        return {"label": label, "view": "api", "one_time_usd_per_doc": one_time,
                "marginal_usd_per_query": marginal, "usd_per_query_q1": 0.0, "usd_per_query_q10": 0.0}

    parallel, below_one, outside, same = break_even([row("a", 1, 2), row("b", 3, 2)]), \
        break_even([row("a", 1, 2), row("b", 1.5, 1)]), break_even([row("a", 100, 1), row("b", 0, 2)]), \
        break_even([row("a", 1, 1), row("b", 1, 1)])
    assert parallel[0]["status"] == "never (parallel curves)" and parallel[0]["cheaper_above"] == "a"
    assert below_one[0]["status"] == "never for q >= 1" and below_one[0]["cheaper_below"] == "b"
    assert outside[0]["break_even_q"] == pytest.approx(100) and "outside 1..10" in outside[0]["status"]
    assert same[0]["status"] == "identical" and same[0]["cheaper_below"] is None


def test_tier_and_cache_storage_through_the_table(con: duckdb.DuckDBPyConnection) -> None:
    tier = Tier(above_prompt_tokens=1000, input_usd_per_mtok=2.0, cached_input_usd_per_mtok=0.2,
                output_usd_per_mtok=8.0)
    sheet = SHEET.model_copy(update={"api": API.model_copy(update={"tiers": [tier]}), "self_hosted": None})
    rows = _rows(con, RUN, sheet)
    assert set(rows) == {(LC_LABEL, "api"), (RAG_LABEL, "api")}
    assert rows[(LC_LABEL, "api")]["usd_per_query_q1"] == pytest.approx((1050 * 2.0 + 10 * 8.0) / 1e6)
    assert rows[(RAG_LABEL, "api")]["usd_per_query_q1"] == pytest.approx((370 + 0.2 * 100 + 0.05 * 100) / 1e6)
    stored = SHEET.model_copy(update={"api": API.model_copy(
        update={"cache_storage_usd_per_mtok_hour": 1.0, "cache_hold_hours": 2.0})})
    lc, plain = _rows(con, RUN, stored)[(LC_LABEL, "api")], _rows(con, RUN)[(LC_LABEL, "api")]
    assert lc["one_time_usd_per_doc"] - plain["one_time_usd_per_doc"] == pytest.approx(992 * 1.0 * 2.0 / 1e6)
    assert "cache storage 2 h" in lc["caveats"]


def test_one_question_per_document_derives_and_says_so(con: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(con, RUN1)  # two long_context configs: labels name the knob that differs
    lc_api, lc_self = (rows[("Long context (max_tokens=32)", v)] for v in ("api", "self_hosted"))
    assert lc_api["warm_basis"] == "derived" and "warm cost DERIVED for 1/1 docs" in lc_api["caveats"]
    # warm = the cold request with context_tokens (1000) cached: 50 + 1000*0.1 + 40
    assert lc_api["marginal_usd_per_query"] == pytest.approx(190e-6)
    assert lc_api["usd_per_query_q1"] == pytest.approx(1090e-6)
    # concurrency 4: per-request busy seconds overlap in a batch, so the self-hosted view refuses
    # (issue 24 item 7; it priced 3.0e-3 at q = 1 from summed busy seconds)
    assert lc_self["usd_per_query_q1"] is None and lc_self["one_time_usd_per_doc"] is None
    assert "no server prefill/decode stats" in lc_self["caveats"]
    assert "self-hosted $ refused at concurrency 4" in lc_self["caveats"]

    lc2 = rows[("Long context (max_tokens=64)", "api")]
    assert (lc2["cold"], lc2["warm"], lc2["warm_basis"]) == (0, 1, "measured")
    assert "cold cost DERIVED for 1/1 docs" in lc2["caveats"]
    assert lc2["usd_per_query_q1"] == pytest.approx(1090e-6)  # nothing cached
    assert rows[("Long context (max_tokens=64)", "self_hosted")]["usd_per_query_q1"] is None  # concurrency 4
    assert "no cached_tokens reported for 1 requests" in rows[(RAG_LABEL, "api")]["caveats"]
    router = rows[("self_route", "api")]
    # answered by RAG, no long-context step: flat at its one request (priced per step)
    assert router["usd_per_query_q1"] == router["usd_per_query_q10"] == pytest.approx(370e-6)
    assert router["fallback_terms"] == []


# price sheets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(PRICES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_sheets_load_and_are_labelled(path: Path) -> None:
    sheet = load_price_sheet(path)
    assert date(2026, 11, 23) <= sheet.date <= date(2026, 12, 1)  # dated when they were written
    assert "example" in sheet.name.lower() or "illustrative" in sheet.name.lower()
    assert any(w in sheet.note.lower() for w in ("illustrative, not a quote", "assumed price"))
    assert PriceSheet.model_validate_json(sheet_json(sheet)) == sheet


def test_sheet_json_is_canonical_and_complete() -> None:
    sheet = load_price_sheet(PRICES / "cpu-2core.toml")
    text = sheet_json(sheet)
    assert text == sheet_json(PriceSheet.model_validate_json(text))
    assert '"date":"2026-11-23"' in text and '"index_usd_per_hour":null' in text and '"devices":1' in text
    assert text.index('"api"') < text.index('"date"') < text.index('"self_hosted"')  # sorted keys


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[api]\ninput_usd_per_mtok = 'cheap'\ncached_input_usd_per_mtok = 0\noutput_usd_per_mtok = 1\n"
         "local_usd_per_hour = 0\n", "api.input_usd_per_mtok: Input should be a valid number"),
        ("[self_hosted]\nhardware = 'x'\ndevice = 'cpu'\nusd_per_device_hour = 1\nusd_per_gpu_hour = 2\n",
         "self_hosted.usd_per_gpu_hour: Extra inputs are not permitted"),
        ("[self_hosted]\nhardware = 'x'\ndevice = 'tpu'\nusd_per_device_hour = -1\n",
         "self_hosted.device: Input should be 'gpu' or 'cpu'; self_hosted.usd_per_device_hour"),
        ("", "(top): Value error, needs an [api] or a [self_hosted] section"),
        ("[self_hosted\n", "not valid TOML"),
    ],
)
def test_malformed_sheet_names_file_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("name = 'n'\ndate = 2026-11-23\nsource = 's'\nnote = 'n'\n" + body)
    with pytest.raises(PriceSheetError) as err:
        load_price_sheet(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)


def test_missing_header_field_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nodate.toml"
    path.write_text("name = 'n'\nsource = 's'\nnote = 'n'\n[self_hosted]\nhardware = 'x'\ndevice = 'cpu'\n"
                    "usd_per_device_hour = 1\n")
    with pytest.raises(PriceSheetError, match=r"nodate\.toml: invalid price sheet: date: Field required"):
        load_price_sheet(path)
    with pytest.raises(PriceSheetError, match="cannot read price sheet"):
        load_price_sheet(tmp_path / "absent.toml")


# the CLI's entry point -----------------------------------------------------------------------
def test_cost_report_rows_columns_and_errors(db: Path) -> None:
    rows = cost_report(db, [RUN], PRICES / "example-api.toml", [1, 10, 100])
    assert [(r["label"], r["view"]) for r in rows] == [(LC_LABEL, "api"), (RAG_LABEL, "api")]
    cols = cost_columns([1, 10, 100])
    assert all(c in rows[0] for c in cols) and cols[9:12] == ["usd_per_query_q1", "usd_per_query_q10",
                                                                "usd_per_query_q100"]
    assert rows[0]["price_sheet"] == "example-api (illustrative) @ 2026-11-23"
    assert len(cost_report(db, None, PRICES / "cpu-2core.toml", [5])) == 2 + 4  # both runs, self-hosted only
    with pytest.raises(ValueError, match="unknown run ids: nope"):
        cost_report(db, ["nope"], PRICES / "example-api.toml", [1])
    with pytest.raises(ValueError, match="no database at"):
        cost_report(db.with_name("absent.duckdb"), None, PRICES / "example-api.toml", [1])
    with pytest.raises(ValueError, match="integers >= 1"):
        cost_report(db, None, PRICES / "example-api.toml", [0])


def test_a_whole_corpus_index_is_shared_by_the_documents_asked_about(tmp_path: Path) -> None:
    # One index over the corpus, built in 0.6 s, serving questions on three documents: each
    # document's one-time cost carries 0.6 / 3 = 0.2 s of local CPU ($1e-4/s -> $2e-5).
    from compare.core.types import CORPUS_INDEX

    db = tmp_path / "corpus.duckdb"
    corpus_rag = ("rag", "h-crag", {**RAG[2], "scope": "corpus"})
    with Store(db) as s:
        exs = [Example(f"{d}-q1", (d,), "question?", ("a",)) for d in ("d1", "d2", "d3")]
        _start(s, "corpus-run", exs)
        for i, ex in enumerate(exs):
            _add(s, "corpus-run", ex.id, corpus_rag, _pred(330, 0, 300, 0.5, 1.5, retr=0.05), i)
        s.add_index_stats("corpus-run", "rag", "h-crag",
                          {CORPUS_INDEX: {"build_s": 0.6, "n_chunks": 15, "bytes": 300, "cache_hit": False}})
        s.finish_run("corpus-run", "done")
    with duckdb.connect(str(db), read_only=True) as c:
        (row,) = [r for r in cost_table(c, ["corpus-run"], SHEET, (1,)) if r["view"] == "api"]
    assert row["one_time_usd_per_doc"] == pytest.approx(0.2 * 1e-4)
    assert row["marginal_usd_per_query"] == pytest.approx((330 + 40) / 1e6 + 0.05 * 1e-4)

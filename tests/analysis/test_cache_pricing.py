"""Issue #15 item 4: price sheets of 2026 shape (cache writes per TTL, storage hours, long-prompt
tiers) and the cost model using them, against values worked out by hand, on a real DuckDB filled
through the real Store API.

Sheet W (hand-made below): $1 fresh / $0.10 cached / $4 output per 1M; cache writes at 1.25x
input for a 5-minute TTL (chosen) or 2x for 1 hour; no storage unless said; a tier above 200k
tokens at $2 / $0.20 / $8. Every long-context prompt is its 1000-token document + 50 tokens,
10 output tokens, so per request:
  from nothing                  1050*1 + 10*4                   = 1090e-6
    + its write at 1.25x (5 min)   1000 * 1 * (1.25 - 1)        =  250e-6 -> cold 1340e-6
    + its write at 2x (1 hour)     1000 * 1 * (2 - 1)           = 1000e-6 -> cold 2090e-6
  document cached (warm)        50*1 + 1000*0.1 + 40            =  190e-6
  RAG                           330*1 + 40 = 370e-6, + 0.05 s retrieval at $1e-4/s; index 20e-6

Runs:
  "derived"   d1: long context cold (no cache_write_tokens reported), warm, warm; RAG x3.
  "measured"  d1: long context cold reporting 1024 written tokens, warm reporting 0, warm
              reporting 50 (the provider wrote the question too); RAG x3 reporting 320 written
              (what vLLM's created_cache_tokens says of its own block cache: no bill).
  "long"      d3 (250,000-token document): long context cold, warm (both above the tier).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from compare.analysis import prices
from compare.analysis.cache_terms import NO_USE, CacheUse, expiry_probability
from compare.analysis.cost import ApiPrices, PriceSheet, PriceSheetError, api_cost, cost_report, cost_table
from compare.analysis.prices import ChosenSheet, load_price_sheet
from compare.analysis.recommend import recommend
from compare.analysis.workload import Workload, WorkloadError
from compare.core.protocols import Role
from compare.core.types import Completion, Example, Prediction
from compare.report import data as dashboard
from compare.store.db import Store
from tests.fixtures.cost import API, LC, LC_LABEL, RAG, RAG_LABEL, SHEET, Pipe
from tests.fixtures.dashboard import SHEET_API_TOML
from tests.fixtures.store import store_fixtures

PRICES = Path(__file__).resolve().parents[2] / "prices"
WRITES = [{"ttl_minutes": 60, "input_multiplier": 2.0}, {"ttl_minutes": 5, "input_multiplier": 1.25}]
TIER = {"above_prompt_tokens": 200_000, "input_usd_per_mtok": 2.0, "cached_input_usd_per_mtok": 0.2,
        "output_usd_per_mtok": 8.0}
W_API = ApiPrices.model_validate({**API.model_dump(), "cache_writes": WRITES, "cache_ttl_minutes": 5,
                                  "tiers": [TIER]})
W = SHEET.model_copy(update={"api": W_API})
W60 = SHEET.model_copy(update={"api": W_API.model_copy(update={"cache_ttl_minutes": 60.0})})
STORED = SHEET.model_copy(update={"api": W_API.model_copy(update={
    "cache_storage_usd_per_mtok_hour": 1.0, "cache_hold_hours": 2.0})})
COLD, COLD60, WARM = 1340e-6, 2090e-6, 190e-6
W_TOML = SHEET_API_TOML + """cache_storage_usd_per_mtok_hour = 1.0
cache_hold_hours = 2.0
cache_ttl_minutes = 5
[[api.cache_writes]]
ttl_minutes = 5
input_multiplier = 1.25
[[api.cache_writes]]
ttl_minutes = 60
input_multiplier = 2.0
[[api.tiers]]
above_prompt_tokens = 200000
input_usd_per_mtok = 2.0
cached_input_usd_per_mtok = 0.2
output_usd_per_mtok = 8.0
[self_hosted]
hardware = "test box"
device = "cpu"
usd_per_device_hour = 3.6
"""


def _ok(prompt: int, cached: int, ttft: float, ctx: int, written: int | None = None,
        retr: float = 0.0) -> Prediction:
    done = Completion("answer", prompt, cached, 10, ttft, ttft + 1.0, (), cache_write_tokens=written)
    return Prediction("answer", done, ctx, retrieval_s=retr)


class _Run:
    def __init__(self, s: Store, run: str, doc: str, tokens: int) -> None:
        self.s, self.run, self.seq = s, run, 0
        s.start_run(run, corpus="needle", model="tiny", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        exs = [Example(f"{doc}-q{i}", (doc,), f"question {i}?", ("answer",)) for i in (1, 2, 3)]
        s.add_examples(run, exs, {doc: tokens})

    def add(self, ex: str, pipe: Pipe, pred: Prediction) -> None:
        name, h, params = pipe
        role: Role = "long_context" if name == "long_context" else "retrieval"
        self.s.add_prediction(self.run, ex, name, h, params, pred, seq=self.seq, resumed=False,
                              started_at=datetime(2026, 1, 1), scores={"contains": 1.0}, role=role)
        self.seq += 1


def _fill(db: Path) -> None:
    with Store(db) as s:
        r = _Run(s, "derived", "d1", 1000)
        for i, cached in enumerate((0, 1000, 1000), 1):
            r.add(f"d1-q{i}", LC, _ok(1050, cached, 2.0 if cached == 0 else 0.2, 1000))
            r.add(f"d1-q{i}", RAG, _ok(330, 0, 0.5, 300, retr=0.05))
        s.add_index_stats("derived", RAG[0], RAG[1], {"d1": {"build_s": 0.2, "n_chunks": 5, "bytes": 100,
                                                              "cache_hit": False}})
        r = _Run(s, "measured", "d1", 1000)
        for i, (cached, written) in enumerate(((0, 1024), (1000, 0), (1000, 50)), 1):
            r.add(f"d1-q{i}", LC, _ok(1050, cached, 2.0 if cached == 0 else 0.2, 1000, written))
            r.add(f"d1-q{i}", RAG, _ok(330, 0, 0.5, 300, 320, retr=0.05))
        r = _Run(s, "long", "d3", 250_000)
        r.add("d3-q1", LC, _ok(250_050, 0, 60.0, 250_000))
        r.add("d3-q2", LC, _ok(250_050, 250_000, 1.0, 250_000))
        r = _Run(s, "marked", "d1", 1000)
        marked: Pipe = ("long_context", "h-lc-1h", {**LC[2], "cache_marker": "ephemeral-1h"})
        for i, cached in enumerate((0, 1000, 1000), 1):
            r.add(f"d1-q{i}", marked, _ok(1050, cached, 2.0 if cached == 0 else 0.2, 1000))
        for run in ("derived", "measured", "long", "marked"):
            s.finish_run(run, "done")


db, con = store_fixtures(_fill, "cache-pricing")


def _row(con: duckdb.DuckDBPyConnection, run: str, sheet: PriceSheet, label: str = LC_LABEL,
         view: str = "api", use: CacheUse = NO_USE) -> dict[str, Any]:
    rows = {(r["label"], r["view"]): r for r in cost_table(con, [run], sheet, (1, 10), use)}
    return rows[(label, view)]


# the sheet ----------------------------------------------------------------------------------
def test_a_write_is_priced_at_its_ttl_multiplier_and_clipped_to_the_computed_tokens() -> None:
    assert W_API.cache_write is not None and W_API.cache_write.input_multiplier == 1.25
    assert [w.ttl_minutes for w in W_API.cache_writes] == [5, 60]  # validation sorts them
    assert api_cost(W_API, 1050, 0, 10, 1000) == pytest.approx(COLD)
    assert api_cost(W60.api, 1050, 0, 10, 1000) == pytest.approx(COLD60)  # type: ignore[arg-type]
    # 1000 of 1050 read from the cache: at most the 50 computed tokens can have been written
    assert api_cost(W_API, 1050, 1000, 10, 5000) == pytest.approx((50 * 1.25 + 100 + 40) / 1e6)
    assert api_cost(API, 1050, 0, 10, 1000) == pytest.approx(1090e-6)  # no write chosen: plain input


def test_tiers_price_cached_reads_and_writes_of_a_long_prompt() -> None:
    # above 200k: every token at the tier, the write at 1.25 x the tier's $2 input
    assert api_cost(W_API, 250_050, 0, 10, 250_000) == pytest.approx(
        (250_050 * 2.0 + 250_000 * 2.0 * 0.25 + 10 * 8.0) / 1e6)
    assert api_cost(W_API, 250_050, 250_000, 10) == pytest.approx((50 * 2.0 + 250_000 * 0.2 + 80) / 1e6)


@pytest.mark.parametrize(("change", "message"), [
    ({"cache_ttl_minutes": 15}, "cache_ttl_minutes = 15 has no write price"),
    ({"cache_ttl_minutes": None}, "choose one with cache_ttl_minutes"),
    ({"cache_writes": [*WRITES, {"ttl_minutes": 5, "input_multiplier": 1.5}]}, "share a ttl_minutes"),
    ({"cache_writes": [{"ttl_minutes": 5, "input_multiplier": 0.5}]}, "greater than or equal to 1"),
    ({"cache_writes": [], "cache_ttl_minutes": 5}, "has no write price"),
    ({"cache_writes": [{"ttl_minutes": 5, "input_multipler": 1.25}]}, "input_multipler"),
])
def test_cache_writes_are_validated_strictly(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    api = {**W_API.model_dump(), **change}
    with pytest.raises(ValueError, match=message):
        ApiPrices.model_validate(api)
    path = tmp_path / "bad.toml"
    path.write_text(W_TOML.replace("cache_ttl_minutes = 5", "cache_ttl_minutes = 7"))
    with pytest.raises(PriceSheetError, match=r"bad\.toml.*cache_ttl_minutes = 7 has no write price"):
        load_price_sheet(path)


def test_the_2026_sheets_are_dated_illustrative_and_shaped_as_stated() -> None:
    explicit, implicit = (load_price_sheet(PRICES / f) for f in ("hosted-caching-2026.toml",
                                                                  "hosted-implicit-2026.toml"))
    for sheet in (explicit, implicit):
        assert sheet.date.isoformat() == "2026-12-01" and "illustrative" in sheet.name.lower()
        assert "illustrative, not a quote" in sheet.note.lower() and "not a quote" in sheet.source
        assert prices.PriceSheet.model_validate_json(prices.sheet_json(sheet)) == sheet
    e, i = explicit.api, implicit.api
    assert e is not None and i is not None
    assert e.cached_input_usd_per_mtok == pytest.approx(0.1 * e.input_usd_per_mtok)
    assert [(w.ttl_minutes, w.input_multiplier) for w in e.cache_writes] == [(5, 1.25), (60, 2.0)]
    assert e.cache_storage_usd_per_mtok_hour > 0 and [t.above_prompt_tokens for t in e.tiers] == [200_000]
    assert i.cached_input_usd_per_mtok == pytest.approx(0.25 * i.input_usd_per_mtok)
    assert i.write_multiplier == 1.0 and i.cache_storage_usd_per_mtok_hour == 0.0  # no write charge
    assert [t.above_prompt_tokens for t in i.tiers] == [272_000]
    old = load_price_sheet(PRICES / "example-api.toml").api  # its numbers unchanged, no write priced
    assert old is not None and old.cache_write is None and old.write_multiplier == 1.0
    assert (old.input_usd_per_mtok, old.cached_input_usd_per_mtok, old.output_usd_per_mtok) == (1.0, 0.1, 4.0)


# the cost model ---------------------------------------------------------------------------------
def test_the_derived_write_of_a_cold_long_context_document(con: duckdb.DuckDBPyConnection) -> None:
    lc = _row(con, "derived", W)
    assert lc["one_time_usd_per_doc"] == pytest.approx(COLD - WARM)  # 1150e-6
    assert lc["marginal_usd_per_query"] == pytest.approx(WARM)
    assert lc["usd_per_query_q1"] == pytest.approx(COLD)
    # what the run paid: its first request wrote the 1000 context tokens it did not find cached
    assert lc["run_paid_usd_per_query"] == pytest.approx((COLD + 2 * WARM) / 3)
    assert "cache write at 1.25x input (5-min TTL)" in lc["caveats"]
    assert "cache write DERIVED for 1/1 docs" in lc["caveats"]
    assert _row(con, "derived", W60)["one_time_usd_per_doc"] == pytest.approx(COLD60 - WARM)  # 1900e-6
    # RAG writes nothing it did not report; self-hosted seconds know no cache price
    assert _row(con, "derived", W, RAG_LABEL)["marginal_usd_per_query"] == pytest.approx(375e-6)
    for label in (LC_LABEL, RAG_LABEL):
        hosted, plain = _row(con, "derived", W, label, "self_hosted"), _row(con, "derived", SHEET, label,
                                                                          "self_hosted")
        assert hosted["one_time_usd_per_doc"] == plain["one_time_usd_per_doc"]
        assert hosted["marginal_usd_per_query"] == plain["marginal_usd_per_query"]


def test_measured_writes_are_used_and_a_sheet_without_writes_ignores_them(
    con: duckdb.DuckDBPyConnection,
) -> None:
    lc = _row(con, "measured", W)
    cold = (1090 + 1024 * 0.25) / 1e6  # the 1024 tokens the provider said it wrote
    # the third request wrote its 50 computed tokens too: warm (both later requests) = 196.25e-6
    later = (WARM + (190 + 50 * 0.25) / 1e6) / 2
    assert lc["one_time_usd_per_doc"] == pytest.approx(cold - later)
    assert lc["marginal_usd_per_query"] == pytest.approx(later)
    assert "DERIVED" not in lc["caveats"]
    # RAG marks nothing for caching: its reported writes are not billed (370e-6 + 5e-6 retrieval)
    assert _row(con, "measured", W, RAG_LABEL)["marginal_usd_per_query"] == pytest.approx(375e-6)
    plain = _row(con, "measured", SHEET)  # no write priced: the numbers of issue #14
    assert plain["one_time_usd_per_doc"] == pytest.approx(900e-6)
    assert plain["marginal_usd_per_query"] == pytest.approx(WARM)
    assert plain["caveats"] == ""


def test_storage_for_the_hours_the_document_is_kept(con: duckdb.DuckDBPyConnection) -> None:
    # 1000 cached tokens (its warm requests) x $1 per 1M per hour x 2 h (the sheet) = 2000e-6
    lc = _row(con, "derived", STORED)
    assert lc["one_time_usd_per_doc"] == pytest.approx(COLD - WARM + 2000e-6)
    assert lc["run_paid_usd_per_query"] == pytest.approx((COLD + 2 * WARM + 2000e-6) / 3)
    assert "cache storage 2 h per document included" in lc["caveats"]
    kept = _row(con, "derived", STORED, use=CacheUse(hold_hours=5.0))  # the workload's 5 h
    assert kept["one_time_usd_per_doc"] == pytest.approx(COLD - WARM + 5000e-6)
    assert "cache storage 5 h per document included" in kept["caveats"]
    assert _row(con, "derived", STORED, RAG_LABEL)["one_time_usd_per_doc"] == pytest.approx(20e-6)


def test_ttl_expiry_raises_the_expected_marginal_as_the_rate_falls(con: duckdb.DuckDBPyConnection) -> None:
    p = math.exp(-1 / 12)  # 1 question per hour, 5-minute TTL: P(gap > 5 min)
    assert expiry_probability(W_API, CacheUse(1.0)) == pytest.approx(p)
    assert expiry_probability(W_API, CacheUse()) == expiry_probability(API, CacheUse(1.0)) == 0.0
    lc = _row(con, "derived", W, use=CacheUse(1.0))
    assert lc["marginal_usd_per_query"] == pytest.approx((1 - p) * WARM + p * COLD)
    assert lc["one_time_usd_per_doc"] == pytest.approx((1 - p) * (COLD - WARM))
    assert lc["usd_per_query_q1"] == pytest.approx(COLD)  # the first question is cold, whatever p
    assert lc["usd_per_query_q10"] == pytest.approx((COLD + 9 * ((1 - p) * WARM + p * COLD)) / 10)
    assert f"p = {p:.3g} of later questions" in lc["caveats"] and "(Poisson)" in lc["caveats"]
    marginals = [_row(con, "derived", W, use=CacheUse(rate))["marginal_usd_per_query"]
                 for rate in (0.5, 1.0, 12.0, 120.0)]
    assert marginals == sorted(marginals, reverse=True) and marginals[-1] == pytest.approx(
        WARM + math.exp(-10) * (COLD - WARM))
    # the 1-hour write: p = exp(-1) at 1 question per hour, each expiry re-pays the 2x write
    q = math.exp(-1)
    hour = _row(con, "derived", W60, use=CacheUse(1.0))
    assert hour["marginal_usd_per_query"] == pytest.approx((1 - q) * WARM + q * COLD60)
    assert _row(con, "derived", W, RAG_LABEL, use=CacheUse(1.0))["marginal_usd_per_query"] == \
        pytest.approx(375e-6)  # RAG holds no document cache


def test_tiers_on_a_long_prompt_in_the_cost_table(con: duckdb.DuckDBPyConnection) -> None:
    lc = _row(con, "long", W)
    cold = (250_050 * 2.0 + 250_000 * 2.0 * 0.25 + 10 * 8.0) / 1e6  # 625_180e-6
    warm = (50 * 2.0 + 250_000 * 0.2 + 10 * 8.0) / 1e6  # 50_180e-6
    assert lc["one_time_usd_per_doc"] == pytest.approx(cold - warm)
    assert lc["marginal_usd_per_query"] == pytest.approx(warm)


# one cost function ---------------------------------------------------------------------------
def _workload(sheet: Path, q: int, rate: float | None = None, hold: float | None = None) -> Workload:
    return Workload.model_validate({
        "documents": {"tokens": [1000]}, "questions_per_doc": q, "requests_per_s": 0.001,
        "latency": {"metric": "ttft", "p95_ms": 1e9}, "quality_floor": 0.0, "price_sheet": sheet,
        "quality_metric": "contains", "queries_per_doc_per_hour": rate, "cache_hold_hours": hold,
    })


@pytest.mark.parametrize("run", ["derived", "measured"])
def test_cost_report_and_recommend_agree_on_a_cache_writing_sheet(db: Path, tmp_path: Path, run: str) -> None:
    path = tmp_path / "w.toml"
    path.write_text(W_TOML)
    qs = (1, 2, 10, 100)
    cli = {(r["label"], r["view"]): r for r in cost_report(db, [run], path, qs)}
    with duckdb.connect(str(db), read_only=True) as c:
        data = dashboard.cost_data(c, [run], ChosenSheet(load_price_sheet(path), "test"), qs)
        use = CacheUse(1.0, 3.0)
        told = {(r["label"], r["view"]): r for r in cost_table(c, [run], load_price_sheet(path), qs, use)}
    assert data is not None and "cache write at 1.25x" in cli[(LC_LABEL, "api")]["caveats"]
    page = {(r["label"], r["view"]): r for r in data.table}
    assert set(cli) == set(page) == set(told)
    for view in ("api", "self_hosted"):
        for q in qs:
            plain = {r["strategy"]: r for r in recommend(db, _workload(path, q), [run], view=view).rows}
            told_wl = _workload(path, q, 1.0, 3.0)
            rated = {r["strategy"]: r for r in recommend(db, told_wl, [run], view=view).rows}
            for (label, v), row in cli.items():
                if v != view:
                    continue
                want = row[f"usd_per_query_q{q}"]
                assert dashboard.usd_at(page[(label, v)], q) == pytest.approx(want, rel=1e-9, abs=0)
                assert plain[label]["usd_per_1k"] / 1000 == pytest.approx(want, rel=1e-9, abs=0)
                got = rated[label]["usd_per_1k"] / 1000
                assert got == pytest.approx(told[(label, v)][f"usd_per_query_q{q}"], rel=1e-9, abs=0)


def test_cost_command_takes_the_workloads_cache_use(db: Path, tmp_path: Path) -> None:
    """`ragvslc cost --queries-per-doc-per-hour R --cache-hold-hours H` prices what recommend
    prices for a workload stating R and H (the CLI had no way to say them)."""
    import json

    from typer.testing import CliRunner

    from main import app

    path = tmp_path / "w.toml"
    path.write_text(W_TOML)
    args = ["cost", "--db", str(db), "--run", "derived", "--price-sheet", str(path),
            "--queries-per-doc", "1,10", "--json"]
    res = CliRunner().invoke(app, [*args, "--queries-per-doc-per-hour", "1", "--cache-hold-hours", "3"])
    assert res.exit_code == 0, res.output
    got = {(r["label"], r["view"]): r["usd_per_query"]["10"] for r in json.loads(res.stdout)["rows"]}
    with duckdb.connect(str(db), read_only=True) as c:
        want = {(r["label"], r["view"]): r["usd_per_query_q10"]
                for r in cost_table(c, ["derived"], load_price_sheet(path), (1, 10), CacheUse(1.0, 3.0))}
        plain = {(r["label"], r["view"]): r["usd_per_query_q10"]
                 for r in cost_table(c, ["derived"], load_price_sheet(path), (1, 10))}
    assert got == pytest.approx(want, rel=1e-12) and got[(LC_LABEL, "api")] != plain[(LC_LABEL, "api")]
    bad = CliRunner().invoke(app, [*args, "--queries-per-doc-per-hour", "0"])
    assert bad.exit_code == 2 and "must be > 0" in bad.output


def test_recommend_weighs_expired_questions_as_cold(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text(W_TOML)
    p = math.exp(-1 / 12)
    rec = recommend(db, _workload(path, 10, 1.0), ["derived"])
    lc = {r["strategy"]: r for r in rec.rows}[LC_LABEL]
    # (1 + 9p)/10 of the requests cold (0 cached), 9(1 - p)/10 warm (1000 cached), per 1k queries
    assert lc["cached_tokens_per_1k"] == pytest.approx(1000 * 1000 * 9 * (1 - p) / 10)
    assert any(f"p = {p:.3g}" in a and "Poisson" in a for a in rec.assumptions)
    never = {r["strategy"]: r for r in recommend(db, _workload(path, 10), ["derived"]).rows}[LC_LABEL]
    assert never["cached_tokens_per_1k"] == pytest.approx(1000 * 1000 * 9 / 10)
    hosted = recommend(db, _workload(path, 10, 1.0), ["derived"], view="self_hosted")
    assert hosted.assumptions == []  # a TTL is the API's: vLLM's evictions are what was measured


def test_workload_cache_knobs_are_validated(tmp_path: Path) -> None:
    assert _workload(tmp_path, 3).cache_use == CacheUse()
    assert _workload(tmp_path, 3, 2.0, 5.0).cache_use == CacheUse(2.0, 5.0)
    for bad in ({"queries_per_doc_per_hour": 0}, {"queries_per_doc_per_hour": math.inf},
                {"cache_hold_hours": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Workload.model_validate({**_workload(tmp_path, 3).model_dump(), **bad})
    path = tmp_path / "wl.toml"
    path.write_text('questions_per_doc = 3\nrequests_per_s = 1\nquality_floor = 0.5\n'
                    'queries_per_doc_per_hr = 2\n[documents]\ntokens = [1000]\n[latency]\np95_ms = 100\n')
    from compare.analysis.workload import load_workload

    with pytest.raises(WorkloadError, match="queries_per_doc_per_hr"):
        load_workload(path)


def test_a_run_marked_for_one_ttl_priced_at_another_says_so(con: duckdb.DuckDBPyConnection) -> None:
    """cache_marker = "ephemeral-1h" bought the 1-hour write; a sheet pricing the 5-minute one
    under-charges it (1.25x instead of 2x): the caveat names both and the fix."""
    label = "Long context, cache marker ephemeral-1h"  # summary.legacy_label
    five = _row(con, "marked", W, label)["caveats"]
    assert "marked documents for a 60-min cache (ephemeral-1h)" in five and "cache_ttl_minutes = 60" in five
    assert "marked documents" not in _row(con, "marked", W60, label)["caveats"]
    assert "prices no cache write" in _row(con, "marked", SHEET, label)["caveats"]
    assert "marked" not in _row(con, "derived", W)["caveats"]

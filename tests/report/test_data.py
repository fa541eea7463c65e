"""The numbers the dashboard plots, on a real DuckDB filled through the Store API (see
tests/fixtures/dashboard.py for the chosen timings), and the page written from them."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from compare.analysis import cost, oracle, summary
from compare.analysis.prices import ChosenSheet, PriceSheetError
from compare.core.types import Example, Prediction
from compare.report import charts
from compare.report import data as dashboard
from compare.report.assemble import write_report
from compare.store.db import Store
from tests.fixtures.dashboard import (
    LC_LABEL,
    RAG_LABELS,
    RUN_A,
    RUN_B,
    SHEET,
    SHEET_TOML,
    fill,
    lc_timing,
    rag_ttft,
)
from tests.fixtures.store import store_fixtures

ALL_CHARTS = {
    "quality_vs_length",
    "needle_heatmap",
    "latency_percentiles",
    "cost_vs_queries",
    "quality_vs_cost",
    "evidence_recall_vs_k",
    "routing_shares",
}


db, con = store_fixtures(fill, "dash")


@pytest.fixture
def sheet_file(tmp_path: Path) -> Path:
    path = tmp_path / "sheet.toml"
    path.write_text(SHEET_TOML)
    return path


def _cost(con: duckdb.DuckDBPyConnection, runs: list[str] | None = None) -> dashboard.CostData:
    data = dashboard.cost_data(con, runs or [RUN_A], ChosenSheet(SHEET, "test"), (1, 10, 100))
    assert data is not None
    return data


def _row(df: pd.DataFrame, **where: Any) -> pd.Series:
    hit = df
    for k, v in where.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, where
    return hit.iloc[0]


# latency ------------------------------------------------------------------------------------------
def test_latency_percentiles_are_exact_and_split_cold_warm(con: duckdb.DuckDBPyConnection) -> None:
    pct = dashboard.latency_percentiles(con, [RUN_A])
    warm = _row(pct, label=LC_LABEL, length=1000.0, cache="warm")
    cold = _row(pct, label=LC_LABEL, length=1000.0, cache="cold")
    # q2..q4 warm (q4 has exactly WARM_FRACTION of the context cached: the rule is >=), q1, q5 cold
    assert (warm["n"], cold["n"]) == (3, 2)
    assert (warm["ttft_p50_ms"], warm["ttft_p95_ms"], warm["ttft_p99_ms"]) == pytest.approx((300, 390, 398))
    assert (cold["ttft_p50_ms"], cold["ttft_p95_ms"], cold["ttft_p99_ms"]) == pytest.approx((800, 980, 996))
    assert warm["e2e_p50_ms"] == pytest.approx(800)  # TTFT + 500 ms, no retrieval
    assert warm["tpot_p99_ms"] == pytest.approx(500 / 9)  # (E2E - TTFT) / (10 - 1 output tokens)
    assert warm["concurrency"] == 1
    rag = _row(pct, label=RAG_LABELS["k2"], length=4000.0, cache="cold")
    ttfts = [rag_ttft(400, i) * 1e3 for i in range(1, 6)]
    assert rag["n"] == 5 and rag["context_tokens_mean"] == pytest.approx(400)
    for p in (50, 95, 99):
        assert rag[f"ttft_p{p}_ms"] == pytest.approx(np.percentile(ttfts, p))
        # RAG's end-to-end includes retrieval: TTFT + 500 ms decode + 50 ms retrieval
        assert rag[f"e2e_p{p}_ms"] == pytest.approx(np.percentile(ttfts, p) + 550)
    lc4000 = pct[(pct["label"] == LC_LABEL) & (pct["length"] == 4000.0)].set_index("cache")
    assert lc4000.loc["cold", "ttft_p50_ms"] == pytest.approx(
        (lc_timing("d2", 1)[1] + lc_timing("d2", 5)[1]) * 500
    )


def test_cold_warm_split_is_the_cost_models(con: duckdb.DuckDBPyConnection) -> None:
    pct = dashboard.latency_percentiles(con, [RUN_A])
    counts = pct.groupby(["label", "cache"])["n"].sum().unstack(fill_value=0)
    for row in cost.cost_table(con, [RUN_A], SHEET, [1]):
        assert (row["cold"], row["warm"]) == (
            counts.loc[row["label"], "cold"],
            counts.loc[row["label"]].get("warm", 0),
        )


def test_latency_chart_rows_and_many_lengths_grouped(con: duckdb.DuckDBPyConnection) -> None:
    long = dashboard.latency_long(dashboard.latency_percentiles(con, [RUN_A]))
    assert set(long["measure"]) == {"TTFT", "E2E incl. retrieval"} and set(long["percentile"]) == {
        "p50",
        "p95",
    }
    # 4 pipelines x 2 lengths cold + long_context warm at 2 lengths = 10 groups, x 2 measures x 2 percentiles
    assert len(long) == 10 * 4
    lengths = pd.Series([1000.0 + 37 * i for i in range(20)])  # a real corpus: every document its own length
    assert set(dashboard._length_groups(lengths)) == {1024.0, 2048.0}
    assert dashboard._length_groups(pd.Series([1000.0, 4000.0])).tolist() == [1000.0, 4000.0]


# cost --------------------------------------------------------------------------------------------
def test_break_even_marks_are_cost_break_even(con: duckdb.DuckDBPyConnection) -> None:
    data = _cost(con)
    expected = [
        p
        for p in cost.break_even(cost.cost_table(con, [RUN_A], SHEET, (1, 10, 100)))
        if p["break_even_q"] is not None
    ]
    got = data.marks.to_dict("records")
    assert [(m["view"], m["a"], m["b"]) for m in got] == [(p["view"], p["a"], p["b"]) for p in expected]
    assert [m["break_even_q"] for m in got] == pytest.approx([p["break_even_q"] for p in expected])
    table = {(r["label"], r["view"]): r for r in data.table}
    for m in got:  # the marker sits where both curves meet
        at_a, at_b = (dashboard.usd_at(table[(m[k], m["view"])], m["break_even_q"]) for k in ("a", "b"))
        assert m["usd_per_query"] == pytest.approx(at_a) == pytest.approx(at_b)
    # By hand (one-time / marginal per doc, see tests/fixtures/dashboard.py; issue 24 item 4: one-time
    # = cold - the mean of the later questions, was cold - warm): api long_context 1867.5e-6 /
    # 722.5e-6, rag 20e-6 / 475e-6, 675e-6, 1275e-6; self-hosted long_context 1.9e-3 / 1.1e-3, rag
    # 0.2e-3 / 1.35e-3, 1.45e-3, 1.75e-3. q* = (one-time difference) / (marginal difference): in the
    # api view rag k=2 and k=4 cs=200 have the smaller marginal too (no crossing), k=4 cs=400 crosses.
    rags = [RAG_LABELS[k] for k in ("k2", "k4", "k4big")]
    for view, pairs, want in (
        ("api", rags[2:], [1847.5 / 552.5]),
        ("self_hosted", rags, [1.7 / 0.25, 1.7 / 0.35, 1.7 / 0.65]),
    ):
        marks = data.marks[data.marks["view"] == view]
        assert list(zip(marks["a"], marks["b"], strict=True)) == [(LC_LABEL, r) for r in pairs]
        assert marks["break_even_q"].tolist() == pytest.approx(want)
    for text in (
        "api: RAG k=2 cheaper than Long context at every q >= 1",
        "api: RAG k=4, 400-tok chunks cheaper below q=3.34 queries/doc, Long context above",
        "self-hosted: RAG k=2 cheaper below q=6.8 queries/doc, Long context above",
        "self-hosted: RAG k=4, 400-tok chunks cheaper below q=2.62 queries/doc, Long context above",
    ):
        assert text in data.verdicts, text
    assert all(LC_LABEL in v for v in data.verdicts)  # rag-vs-rag pairs stay in the table only
    # the chart plots exactly these x positions
    spec = charts.cost_chart(data.curve, data.marks, data.verdicts).to_dict()
    rows = [r for ds in spec["datasets"].values() for r in ds if r.get("layer") == "mark"]
    assert sorted(r["queries_per_doc"] for r in rows) == pytest.approx(sorted(m["break_even_q"] for m in got))


def test_cost_curve_follows_the_table_and_reaches_past_crossings(con: duckdb.DuckDBPyConnection) -> None:
    data = _cost(con)
    table = {(r["label"], r["view"]): r for r in data.table}
    for r in data.curve.itertuples():
        if r.queries_per_doc in (1, 10, 100):
            assert r.usd_per_query == pytest.approx(
                table[(r.label, r.view)][f"usd_per_query_q{r.queries_per_doc}"]
            )
    assert data.curve["queries_per_doc"].max() == 100  # crossings at q < 100 need no wider axis
    assert dashboard.curve_points(30) == [1, 2, 3, 5, 7, 10, 20, 30]


def test_quality_cost_frontier(con: duckdb.DuckDBPyConnection) -> None:
    rows = summary.pipeline_summary(con, [RUN_A])
    pts = dashboard.frontier(rows, _cost(con), 10, "contains")
    api = pts[pts["view"] == "api"].set_index("label")
    # cheapest first at q=10: rag k=2 477e-6 (0.6), rag k=4 cs=200 677e-6 (0.8), long_context
    # 722.5e-6 + 186.75e-6 = 909.25e-6 (1.0), rag k=4 cs=400 1277e-6 (0.6): only the last is dominated
    assert list(api.index) == [RAG_LABELS["k2"], RAG_LABELS["k4"], LC_LABEL, RAG_LABELS["k4big"]]
    assert api["on_frontier"].to_dict() == {
        RAG_LABELS["k2"]: True,
        LC_LABEL: True,
        RAG_LABELS["k4"]: True,
        RAG_LABELS["k4big"]: False,
    }
    assert api.loc[LC_LABEL, "usd_per_query"] == pytest.approx(722.5e-6 + 1867.5e-6 / 10)
    assert api.loc[RAG_LABELS["k2"], "usd_per_query"] == pytest.approx(475e-6 + 20e-6 / 10)
    assert api["quality"].tolist() == pytest.approx([0.6, 0.8, 1.0, 0.6])
    # Two runs: run-b's long context (one cheap warm question in two) beats every run-a config, but
    # within run-a the same three stay on its own frontier (what the chart shows when run-a is picked).
    both = summary.pipeline_summary(con, [RUN_A, RUN_B])
    pts = dashboard.frontier(both, _cost(con, [RUN_A, RUN_B]), 10, "contains")
    api = pts[pts["view"] == "api"].set_index("label")
    names = summary.run_names(con, [RUN_A, RUN_B])  # a run is named by its corpus and time, not its id
    a, b = (f" \u00b7 {names[r]}" for r in (RUN_A, RUN_B))
    assert set(api.index[api["on_frontier"]]) == {LC_LABEL + b}
    assert set(api.index[api["on_run_frontier"]]) == {
        LC_LABEL + b, LC_LABEL + a, RAG_LABELS["k2"] + a, RAG_LABELS["k4"] + a,
    }


def test_pareto_ties_and_domination() -> None:
    df = pd.DataFrame({"usd_per_query": [1.0, 1.0, 2.0, 2.0, 0.5], "quality": [0.5, 0.5, 0.9, 0.4, 0.1]})
    assert dashboard.pareto(df).tolist() == [True, True, True, False, True]  # equal points do not dominate


# retrieval ----------------------------------------------------------------------------------------
def test_evidence_recall_vs_k(con: duckdb.DuckDBPyConnection) -> None:
    recall = dashboard.evidence_recall(con, [RUN_A])
    assert recall[["top_k", "chunk_size", "recall"]].values.tolist() == [
        [2, 200, 0.4],
        [4, 200, 0.8],
        [4, 400, 1.0],
    ]
    assert recall["series"].tolist() == ["200-tok chunks", "200-tok chunks", "400-tok chunks"]
    assert dashboard.varies_k(recall) and not dashboard.varies_k(recall[recall["chunk_size"] == 400])
    assert dashboard.evidence_recall(con, [RUN_B]).empty  # long context retrieves nothing


def test_retrieval_eval_table_is_optional(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "eval.duckdb"
    copy.write_bytes(db.read_bytes())
    with duckdb.connect(str(copy)) as c:
        assert dashboard.retrieval_eval(c, [RUN_A]).empty  # the store's table, still empty
        c.execute("DROP TABLE retrieval_eval")  # any shape with k and a metric column is drawn
        assert dashboard.retrieval_eval(c, [RUN_A]).empty
        c.execute(
            "CREATE TABLE retrieval_eval (run_id VARCHAR, chunk_size INT, k INT, recall DOUBLE, mrr DOUBLE)"
        )
        c.execute(
            "INSERT INTO retrieval_eval VALUES ('run-a', 200, 1, 0.5, 0.5), ('run-a', 200, 5, 0.9, 0.6),"
            " ('run-a', 200, 5, 0.7, 0.6), ('other', 200, 1, 0.0, 0.0)"
        )
        df = dashboard.retrieval_eval(c, [RUN_A])
    got = {(r.metric, r.k): r.value for r in df.itertuples()}
    assert got == {("recall", 1): 0.5, ("recall", 5): pytest.approx(0.8), ("mrr", 1): 0.5, ("mrr", 5): 0.6}
    files = write_report(copy, tmp_path / "out", [RUN_A], images=False)
    assert "retrieval_eval" in files.charts and not files.png


# the page -----------------------------------------------------------------------------------------
def test_report_has_every_chart_images_and_tables(db: Path, tmp_path: Path, sheet_file: Path) -> None:
    files = write_report(db, tmp_path / "out", [RUN_A], price_sheet=sheet_file, queries_per_doc=(1, 10, 100))
    assert set(files.png) == set(files.svg) == set(files.charts) == ALL_CHARTS and files.notes == []
    for name in ALL_CHARTS:
        png = files.png[name].read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
        assert ET.parse(files.svg[name]).getroot().tag.endswith("svg")
    page = files.html.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    for text in (
        "test sheet @ 2026-11-23",
        "given on the command line",
        "hand-made for tests",
        "TTFT p99 ms",
        "E2E incl. retrieval p95 ms",
        "crosses at q=3.34",  # api: long context vs RAG k=4, 400-tok chunks
        "--enable-prefix-caching",
        "$/1k queries, q=100",
        "on frontier",
        "no router in this run",
        "Concurrency 1",
    ):
        assert text in page, text
    assert 'id="run-picker"' not in page  # one run: no selector
    svg = files.svg["cost_vs_queries"].read_text()
    assert "q*=3.34" in svg and "self-hosted" in svg and "API-equivalent" in svg


def test_price_sheet_default_then_stored(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sheets.duckdb"
    copy.write_bytes(db.read_bytes())
    page = write_report(copy, tmp_path / "default", [RUN_A], images=False).html.read_text()
    assert "example-api (illustrative) @ 2026-11-23" in page and "default: example-api.toml" in page
    assert "View(s) not in this sheet: self_hosted" in page
    with Store(copy) as s:
        s.add_price_sheet(RUN_A, SHEET.name, cost.sheet_json(SHEET))
    page = write_report(copy, tmp_path / "stored", [RUN_A], images=False).html.read_text()
    assert "test sheet @ 2026-11-23" in page and "stored with run run-a" in page
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n")
    with pytest.raises(PriceSheetError, match=r"bad\.toml: invalid price sheet"):
        write_report(copy, tmp_path / "bad", [RUN_A], price_sheet=bad)
    assert not (tmp_path / "bad").exists()


def test_several_runs_share_one_run_picker(db: Path, tmp_path: Path) -> None:
    files = write_report(db, tmp_path / "out", [RUN_A, RUN_B], images=False)
    page = files.html.read_text()
    assert re.search(r'<select id="run-picker".*value="run-a".*value="run-b"', page)
    with duckdb.connect(str(db), read_only=True) as c:
        names = summary.run_names(c, [RUN_A, RUN_B])
    assert f"{LC_LABEL} \u00b7 {names[RUN_B]}" in page
    assert f"concurrency {names[RUN_A]}: 1, {names[RUN_B]}: 2" in page
    for name in files.charts:  # every chart declares the parameter the picker sets, and filters by it
        spec = json.dumps(
            json.loads(
                files.html.read_text().split(f"vegaEmbed('#chart-{name}', ")[1].split(', {"actions"')[0]
            )
        )
        assert '"name": "run_pick"' in spec and "datum.run_id == run_pick" in spec, name
    data = _cost(duckdb.connect(str(db), read_only=True), [RUN_A, RUN_B])
    assert set(data.marks["run_id"]) == {RUN_A}  # crossings are drawn within a run only


def test_missing_data_is_a_note_not_an_error(tmp_path: Path) -> None:
    db = tmp_path / "failed.duckdb"
    with Store(db) as s:
        s.start_run(
            "r-fail",
            corpus="c",
            model="m",
            base_url=None,
            concurrency=1,
            spec={},
            corpus_params={},
            server={},
        )
        s.add_examples("r-fail", [Example("e1", ("d",), "q?", ("a",))])
        s.add_prediction(
            "r-fail",
            "e1",
            "long_context",
            "h",
            {"kind": "long_context"},
            Prediction("", None, 0, error="TimeoutError"),
            seq=0,
            resumed=False,
            started_at=pd.Timestamp("2026-01-01").to_pydatetime(),
            scores={"request_ok": 0.0},
        )
    files = write_report(db, tmp_path / "out")
    page = files.html.read_text()
    assert set(files.png) == {"quality_vs_length"}
    for name in ("latency_percentiles", "cost_vs_queries", "quality_vs_cost", "evidence_recall"):
        assert f"Chart {name} omitted" in page and any(n.startswith(name) for n in files.notes)


def test_routing_hook_rows_failure_and_absence(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"strategy": "router x", "route": "rag", "share": 0.75, "n": 3},
        {"strategy": "router x", "route": "long_context", "share": 0.25, "n": 1},
    ]
    monkeypatch.setattr(oracle, "routing_section", lambda con, run_ids: rows)
    files = write_report(db, tmp_path / "rows", [RUN_A], images=False)
    assert "routing_shares" in files.charts and "router x" in files.html.read_text()
    assert "75%" in files.html.read_text()

    def broken(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> None:
        raise KeyError("no such column")

    monkeypatch.setattr(oracle, "routing_section", broken)
    files = write_report(db, tmp_path / "broken", [RUN_A], images=False)
    assert (
        "Routing section failed: KeyError" in files.html.read_text() and "routing_shares" not in files.charts
    )


def test_a_metric_over_fewer_questions_shows_its_own_n(tmp_path: Path) -> None:
    """The judge rules on free-text questions only: its mean in the quality table is over those,
    so the cell says so ("(n=4)") where the row's n is the questions asked; metrics over every
    question show no second n. The JSON summary carries the same counts."""
    from cli.jsonout import summary_json
    from compare.report.html import summary_table

    path = tmp_path / "judged.duckdb"
    fill(path, run_b=False)
    with Store(path) as s:
        judged = sorted(s.examples(RUN_A))[:4]
        for ex_id in judged:
            s.replace_scores([RUN_A, ex_id, "long_context", "h-lc"], {"judge": 1.0}, ["judge"])
    with duckdb.connect(str(path), read_only=True) as c:
        rows = summary.pipeline_summary(c, [RUN_A])
    lc = next(r for r in rows if r["pipeline"] == "long_context")
    assert lc["n"] == 10 and lc["metric_n"] == {"contains": 10, "judge": 4}
    html = summary_table(rows)
    assert "1.000 (n=4)" in html and "(n=10)" not in html
    assert summary_json(rows, ["contains", "judge"])[0]["metric_n"] == {"contains": 10, "judge": 4}

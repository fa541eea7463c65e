"""The verdict (issue 17 item 4): winners, ties, break-even and NoLiMa's effective length, with
values worked out by hand; and the report puts it first with only the metrics that apply."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from compare.analysis.verdict import EffectiveLength, effective_lengths, run_verdict
from compare.report.assemble import write_report
from tests.fixtures import dashboard


def _lengths(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": "r", "label": lab, "length": n, "headline": s} for lab, n, s in rows])


def test_effective_length_is_the_longest_length_keeping_85_percent() -> None:
    got = effective_lengths(_lengths([
        ("lc", 1000, 1.0), ("lc", 2000, 0.9), ("lc", 4000, 0.84), ("lc", 8000, 0.95),  # 0.84 < 0.85: stops
        ("rag", 1000, 0.6), ("rag", 2000, 0.52), ("rag", 4000, 0.51), ("rag", 8000, 0.50),  # 0.51 = 85%
        ("zero", 1000, 0.0), ("zero", 2000, 1.0),
    ]), "headline")
    assert got == [EffectiveLength("lc", 2000.0, 8000.0, 1.0), EffectiveLength("rag", 4000.0, 8000.0, 0.6),
                   EffectiveLength("zero", None, 2000.0, 0.0)]
    assert got[0].words() == "lc: 2,000 tokens" and "n/a" in got[2].words()
    assert EffectiveLength("x", 8000.0, 8000.0, 1.0).words() == "x: 8,000+ tokens"  # never dropped


def test_the_verdict_names_winners_ties_and_the_break_even() -> None:
    summary = [
        {"run_id": "r", "label": "lc", "headline": 0.90, "total_p50_ms": 2000.0, "e2e_p95_ms": 5000.0,
         "asked": 40, "errors": 0},
        {"run_id": "r", "label": "rag", "headline": 0.89, "total_p50_ms": 400.0, "e2e_p95_ms": 4900.0,
         "asked": 40, "errors": 2},
    ]
    cost = [{"run_id": "r", "label": "lc", "view": "api", "usd_per_query_q10": 0.0020},
            {"run_id": "r", "label": "rag", "view": "api", "usd_per_query_q10": 0.0004}]
    pairs = [{"view": "api", "a": "lc", "b": "rag", "break_even_q": 4.76, "cheaper_below": "lc",
              "cheaper_above": "rag"}]
    v = run_verdict("r", summary, _lengths([("lc", 1000, 0.9), ("rag", 1000, 0.89)]), "headline", cost, pairs)
    # 0.90 vs 0.89 is within the 0.02 tie band; p95 5000 vs 4900 within 5%; p50 and cost are not.
    assert v.lines[0] == "quality (headline, over every asked question): tie between lc, rag (0.900)"
    assert v.lines[1] == "latency p50 (retrieval + E2E): rag (400) ms"
    assert v.lines[2] == "latency p95 (E2E): tie between lc, rag (4,900) ms"
    assert v.lines[3] == "cost at 10 questions per document (api): rag (0.0004) $/query"
    assert v.lines[4].startswith("break-even (api): lc vs rag at 4.76 questions per document; below it lc")
    assert v.caveats == ["rag: 2 of 40 requests failed (scored 0 in the headline)"]


def test_the_report_leads_with_the_verdict_and_shows_only_metrics_that_apply(tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    dashboard.fill(db, run_b=False)
    with duckdb.connect(str(db)) as con:  # as the runner stores them: every metric, NULL where n/a
        con.execute("INSERT INTO scores SELECT run_id, example_id, pipeline, params_hash, m, NULL FROM "
                    "predictions, (VALUES ('time_iou'), ('choice_accuracy')) t(m)")
    page = write_report(db, tmp_path / "out", images=False).html.read_text()
    assert page.index("<h2>Verdict</h2>") < page.index("<h2>Quality</h2>")
    assert "class='verdict'" in page and "latency p50" in page
    quality = page[page.index("<h2>Quality</h2>"):page.index("<h2>Latency</h2>")]
    head = quality[:quality.index("</thead>")]
    assert "time_iou" not in head and "choice_accuracy" not in head  # not scored in this run
    assert "class='scroll'" in quality  # long tables scroll inside their box

"""The one decision line (compare/analysis/decision.py; issue 24 items 1, 3, 9, 12) on small
DuckDBs written through the real Store API (tests/fixtures/paired.py), values worked out by hand.

Prices (tests/fixtures/cost.py SHEET, API view): $1 / $0.10 / $4 per 1M input / cached / output.
Long context per document: cold 1050 x 1 + 10 x 4 = 1090 u$, warm 58 x 1 + 992 x 0.1 + 40 =
197.2 u$; RAG 330 + 40 = 370 u$ every question. So at q questions per document long context
costs 197.2 + 892.8 / q and RAG 370: they cross at q* = 892.8 / 172.8 = 5.167.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from compare.analysis.decision import Q_RANGE, break_even_interval, decision_for
from tests.fixtures import paired
from tests.fixtures.cost import LC_LABEL, RAG_LABEL, SHEET
from tests.fixtures.store import store_fixtures

LC_A, RAG_B = paired.discordant(200, 106, 18, 12)  # 0.62 vs 0.59, 18 vs 12 discordant


def _fill(db: Path) -> None:
    paired.fill(db, LC_A, RAG_B, docs=20)  # 20 documents x 10 questions


db, con = store_fixtures(_fill, "decision")


def test_n200_062_vs_059_no_quality_winner_cost_decides(con: duckdb.DuckDBPyConnection) -> None:
    d = decision_for(con, "r", q=10, sheet=SHEET)
    lc = next(f for f in d.pipelines if f.label == LC_LABEL)
    assert lc.quality is not None and (lc.quality.value, lc.quality.n) == (0.62, 200)
    assert d.paired is not None and d.paired.p == pytest.approx(0.3616, abs=1e-4) and not d.paired.separated
    # quality does not separate them; at q = 10 long context costs 197.2 + 89.28 = 286.5 u$ < 370:
    # the same on every document, so cheaper in every resample
    assert (d.choice, d.versus, d.decided_by) == (LC_LABEL, RAG_LABEL, "cost")
    assert lc.usd_per_1k == pytest.approx(0.28648, rel=1e-4)
    assert "no detectable difference at n = 200" in d.sentence and "~1,306 questions" in d.sentence
    assert d.sentence.startswith(f"At 10 questions per document: choose {LC_LABEL} — quality 0.620 [")
    assert "paired p = 0.36, n = 200" in d.sentence
    be = d.break_even
    assert be is not None and be.cheaper_below == RAG_LABEL and be.documents == 20
    assert be.q == pytest.approx(5.167, rel=0.01) and not be.undetermined
    assert "below q* = 5.17 [5.1" in d.sentence and f"{RAG_LABEL} is cheaper" in d.sentence
    out = d.to_dict()  # the structure run --json, recommend --json and the API share
    assert out["choice"] == LC_LABEL and out["paired"]["p"] == pytest.approx(0.3616, abs=1e-4)
    assert out["pipelines"][0]["quality"]["n"] == 200 and out["sentence"] == d.sentence


def test_a_quality_gap_the_data_support_decides(tmp_path: Path) -> None:
    # 0.70 vs 0.55 over 200: 40 vs 10 discordant, p = 2 P(X <= 10 | 50, 1/2) = 2.4e-5: RAG wins on
    # quality although long context is cheaper at q = 10.
    rag, lc = paired.discordant(200, 100, 40, 10)
    paired.fill(tmp_path / "d.duckdb", lc, rag, docs=20)
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as c:
        d = decision_for(c, "r", q=10, sheet=SHEET)
    assert (d.choice, d.decided_by) == (RAG_LABEL, "quality")
    assert d.paired is not None and d.paired.p == pytest.approx(2.4e-5, rel=0.05) and d.paired.separated
    assert "no detectable" not in d.sentence


def test_one_document_names_no_winner_on_cost(tmp_path: Path) -> None:
    # Seen in the demo: 3 questions on one lecture, quality not separated, and long context named
    # the winner on a cost "interval" bootstrapped over one document (a point). No winner now.
    paired.fill(tmp_path / "d.duckdb", [0, 0, 0], [1, 1, 0], docs=1)
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as c:
        d = decision_for(c, "r", q=10, sheet=SHEET)
    assert d.cost_diff is not None and d.cost_diff.n == 1 and d.cost_diff.lo == d.cost_diff.hi < 0
    assert (d.choice, d.decided_by) == (None, "undecided")
    assert d.sentence.startswith("At 10 questions per document: nothing separates")
    assert "more documents to pin the cost difference" in d.sentence and "1 document(s))" in d.sentence
    assert "(1 document: no interval)" in d.sentence


def test_one_question_per_document_says_derived(tmp_path: Path) -> None:
    # 4 documents, one question each: long context has no warm request, so its warm cost is
    # DERIVED (its request with the document cached: 50 + 1000 x 0.1 + 40 = 190 u$); both 2 of 4
    # right on the same questions: no discordant pair, no gap, so no n would separate them.
    paired.fill(tmp_path / "d.duckdb", [1, 1, 0, 0], [1, 1, 0, 0], docs=4)
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as c:
        d = decision_for(c, "r", q=10, sheet=SHEET)
    lc = next(f for f in d.pipelines if f.label == LC_LABEL)
    assert lc.warm_basis == "derived" and d.break_even is not None and d.break_even.derived
    assert f"warm cost DERIVED for {LC_LABEL}" in d.sentence and "document(s), derived" in d.sentence
    assert d.paired is not None and d.paired.n_needed is None  # no gap: no n separates it


def _terms(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["doc_key", "one_time_usd", "marginal_usd"]).set_index("doc_key")


def test_break_even_interval_over_documents_and_undetermined() -> None:
    # Four alike documents: Y (no one-time, 1 per query) vs X (10 once, 0.5 per query):
    # Y - X = 0.5 - 10/q < 0 below q* = 20, on every resample.
    y = _terms([(f"d{i}", 0.0, 1.0) for i in range(4)])
    x = _terms([(f"d{i}", 10.0, 0.5) for i in range(4)])
    be = break_even_interval(y, x, "Y", "X")
    assert be is not None and be.q == pytest.approx(20, rel=0.01)
    assert (be.lo, be.hi) == pytest.approx((20, 20), rel=0.01) and not be.undetermined
    # Two documents that disagree: on d1 Y is always cheaper (Y - X = -0.9 - 1/q), on d2 never
    # (1.9 + 5/q). Resamples {d1,d1} (1 in 4): q* beyond the range; {d2,d2} and {d1,d2} (mean
    # 0.5 + 2/q > 0): Y never cheaper, q* = 1. The 95% interval spans 1..1000+: undetermined.
    y = _terms([("d1", 0.0, 0.1), ("d2", 5.0, 2.0)])
    x = _terms([("d1", 1.0, 1.0), ("d2", 0.0, 0.1)])
    be = break_even_interval(y, x, "Y", "X")
    assert be is not None and be.undetermined and be.q is None
    assert be.lo == Q_RANGE[0] and be.hi == float("inf")


def test_recommend_and_the_api_give_the_same_decision(db: Path, con: duckdb.DuckDBPyConnection) -> None:
    # One function builds the decision: `recommend` (and its --json) carries the very object the
    # run's output and the report show, priced with the same sheet, view and q.
    from cli import jsonout
    from compare import api
    from compare.analysis import prices
    from compare.analysis.recommend import recommend
    from compare.analysis.workload import Workload

    wl = Workload.model_validate({"documents": {"tokens": [1000]}, "questions_per_doc": 10,
                                  "requests_per_s": 1, "latency": {"p95_ms": 5000}, "quality_floor": 0.5})
    rec = recommend(db, wl)
    sheet = prices.choose_sheet(con, ["r"], None).sheet
    same = decision_for(con, "r", 10, sheet, wl.cache_use, sheet.views()[0])
    assert [d.sentence for d in rec.decisions] == [same.sentence]
    assert rec.decisions[0].to_dict() == same.to_dict()
    assert same.sentence.startswith("At 10 questions per document:") and "n = 200" in same.sentence
    assert jsonout.recommendation_json(rec)["decisions"] == [same.to_dict()]
    assert api.decision(db, "r", q=10).to_dict() == same.to_dict()  # the Python API: the same

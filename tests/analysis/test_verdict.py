"""The verdict (issue 17 item 4, issue 24): paired quality, latency intervals, the cache classes,
break-even and NoLiMa's effective length, with values worked out by hand; and the report puts the
decision and the verdict first with only the metrics that apply."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from cli import jsonout
from compare.analysis.verdict import EffectiveLength, effective_lengths, verdict_for
from compare.report.assemble import write_report
from compare.store import views
from compare.store.db import Store
from tests.fixtures import dashboard, paired
from tests.fixtures.cost import LC_LABEL, RAG_LABEL


def _lengths(rows: list[tuple[str, float, float]], n: int = 5) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": "r", "label": lab, "length": length, "headline": s, "n": n}
                         for lab, length, s in rows])


def test_effective_length_is_the_longest_length_keeping_85_percent() -> None:
    got = effective_lengths(_lengths([
        ("lc", 1000, 1.0), ("lc", 2000, 0.9), ("lc", 4000, 0.84), ("lc", 8000, 0.95),  # 0.84 < 0.85: stops
        ("rag", 1000, 0.6), ("rag", 2000, 0.52), ("rag", 4000, 0.51), ("rag", 8000, 0.50),  # 0.51 = 85%
        ("zero", 1000, 0.0), ("zero", 2000, 1.0), ("zero", 4000, 1.0),
    ]), "headline")
    assert got == [EffectiveLength("lc", 2000.0, 8000.0, 1.0), EffectiveLength("rag", 4000.0, 8000.0, 0.6),
                   EffectiveLength("zero", None, 4000.0, 0.0)]
    assert got[0].words() == "lc: 2,000 tokens" and "n/a" in got[2].words()  # (5 questions per length)
    assert EffectiveLength("x", 8000.0, 8000.0, 1.0).words() == "x: 8,000+ tokens"  # never dropped


def test_effective_length_only_on_a_grid_with_enough_questions() -> None:
    # 10 documents at 10 lengths, one question each, a flat 0.8: no trend can be read (was "3,900 tokens")
    flat = effective_lengths(_lengths([("lc", 3000 + 100 * i, 0.8) for i in range(10)], n=1), "headline")
    assert flat[0].length is None
    assert flat[0].words().startswith("lc: not measured (10 tested length(s), 0 with")
    one = effective_lengths(_lengths([("lc", 3489, 0.9)], n=40), "headline")  # was "3,489+ tokens"
    assert one[0].words() == "lc: not measured (1 tested length(s), 1 with >= 5 questions; needs >= 3)"
    grid = effective_lengths(_lengths([("lc", 1000, 1.0), ("lc", 2000, 0.9), ("lc", 4000, 0.9)]), "headline")
    assert grid[0].words() == "lc: 4,000+ tokens"


def test_three_cache_classes_count_the_document_not_the_template(tmp_path: Path) -> None:
    # A 200-token document, prompt 250 (template 50). cached 180: 180 >= 0.9 x 200 read as warm
    # before, but only 180 - 50 = 130 of the document (65%) is cached: partial. cached 40 <= 50:
    # cold. cached 240: 190 of the document >= 180: warm.
    db = tmp_path / "c.duckdb"
    with Store(db) as s:
        s.start_run("r", corpus="hand", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        for i, cached in enumerate((40, 180, 240)):
            s.add_prediction("r", f"e{i}", "lc", "h", {"kind": "long_context"},
                             paired.pred(250, cached, 200, 1.0), seq=i, resumed=False,
                             started_at=paired.NOW, scores={}, role="long_context")
        views.install(s.con)
        got = s.con.execute("SELECT cache, warm FROM request_rows ORDER BY seq").fetchall()
    assert got == [("cold", False), ("partial", False), ("warm", True)]
    assert [views.cache_class(c, 200, 250) for c in (40, 180, 240)] == ["cold", "partial", "warm"]
    assert [bool(views.is_warm(c, 200, 250)) for c in (40, 180, 240)] == [False, False, True]


def _small_run(db: Path) -> None:
    # 10 questions on 2 documents: long context right on 8, RAG on 7 (1 vs 0 discordant).
    lc = [1.0] * 8 + [0.0] * 2
    rag = [1.0] * 7 + [0.0] * 3
    paired.fill(db, lc, rag, docs=2, lc_ms=[100.0 * (i + 1) for i in range(10)])


def test_the_verdict_tests_quality_and_says_how_sure_latency_is(tmp_path: Path) -> None:
    db = tmp_path / "v.duckdb"
    _small_run(db)
    with duckdb.connect(str(db), read_only=True) as con:
        v = verdict_for(con, "r", q=10)
    # Wilson 8/10: [0.4902, 0.9433]; 7/10: [0.3968, 0.8922]; McNemar 1 vs 0: p = 1
    assert v.lines[0] == (f"quality (headline, 95% intervals): {LC_LABEL} 0.800 [0.490, 0.943] "
                          f"(n = 10, wilson); {RAG_LABEL} 0.700 [0.397, 0.892] (n = 10, wilson)")
    assert v.lines[1].startswith(f"quality difference: no detectable difference at n = 10 between {LC_LABEL} "
                                 f"and {RAG_LABEL} (+0.100 [")
    # Connor: psi = delta = 0.1: (1.95996 sqrt(0.1) + 0.84162 sqrt(0.09))^2 / 0.01 = 76.1 -> 77
    assert v.lines[1].endswith("exact McNemar, p = 1); ~77 questions would detect a gap of 0.100 "
                               "at power 0.8")
    # p50 of 100..1000 ms = 550; Bin(10, 1/2): cdf(1) = 0.011 < 0.025 <= cdf(2) = 0.055 -> x_2 = 200,
    # cdf(7) = 0.945 < 0.975 <= cdf(8) = 0.989 -> x_9 = 900
    assert f"{LC_LABEL} 550 [200, 900] ms (n = 10)" in v.lines[2]
    assert v.lines[3] == (f"latency p95 (retrieval + E2E): {LC_LABEL} max of 10: 1,000 ms "
                          f"(too few rows for a p95); {RAG_LABEL} max of 10: 500 ms (too few rows for a p95)")
    # documents 0 and 1 are asked first (cold), the 8 later questions find them cached (warm)
    assert v.lines[4].startswith(f"latency mix {LC_LABEL}: 2 cold / 0 partial / 8 warm requests; "
                                 "p50 cold 150 ms, warm 650 ms; at 10 questions per document 1 of 10 is cold")
    assert v.decision is not None and v.decision.sentence.startswith("At 10 questions per document:")
    data = jsonout.run_json(type("R", (), {"run_id": "r", "done": 20, "skipped": 0, "errors": 0,
                                           "resumed": False})(), db, [], v)
    assert set(data) == set(jsonout.TOP_LEVEL["run"]) and data["decision"]["sentence"] == v.decision.sentence


def test_the_report_leads_with_the_verdict_and_shows_only_metrics_that_apply(tmp_path: Path) -> None:
    db = tmp_path / "d.duckdb"
    dashboard.fill(db, run_b=False)
    with duckdb.connect(str(db)) as con:  # as the runner stores them: every metric, NULL where n/a
        con.execute("INSERT INTO scores SELECT run_id, example_id, pipeline, params_hash, m, NULL FROM "
                    "predictions, (VALUES ('time_iou'), ('choice_accuracy')) t(m)")
    page = write_report(db, tmp_path / "out", images=False).html.read_text()
    decision = page.index("<b>Decision:</b> At 10 questions per document")
    # the decision line first (before the evidence in words and every section), whatever the layout
    assert decision < page.index("class='verdict'") < page.index("<h2>Quality</h2>")
    assert "class='verdict'" in page and "latency p50" in page
    quality = page[page.index("<h2>Quality</h2>"):page.index("<h2>Latency</h2>")]
    head = quality[:quality.index("</thead>")]
    assert "time_iou" not in head and "choice_accuracy" not in head  # not scored in this run
    assert "class='scroll'" in quality  # long tables scroll inside their box

"""Which questions need the whole document (issue 30): the stratum rule of
compare/analysis/strata.py worked by hand, and the per-stratum verdict on a hand-built store.

In the span tests chunks are 10 tokens x 4 characters = 40 characters wide: chunk i is
[40 i, 40 i + 40).

The store (run "r", long context vs RAG k=4, tests/fixtures/paired.py's requests, one document
per question):
- q00-q09: bAbI task 2 (labelled multi_hop) but both supporting facts inside one chunk
  ([100, 110) and [115, 150): chunk 0 of the run's 200-token = 800-character chunks) -> measured
  `local` from spans.
  Long context right on 4, RAG on all 10: 6 discordant, all RAG's: exact McNemar
  p = 2 x 0.5^6 = 0.03125 < 0.05 -> RAG by quality.
- q10-q12: an imported file's tag stratum = "multi-hop", no spans -> `multi_hop` from the label;
  3 questions < 6, the fewest on which the exact test can ever reach p < 0.05 -> too few.
- q13-q20: bAbI task 7 (counting) with facts in two chunks -> `aggregation` from the label (a kind
  of question beats a place count). Long context right on all 8, RAG on none: p = 2 x 0.5^8 =
  0.0078 -> long context by quality.
Over all 21 questions long context is right on 4 + 3 + 8 = 15, RAG on 10: the run's own verdict
hides that each wins a different stratum.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from compare.analysis.strata import (
    Need,
    assign,
    evidence_spans,
    label_stratum,
    need_stratum,
    run_strata,
    span_need,
)
from compare.analysis.verdict import min_stratum_questions, stratum_verdicts
from compare.core.types import Example, Span
from compare.report.strata_section import strata_chart, strata_rows
from compare.store.db import Store
from tests.fixtures import paired
from tests.fixtures.cost import LC, LC_LABEL, RAG, RAG_LABEL, SHEET
from tests.fixtures.store import store_fixtures

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("spans", "places", "spread", "stratum"), [
    ([(85, 115)], 1, 30, "local"),  # inside chunk 2 (85 // 40 = 114 // 40 = 2)
    ([(100, 150)], 2, 50, "multi_hop"),  # longer than a chunk: 100 in chunk 2, 149 in chunk 3
    ([(30, 50)], 1, 20, "local"),  # across the 0|1 edge, shorter than a chunk: kept whole, chunk 0
    ([(10, 20), (75, 90)], 2, 80, "multi_hop"),  # chunks 0 and 1
    ([(10, 20), (75, 90), (100, 190)], 5, 180, "aggregation"),  # + 90 > 40 chars: chunks 2, 3, 4
    ([(0, 5), (45, 50), (90, 95), (130, 135)], 4, 135, "aggregation"),  # chunks 0, 1, 2, 3
    ([(0, 5), (10, 15), (20, 40)], 1, 40, "local"),  # end 40 is exclusive: still chunk 0
])
def test_span_need_counts_chunks_by_hand(spans: list[tuple[float, float]], places: int, spread: float,
                                         stratum: str) -> None:
    need = span_need(spans, chunk_tokens=10, chars_per_token=4.0)
    assert need is not None and (need.places, need.spread_chars) == (places, spread)
    assert need_stratum(need) == stratum


def test_assignment_worked_by_hand() -> None:
    one_chunk = Need("spans", 1, 50.0)
    two_chunks = Need("spans", 2, 300.0)
    # measured beats a place label: bAbI task 2 says multi_hop, its two facts share one chunk
    m = assign({"task": "babi-qa2"}, one_chunk)
    assert (m.stratum, m.source) == ("local", "spans")
    # a kind label beats the measurement: counting over two chunks is aggregation
    a = assign({"task": "babi-qa7"}, two_chunks)
    assert (a.stratum, a.source, a.need) == ("aggregation", "label", two_chunks)
    assert assign({"task": "babi-qa1"}, None).stratum == "local"
    assert (assign({"task": "babi-qa3"}, None).stratum, assign({"task": "babi-qa3"}, None).source) == (
        "multi_hop", "label")
    assert assign({"task": "quality"}, None).stratum == "whole"  # L-Eval exam: whole, by its subset
    # ... a prior the probe tests per question: right at k = 1, it did not need the whole
    assert assign({"task": "quality"}, Need("probe", 1)).stratum == "local"
    assert assign({"task": "natural_question"}, None).stratum == "local"
    assert assign({"stratum": "full"}, None).stratum == "whole"  # an imported file's own label
    assert assign({"stratum": "Multi-Hop"}, None).stratum == "multi_hop"
    assert assign({"stratum": "aggregation"}, None).source == "label"  # the aggregation corpus's tag
    assert assign({"task": "needle-multi", "n_needles": 4.0}, None).stratum == "aggregation"
    assert assign({"task": "needle-multi", "n_needles": 2.0}, None).stratum == "multi_hop"
    # the probe: correct first at k = 1 local, at 2 multi_hop, at 8 aggregation, at no k whole
    assert [need_stratum(Need("probe", k)) for k in (1, 2, 8, None)] == ["local", "multi_hop", "aggregation",
                                                                         "whole"]
    assert assign({"task": "mystery"}, Need("probe", None)).source == "probe"
    assert (assign({}, None).stratum, assign({}, None).source) == ("unknown", "none")
    assert label_stratum({"task": "babi-qa19"}) == "multi_hop" and label_stratum({"stratum": "odd"}) is None


def test_evidence_spans_key_first_then_the_examples_own() -> None:
    assert evidence_spans({"evidence_spans": json.dumps([[3, 9]])}, [Span("d", 100, 200)]) == [(3.0, 9.0)]
    assert evidence_spans({"evidence_spans": [[3, 9]]}) == [(3.0, 9.0)]
    assert evidence_spans({}, [Span("d", 100, 200)]) == [(100.0, 200.0)]
    assert evidence_spans({}, [{"doc_id": "d", "start": 1, "end": 2}]) == [(1.0, 2.0)]
    assert span_need([]) is None


def _example(i: int) -> Example:
    if i < 10:
        spans = (Span(f"d{i}", 100, 110), Span(f"d{i}", 115, 150))
        return Example(f"q{i:02d}", (f"d{i}",), "q?", ("a",), spans, {"task": "babi-qa2"})
    if i < 13:
        return Example(f"q{i:02d}", (f"d{i}",), "q?", ("a",), (), {"stratum": "multi-hop"})
    return Example(f"q{i:02d}", (f"d{i}",), "q?", ("a",), (), {
        "task": "babi-qa7", "evidence_spans": json.dumps([[10, 20], [5000, 5010]])})


LC_RIGHT = [1.0] * 4 + [0.0] * 6 + [1.0] * 3 + [1.0] * 8
RAG_RIGHT = [1.0] * 10 + [0.0] * 3 + [0.0] * 8


def _fill(db: Path) -> None:
    exs = [_example(i) for i in range(21)]
    with Store(db) as s:
        s.start_run("r", corpus="hand", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={"content_sha256": "c0ffee"}, server={})
        s.add_examples("r", exs)
        for i, ex in enumerate(exs):
            paired._add(s, "r", ex.id, LC, paired.lc_pred(True), 2 * i, LC_RIGHT[i])
            paired._add(s, "r", ex.id, RAG, paired.rag_pred(), 2 * i + 1, RAG_RIGHT[i])
        s.finish_run("r", "done")


db, con = store_fixtures(_fill, "strata")


def test_run_strata_from_a_stored_run(con: duckdb.DuckDBPyConnection) -> None:
    st = run_strata(con, "r").set_index("example_id")
    assert st["stratum"].value_counts().to_dict() == {"local": 10, "aggregation": 8, "multi_hop": 3}
    assert st.loc["q00", "source"] == "spans" and st.loc["q00", "context_need"] == 1  # RAG's 200-tok chunks
    assert st.loc["q00", "spread_chars"] == 50
    assert st.loc["q10", "source"] == "label" and math.isnan(st.loc["q10", "context_need"])
    assert (st.loc["q13", "source"], st.loc["q13", "context_need"]) == ("label", 2)  # 5000 // 800 = 6
    assert st.loc["q00", "doc_key"] == '["d0"]'  # the cost tables' document key


def test_per_stratum_verdict_on_a_hand_built_store(con: duckdb.DuckDBPyConnection) -> None:
    assert min_stratum_questions() == 6  # 2 x 0.5^5 = 0.0625, 2 x 0.5^6 = 0.031
    local, multi, agg = stratum_verdicts(con, "r", q=10, sheet=SHEET)
    assert (local.stratum, local.n, local.sources, local.too_few) == ("local", 10, {"spans": 10}, False)
    d = local.decision
    assert (d.choice, d.decided_by) == (RAG_LABEL, "quality")
    assert d.paired is not None and d.paired.p == pytest.approx(0.03125) and d.paired.diff.n == 10
    lc = next(f for f in d.pipelines if f.label == LC_LABEL)
    assert lc.quality is not None and (lc.quality.value, lc.quality.n) == (0.4, 10)
    assert lc.p50_ms is not None and lc.p50_ms.n == 10  # latency over the stratum's requests only
    assert local.line.startswith("stratum local (n = 10; from spans 10): At 10 questions per document: "
                                 f"choose {RAG_LABEL}")
    assert (multi.stratum, multi.n, multi.sources, multi.too_few) == ("multi_hop", 3, {"label": 3}, True)
    assert "too few questions to decide (the paired test needs >= 6)" in multi.line
    assert f"{LC_LABEL} 1.000 [" in multi.line and "(n = 3)" in multi.line
    assert (agg.stratum, agg.n, agg.sources) == ("aggregation", 8, {"label": 8})
    assert (agg.decision.choice, agg.decision.decided_by) == (LC_LABEL, "quality")
    assert agg.decision.paired is not None and agg.decision.paired.p == pytest.approx(2 * 0.5**8)
    # every table row carries its n; the too-few stratum says so on each of its pipelines' rows
    rows = strata_rows("r", [local, multi, agg])
    few = [(r["label"], r["n"], r["verdict"]) for r in rows if r["stratum"] == "multi_hop"]
    assert few == [(LC_LABEL, 3, "too few questions"), (RAG_LABEL, 3, "too few questions")]
    assert {r["verdict"] for r in rows if r["stratum"] == "aggregation"} == {
        f"choose {LC_LABEL} (by quality)"}
    chart = strata_chart(pd.DataFrame(rows), {LC_LABEL: "long_context", RAG_LABEL: "rag"}).to_dict()
    groups = {v["group"] for v in next(iter(chart["datasets"].values()))}
    assert groups == {"local (n = 10)", "multi_hop (n = 3)", "aggregation (n = 8)"}  # each bar says its n


def test_recommend_json_carries_each_stratum_with_its_n(con: duckdb.DuckDBPyConnection) -> None:
    """`recommend --json` gives the per-stratum lines `recommend` prints (cli/jsonout.py)."""
    import json

    from cli.jsonout import recommendation_json
    from compare.analysis.recommend import Recommendation
    from compare.analysis.workload import load_workload

    wl = load_workload(ROOT / "workloads" / "demo.toml")
    rec = Recommendation(wl, "m", "covered", [], [], None, [], ["r"],
                         strata=stratum_verdicts(con, "r", q=10, sheet=SHEET))
    got = json.loads(json.dumps(recommendation_json(rec), default=str))["strata"]
    assert [(s["stratum"], s["n"], s["too_few"]) for s in got] == [
        ("local", 10, False), ("multi_hop", 3, True), ("aggregation", 8, False)]
    assert got[0]["run_id"] == "r" and got[0]["decision"]["decided_by"] == "quality"
    assert got[1]["line"].startswith("stratum multi_hop (n = 3")


def test_one_stratum_only_gives_no_per_stratum_verdict(tmp_path: Path) -> None:
    paired.fill(tmp_path / "d.duckdb", [1.0, 0.0], [1.0, 1.0], docs=2)  # no tags, no spans: unknown
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as c:
        assert set(run_strata(c, "r")["stratum"]) == {"unknown"}
        assert stratum_verdicts(c, "r", sheet=SHEET) == []


async def _words(text: str) -> int:
    return len(text.split())


async def test_needle_and_babi_carry_evidence_spans_where_the_facts_landed() -> None:
    from corpora.babi import build_babi_corpus
    from corpora.needle import build_needle_corpus

    needle = await build_needle_corpus(_words, lengths=[300], depths=[0.5])
    multi = await build_needle_corpus(_words, lengths=[400], variant="multi", n_needles=3)
    babi = await build_babi_corpus(_words, tasks=(2,), lengths=[400], n_stories=2)
    for corpus in (needle, multi, babi):
        for ex in corpus.examples:
            text = corpus.documents[ex.doc_ids[0]].text
            spans = json.loads(str(ex.tags["evidence_spans"]))
            assert spans == [[sp.start, sp.end] for sp in ex.evidence] and spans  # the same places
            assert all(text[s:e].endswith(".") for s, e in spans)  # each a whole planted sentence
    (ex,) = needle.examples
    (s, e), = json.loads(str(ex.tags["evidence_spans"]))
    assert needle.documents[ex.doc_ids[0]].text[s:e].startswith("The special magic number for ")
    assert assign(ex.tags, span_need(evidence_spans(ex.tags))).stratum == "local"
    assert all(len(json.loads(str(x.tags["evidence_spans"]))) == 2 for x in babi.examples)  # two facts each

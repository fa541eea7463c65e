"""Each question's own headline metric (issue 14, items 5 and 8), from corpus to verdict.

Metric values are worked out by hand in the comments; stores are built by hand (real DuckDB)
except the last test, which runs a real corpus through the real server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from compare.analysis import summary
from compare.analysis.oracle import strategy_table
from compare.analysis.recommend import recommend
from compare.analysis.workload import Workload
from compare.core.metrics import METRICS, primary_metric
from compare.core.types import Example
from compare.report.assemble import quality_metric
from compare.store.db import Store
from corpora.jsonl import CorpusError, load_jsonl_dir
from corpora.leval import load_leval
from tests.fixtures.headline import FAILED, store_rows
from tests.fixtures.headline import pred as _pred
from tests.fixtures.headline import tpo as _tpo

HEADLINE = METRICS["headline"]


# item 5: the corpus declares it, the headline uses it --------------------------------------------
def test_tpo_headline_is_the_picked_letter_not_a_substring() -> None:
    c, a = _tpo("C"), _tpo("A")
    assert c.tags["primary_metric"] == "choice_accuracy" == primary_metric(c)
    # The bug: "contains" finds the gold letter C inside a reply that rejects it ...
    assert METRICS["contains"](c, _pred("Not C, it is D")) == 1.0
    # ... and gold "A" normalises to "" (an article), so contains can never score it.
    assert METRICS["contains"](a, _pred("A")) is None
    assert HEADLINE(c, _pred("Not C, it is D")) == 0.0
    assert HEADLINE(c, _pred("C")) == 1.0 and HEADLINE(c, _pred("(C) to introduce")) == 1.0
    assert HEADLINE(a, _pred("A")) == 1.0 and HEADLINE(a, _pred("Answer: A")) == 1.0
    assert HEADLINE(a, _pred("B.")) == 0.0
    assert HEADLINE(a, FAILED) == 0.0  # a failure answers nothing


def test_every_leval_subset_declares_its_metric() -> None:
    expected = {"quality": "choice_accuracy", "tpo": "choice_accuracy", "sci_fi": "true_false",
                "topic_retrieval_longchat": "contains", "natural_question": "token_f1",
                "financial_qa": "token_f1", "multidoc_qa": "token_f1"}
    for subset, metric in expected.items():
        corpus = load_leval(subset, max_docs=2)  # type: ignore[arg-type]
        assert {e.tags["primary_metric"] for e in corpus.examples} == {metric}, subset
    sci = load_leval("sci_fi", max_docs=1).examples[0]  # gold "True"
    assert HEADLINE(sci, _pred("True.")) == 1.0 and HEADLINE(sci, _pred("False, not true")) == 0.0
    nq = load_leval("natural_question", max_docs=1).examples[0]  # gold "April 25 , 2018"
    # token F1: reply [it, started, april, 25] vs gold [april, 25, 2018]: 2 common, p = 2/4,
    # r = 2/3, F1 = 2 (1/3) / (7/6) = 4/7.
    assert HEADLINE(nq, _pred("It started April 25")) == pytest.approx(4 / 7)


def _exam_file(tmp_path: Path) -> Path:
    """An L-Eval exam-style file (like coursera): several correct letters per question."""
    path = tmp_path / "coursera.jsonl"
    q = "Which are prime?\nA. 2\nB. 4\nC. 5\nD. 7"
    path.write_text(json.dumps({"input": "Primes: 2, 3, 5, 7. Four is not prime.",
                                "instructions": [q, "Which is even?\nA. 3\nB. 4\nC. 5\nD. 7"],
                                "outputs": ["ACD", "B"]}) + "\n")
    return path


def test_multi_select_golds_are_their_own_kind(tmp_path: Path) -> None:
    multi, single = load_jsonl_dir(_exam_file(tmp_path)).examples
    assert multi.answers == ("ACD",) and multi.tags["answer_format"] == "letters"
    assert multi.tags["primary_metric"] == "choice_set_match"
    assert single.answers == ("B",) and single.tags["primary_metric"] == "choice_accuracy"
    f1 = METRICS["choice_set_f1"]
    # The default model lists every letter: {A,B,C,D} is not {A,C,D}. Set F1: p = 3/4, r = 1,
    # F1 = 2 (3/4) / (7/4) = 6/7; never a substring credit.
    assert HEADLINE(multi, _pred("A, B, C, D")) == 0.0
    assert f1(multi, _pred("A, B, C, D")) == pytest.approx(6 / 7)
    for reply in ("ACD", "A, C and D.", "D, A, C", "Answer: A C D", "(A) 2\n(C) 5\n(D) 7"):
        assert HEADLINE(multi, _pred(reply)) == 1.0, reply
    # {A, C}: p = 1, r = 2/3, F1 = (4/3) / (5/3) = 4/5.
    assert HEADLINE(multi, _pred("AC")) == 0.0 and f1(multi, _pred("AC")) == pytest.approx(0.8)
    assert HEADLINE(multi, _pred("I think it is the primes")) == 0.0  # nothing picked
    assert METRICS["choice_accuracy"](multi, _pred("A")) is None  # not a one-letter question
    assert METRICS["choice_set_match"](single, _pred("B")) is None


def test_jsonl_directory_multi_select_and_declared_metric(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "documents.jsonl").write_text(json.dumps({"id": "d", "text": "Some text."}) + "\n")
    rows: list[dict[str, Any]] = [
        {"id": "q1", "doc_ids": ["d"], "question": "Pick", "answers": ["C, A"], "choices": ["x", "y", "z"]},
        {"id": "q2", "doc_ids": ["d"], "question": "Say", "answers": ["a long answer"],
         "tags": {"primary_metric": "token_f1"}},
        {"id": "q3", "doc_ids": ["d"], "question": "Short", "answers": ["heron"]},
    ]
    (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    q1, q2, q3 = load_jsonl_dir(root).examples
    assert (q1.answers, q1.tags["primary_metric"]) == (("AC",), "choice_set_match")
    assert q2.tags["primary_metric"] == "token_f1" and q3.tags["primary_metric"] == "contains"
    rows[1]["tags"] = {"primary_metric": "evidence_recall"}
    rows[0]["answers"] = ["AA"]
    (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CorpusError) as info:
        load_jsonl_dir(root)
    msg = str(info.value)
    assert "questions.jsonl:1: answer 'AA' names a choice twice" in msg
    assert "questions.jsonl:2: tags.primary_metric 'evidence_recall' is not an answer metric" in msg


# the store: queryable in SQL; summary and report read the headline ------------------------------
def test_summary_and_report_use_the_headline(tmp_path: Path) -> None:
    c, a = _tpo("C"), _tpo("A")
    nq = load_leval("natural_question", max_docs=1).examples[0]
    db = tmp_path / "h.duckdb"
    store_rows(db, {
        # LC: C wrong ("Not C, it is D"), A right, nq F1 4/7 -> headline (0 + 1 + 4/7) / 3 = 11/21.
        "long_context": [(c, _pred("Not C, it is D")), (a, _pred("A")), (nq, _pred("It started April 25"))],
        # RAG: C right, A failed (0), nq exact (F1 1) -> (1 + 0 + 1) / 3 = 2/3.
        "rag": [(c, _pred("C")), (a, FAILED), (nq, _pred("April 25, 2018"))],
    })
    with duckdb.connect(str(db), read_only=True) as con:
        got = dict(con.execute("SELECT example_id, primary_metric FROM examples ORDER BY 1").fetchall())
        assert got == {c.id: "choice_accuracy", a.id: "choice_accuracy", nq.id: "token_f1"}
        rows = {r["pipeline"]: r for r in summary.pipeline_summary(con, ["r"])}
        assert rows["long_context"]["headline"] == pytest.approx(11 / 21)
        assert rows["rag"]["headline"] == pytest.approx(2 / 3)
        # contains would have said LC 1.0 on the C question (and nothing on A).
        assert quality_metric(list(rows.values())) == "headline"
        assert summary.headline_metric(con, ["r"]) == "headline"
        assert summary.primary_metrics(con, ["r"]) == {"choice_accuracy": 2, "token_f1": 1}


def test_old_examples_gain_their_primary_metric_on_rescore(tmp_path: Path) -> None:
    from compare.run.rescore import rescore

    c = _tpo("C")
    db = tmp_path / "old.duckdb"
    store_rows(db, {"long_context": [(c, _pred("Not C, it is D"))]})
    with Store(db) as s:  # as written before the column existed
        s.con.execute("UPDATE examples SET primary_metric = NULL, tags = json_object('answer_format', "
                      "'letter', 'choices', json_extract_string(tags, '$.choices'))")
        s.con.execute("DELETE FROM scores WHERE metric = 'headline'")
        assert rescore(s, None, ["headline"]) == 1
        assert s.con.execute("SELECT primary_metric FROM examples").fetchall() == [("choice_accuracy",)]
        assert s.con.execute("SELECT value FROM scores WHERE metric = 'headline'").fetchall() == [(0.0,)]


# item 8: the oracle is a ceiling for graded metrics too ------------------------------------------
def _free(i: int) -> Example:
    return Example(f"f{i}", ("d",), "Who?", ("jean valjean mayor",), tags={"answer_format": "free",
                                                                          "primary_metric": "token_f1"})


def test_oracle_takes_the_best_graded_answer_before_the_cheapest(tmp_path: Path) -> None:
    db = tmp_path / "o.duckdb"
    f1, f2 = _free(1), _free(2)
    store_rows(db, {
        # f1: LC F1 = 2 (2/2)(2/3) / (1 + 2/3) = 0.8 at 1000 tokens; RAG wrong (0) at 200 tokens.
        # f2: both exact (1.0): the cheaper RAG.
        "long_context": [(f1, _pred("jean valjean", prompt=1000)), (f2, _pred("Jean Valjean, mayor", 1000))],
        "rag": [(f1, _pred("Javert", prompt=200)), (f2, _pred("jean valjean mayor", prompt=200))],
    })
    with duckdb.connect(str(db), read_only=True) as con:
        t = strategy_table(con, ["r"], metric="token_f1").set_index("kind")
    o = t.loc["oracle"]
    # Ceiling: f1 from LC (0.8), f2 from RAG (1.0): quality 0.9, tokens (1000 + 200) / 2 = 600.
    assert o["quality"] == pytest.approx(0.9)
    assert (o["prompt_tokens_mean"], o["share_long_context"]) == (600.0, 0.5)
    assert o["quality"] >= max(t.loc["long_context", "quality"], t.loc["rag", "quality"])
    assert t.loc["long_context", "quality"] == pytest.approx(0.9)  # (0.8 + 1) / 2
    assert t.loc["rag", "quality"] == pytest.approx(0.5)


def test_oracle_pays_for_the_cache_it_uses_and_defaults_to_the_headline(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    f1 = _free(1)
    # Both exact. LC is warm: 1000 prompt tokens, 950 from the prefix cache -> 50 computed; RAG
    # computes all of its 200. The warm answer's cache was paid by no request of this run, so the
    # oracle may not take it at 50 (issue 24 item 8: it pays for the caches it uses): it prices it
    # as the cold request it would have been, 1000, and RAG is cheaper either way (was (1.0, 1000.0)).
    store_rows(db, {"long_context": [(f1, _pred("jean valjean mayor", prompt=1000, cached=950))],
                "rag": [(f1, _pred("jean valjean mayor", prompt=200))]})
    with duckdb.connect(str(db), read_only=True) as con:
        default = strategy_table(con, ["r"]).set_index("kind").loc["oracle"]
        raw = strategy_table(con, ["r"], cost_by="prompt_tokens").set_index("kind").loc["oracle"]
    assert (default["share_long_context"], default["prompt_tokens_mean"]) == (0.0, 200.0)
    assert (raw["share_long_context"], raw["prompt_tokens_mean"]) == (0.0, 200.0)
    assert default["quality"] == 1.0


# recommend ranks by the headline -----------------------------------------------------------------
def test_recommend_judges_quality_by_the_headline(tmp_path: Path) -> None:
    docs = {"doc_tokens": 1000.0}
    c = Example("c", ("d",), "q", ("C",), tags={**_tpo("C").tags, **docs})
    a = Example("a", ("d",), "q", ("A",), tags={**_tpo("A").tags, **docs})
    db = tmp_path / "rec.duckdb"
    # LC: "Not C, it is D" (0), "B" (0): headline 0, though contains finds the C (1.0; the A
    # question has no findable gold, so contains leaves it out). RAG: "C", "A": headline 1.
    store_rows(db, {"long_context": [(c, _pred("Not C, it is D", 1000)), (a, _pred("B", 1000))],
                "rag": [(c, _pred("C", 200)), (a, _pred("A", 200))]})
    wl: dict[str, Any] = {"documents": {"tokens": [1000]}, "questions_per_doc": 1, "requests_per_s": 0.001,
                          "latency": {"p95_ms": 1e7}, "quality_floor": 0.5}
    rec = recommend(db, Workload.model_validate(wl), ["r"])
    by_kind = {r["kind"]: r for r in rec.rows}
    assert by_kind["long_context"]["quality"] == 0.0 and by_kind["rag"]["quality"] == 1.0
    assert rec.winner == by_kind["rag"]["strategy"]
    old = recommend(db, Workload.model_validate({**wl, "quality_metric": "contains"}), ["r"])
    assert {r["kind"]: r for r in old.rows}["long_context"]["quality"] == 1.0


# a real run: importer -> runner -> store -> summary, on the served model -------------------------
async def test_a_real_exam_run_scores_the_headline(tmp_path: Path, backend: Any) -> None:
    from compare.run.runner import run
    from compare.run.spec import RunSpec
    from pipelines.long_context import LongContextPipeline

    corpus = load_jsonl_dir(_exam_file(tmp_path))
    with Store(tmp_path / "run.duckdb") as store:
        await run(run_id="exam", corpus=corpus, pipelines=[LongContextPipeline(max_tokens=16)],
                  backend=backend, store=store, metric_names=RunSpec().metrics,
                  run_meta={"model": "m", "base_url": None, "spec": {}, "corpus_params": {}, "server": {}})
        got = store.con.execute(
            "SELECT e.example_id, e.primary_metric, p.answer, p.error, h.value, s.value "
            "FROM examples e JOIN predictions p USING (run_id, example_id) "
            "JOIN scores h ON h.run_id = p.run_id AND h.example_id = p.example_id AND h.metric = 'headline' "
            "JOIN scores s ON s.run_id = p.run_id AND s.example_id = p.example_id "
            "AND s.metric = e.primary_metric ORDER BY 1"
        ).fetchall()
        rows = summary.pipeline_summary(store.con, ["exam"])
    assert [(r[0], r[1]) for r in got] == [("coursera-000-q000", "choice_set_match"),
                                           ("coursera-000-q001", "choice_accuracy")]
    for ex_id, _, answer, error, head, own in got:
        assert error is None and head == own and head in (0.0, 1.0), (ex_id, answer)
    assert rows[0]["headline"] == pytest.approx(sum(r[4] for r in got) / 2)
    print("\n" + "\n".join(f"{r[0]}: {r[2]!r} -> {r[4]}" for r in got))

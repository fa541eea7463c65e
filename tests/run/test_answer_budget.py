"""The answer budget fits the corpus's golds and is recorded; cut answers are counted and flagged
in the verdict (issue 25 item 1)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from compare.analysis.answer_checks import answer_caveats, cut_answers
from compare.analysis.summary import pipeline_labels
from compare.analysis.verdict import verdict_for
from compare.core.types import Example
from compare.run.execute import build_pipeline
from compare.run.limits import FREE_FLOOR, MAX_BUDGET, SHORT_FLOOR, answer_budget, with_answer_budget
from corpora.jsonl import load_jsonl_dir
from pipelines.long_context import LongContextSpec
from pipelines.rag_spec import RagSpec
from pipelines.routers import SelfRouteSpec
from tests.fixtures.headline import pred, store_rows

FREE_TEXT = Path(__file__).resolve().parents[1] / "fixtures" / "free_text"


async def _words(text: str) -> int:
    """A token counter for the budget's arithmetic: one token per word (the run uses the served
    model's /tokenize; the rule under test is what it does with the counts)."""
    return len(text.split())


async def test_the_budget_is_twice_the_longest_gold_with_a_floor() -> None:
    corpus = load_jsonl_dir(FREE_TEXT)
    got = await answer_budget(corpus.examples, _words)
    # Longest gold: m2's 25 words -> 50, below the free-text floor 128 (4 free-text questions).
    assert got["longest_gold_tokens"] == 25 and got["free_text_questions"] == 4
    assert got["answer_tokens"] == FREE_FLOOR == 128
    long_gold = replace(corpus.examples[1], answers=(" ".join(["word"] * 100),))
    assert (await answer_budget([long_gold], _words))["answer_tokens"] == 200
    huge = replace(long_gold, answers=(" ".join(["word"] * 1000),))
    assert (await answer_budget([huge], _words))["answer_tokens"] == MAX_BUDGET
    # Short answers keep the cap they were measured with; a multi-value gold counts every value.
    needle = Example("n", ("d",), "q", ("4827163",))
    assert (await answer_budget([needle], _words))["answer_tokens"] == SHORT_FLOOR
    multi = Example("n", ("d",), "q", tuple(f"v{i}" for i in range(20)), tags={"answer_format": "all"})
    assert (await answer_budget([multi], _words))["answer_tokens"] == 40


def test_the_budget_applies_where_the_spec_did_not_set_a_cap() -> None:
    assert build_pipeline(with_answer_budget(LongContextSpec(), 128)).params()["max_tokens"] == 128
    assert build_pipeline(with_answer_budget(RagSpec(max_tokens=64), 128)).params()["max_tokens"] == 64
    routed = with_answer_budget(SelfRouteSpec(), 128)
    assert isinstance(routed, SelfRouteSpec)
    assert routed.rag["max_tokens"] == 128 and routed.long_context["max_tokens"] == 128
    inner = build_pipeline(routed).params()["rag"]
    assert isinstance(inner, dict) and inner["max_tokens"] == 128


def test_cut_answers_are_counted_and_flagged_in_the_verdict(tmp_path: Path) -> None:
    db = tmp_path / "cut.duckdb"
    gold = ("Because the cost structure is far too high.",)
    ex = [Example(f"q{i}", ("d",), "Why?", gold) for i in range(3)]
    cut = pred("Why has Oclaro begun resizing the company? Oclaro has begun")
    assert cut.completion is not None
    cut = replace(cut, completion=replace(cut.completion, finish_reason="length"))
    store_rows(db, {"long_context": [(ex[0], cut), (ex[1], cut), (ex[2], pred("Its costs are too high."))],
                    "rag": [(e, pred("The costs.")) for e in ex]})
    with duckdb.connect(str(db), read_only=True) as con:
        label = pipeline_labels(con, ["r"]).set_index("pipeline")["label"]["long_context"]
        assert cut_answers(con, ["r"]) == [
            {"run_id": "r", "label": label, "answered": 3, "cut": 2, "max_tokens": None}]
        line = f"{label}: 2 of 3 answers were cut at the answer budget (finish_reason = length)"
        assert answer_caveats(con, ["r"])[0].startswith(line)
        assert any(c.startswith(line) for c in verdict_for(con, "r").caveats)


@pytest.mark.slow
def test_a_run_records_its_budget_and_each_answers_stop(server_url: str, tmp_path: Path) -> None:
    """End to end on the shared vLLM: a tiny free-text corpus gets the free-text budget (not the
    old 32), recorded in corpus_params and as every row's max_tokens; finish_reason is stored."""
    from compare import api
    from compare.run.spec import validate_spec

    root = tmp_path / "c"
    root.mkdir()
    text = ("Oclaro's cost structure is far too high and its cash burn rate is unsustainable, so it "
            "has begun resizing the company. Pete Mangan becomes CFO on November 11.")
    (root / "documents.jsonl").write_text(json.dumps({"id": "d", "text": text}) + "\n")
    (root / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in (
        {"id": "o1", "doc_ids": ["d"], "question": "Who becomes CFO?", "answers": ["Pete Mangan"]},
        {"id": "o3", "doc_ids": ["d"], "question": "Why is Oclaro resizing?",
         "answers": ["Its cost structure is far too high and its cash burn rate is unsustainable."]})) + "\n")
    spec = validate_spec({"corpus": {"kind": "jsonl", "path": str(root)},
                          "pipelines": [{"kind": "long_context"}], "metrics": ["headline"]})
    db = tmp_path / "b.duckdb"
    result = api.run(spec, db, base_url=server_url, say=lambda m: None)
    assert (result.done, result.errors) == (2, 0)
    with duckdb.connect(str(db), read_only=True) as con:
        (params,) = con.execute("SELECT corpus_params FROM runs").fetchone() or (None,)
        rows = con.execute("SELECT example_id, params, finish_reason FROM predictions ORDER BY 1").fetchall()
    budget = json.loads(params)["answer_budget"]
    assert budget["answer_tokens"] == FREE_FLOOR and budget["free_text_questions"] == 1
    assert 10 <= budget["longest_gold_tokens"] <= 30  # the served model's tokens of o3's gold
    assert [json.loads(p)["max_tokens"] for _, p, _ in rows] == [FREE_FLOOR, FREE_FLOOR]
    assert all(f in ("stop", "length") for _, _, f in rows)

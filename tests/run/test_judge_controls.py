"""A judge is checked before it is believed (issue 25 item 4): controls built from the corpus,
their accuracy stored with the judge model and prompt hash, the judge kept out of the headline,
the verdict and a recommendation's ranking below the threshold. The corpus is the small
free-text set of tests/fixtures/free_text (2 real documents cut to ~1.5k tokens, golds of one
word to two sentences, one unanswerable question per document)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from compare.analysis import judgements
from compare.analysis.answer_checks import answer_caveats, judge_for_ranking
from compare.core.types import Example
from compare.report.assemble import build_report
from compare.run import judge
from compare.store.db import Store
from corpora.jsonl import load_jsonl_dir
from tests.fixtures.headline import FAILED, store_rows
from tests.fixtures.headline import pred as _pred

FREE_TEXT = Path(__file__).resolve().parents[1] / "fixtures" / "free_text"


def _free_text() -> list[Example]:
    return [ex for ex in load_jsonl_dir(FREE_TEXT).examples if judge.applies(ex)]


def test_controls_are_built_from_the_corpus() -> None:
    examples = _free_text()
    assert [ex.id for ex in examples] == ["m2", "m4", "o3", "o4"]  # free text by the one rule
    got = {(c.example.id, c.kind): (c.reply, c.expected) for c in judge.controls(examples)}
    m2, m4, o3 = examples[0], examples[1], examples[2]
    assert got[("m2", "gold")] == (m2.answers[0], 1.0)
    assert got[("m2", "question")] == (m2.question, 0.0)
    assert got[("m2", "empty")] == ("", 0.0)
    assert got[("m2", "dont_know")] == (judge.DONT_KNOW, 0.0)
    # Another question's gold: the next one that has an answer (m4's "The text does not say." is
    # not a fact to be wrong with), wrapping round.
    assert got[("m2", "other_gold")] == (o3.answers[0], 0.0)
    assert got[("o4", "other_gold")] == (m2.answers[0], 0.0)
    # Where the gold says the text has no answer, "I don't know" is the right reply.
    assert judge.says_no_answer(m4) and got[("m4", "dont_know")] == (judge.DONT_KNOW, 1.0)
    assert not judge.says_no_answer(o3)
    assert len(got) == 4 * 5
    assert len(judge.controls(examples, limit=2)) == 10


def test_skipped_rows_are_named_with_their_reason() -> None:
    ex = {e.id: e for e in load_jsonl_dir(FREE_TEXT).examples}
    assert judge.skip_reason(ex["m2"]) is None
    assert judge.skip_reason(ex["m1"]) == "scored by contains, not free text (use --metric or --all)"
    assert judge.skip_reason(ex["m1"], "contains") is None and judge.skip_reason(ex["m2"], "contains") == \
        "scored by token_f1"
    assert judge.skip_reason(ex["m1"], judge.ALL) is None
    with pytest.raises(ValueError, match="not an answer metric"):
        judge.check_scope("evidence_recall")


def _control_rows(model: str, right: int, wrong: int) -> list[dict[str, Any]]:
    """`right` controls answered as expected and `wrong` not, for run "r"."""
    return [{"run_id": "r", "example_id": f"c{i}", "control": "gold", "judge_model": model,
             "prompt_hash": judge.PROMPT_HASH, "reply": "x", "expected": 1.0, "verdict": float(i < right),
             "raw": "CORRECT" if i < right else "INCORRECT", "judged_at": "2026-01-03"}
            for i in range(right + wrong)]


def _controls(store: Store, model: str, right: int, wrong: int) -> None:
    store.insert("judge_controls", _control_rows(model, right, wrong))


def _judged(store: Store, ex_id: str, pipe: str, verdict: float, model: str) -> None:
    store.insert("judgements", [{"run_id": "r", "example_id": ex_id, "pipeline": pipe,
                                 "params_hash": pipe[:6], "judge_model": model,
                                 "prompt_hash": judge.PROMPT_HASH, "verdict": verdict, "raw": "x",
                                 "judged_at": "2026-01-02"}])


def _declared(i: int) -> Example:
    return Example(f"j{i}", ("d",), f"Question {i}?", ("jean valjean mayor",),
                   tags={"primary_metric": "judge"})


@pytest.mark.parametrize(("right", "wrong", "in_headline"), [(9, 1, True), (8, 2, False)])
def test_a_judge_below_the_threshold_stays_out_of_the_headline(
        tmp_path: Path, right: int, wrong: int, in_headline: bool) -> None:
    db = tmp_path / "h.duckdb"
    # j1 answered "jean valjean" (token F1 0.8: p = 1, r = 2/3); j2 failed (0 in the headline).
    store_rows(db, {"long_context": [(_declared(1), _pred("jean valjean")), (_declared(2), FAILED)]})
    with Store(db) as s:
        _controls(s, "big", right, wrong)
        _judged(s, "j1", "long_context", 0.0, "big")
        judge.restore_scores(s, ["r"])
        head = dict(s.con.execute(
            "SELECT example_id, value FROM scores WHERE metric = 'headline'").fetchall())
        # 9 of 10 = 90% is trusted: the headline is the verdict (0); 8 of 10 is not: token F1 stays.
        assert head == ({"j1": 0.0, "j2": 0.0} if in_headline else {"j1": pytest.approx(0.8), "j2": 0.0})
    with duckdb.connect(str(db), read_only=True) as con:
        (acc,) = judgements.control_accuracy(con, ["r"])
        assert (acc.judge_model, acc.n, acc.correct, acc.trusted) == ("big", 10, right, in_headline)
        caveats = answer_caveats(con, ["r"])
        assert caveats == [acc.note()] and f"control accuracy {right / 10:.0%} ({right} of 10)" in caveats[0]
        if in_headline:
            assert "its verdicts are used" in caveats[0]
            ranked = judge_for_ranking(con, ["r"], "judge")
            assert ranked == [f"quality is the judge's verdicts: {acc.note()}"]
        else:  # a recommendation refuses to rank on it, naming the fix
            assert "kept out of the headline, the verdict and recommendations; fix: judge with a stronger" \
                in caveats[0]
            with pytest.raises(ValueError, match=r"refusing to rank on quality_metric 'judge'.*80%.*--model"):
                judge_for_ranking(con, ["r"], "judge")
        assert judge_for_ranking(con, ["r"], "headline") == [
            f"the headline's 2 judge-declared question(s): {acc.note()}"]
        assert judge_for_ranking(con, ["r"], "token_f1") == []
    # the report: the judge column's header and the judge table carry the control record
    (quality,) = [sec for sec in build_report(db, ["r"]).sections if sec.title == "Quality"]
    page = "".join(quality.before + quality.after)
    short = f"controls {right / 10:.0%} of 10" + ("" if in_headline else ", kept out")
    assert f"<th>judge ({short})</th>" in page and f"<td class=\"l\">{short}</td>" in page


def test_one_judge_per_column_and_a_failed_row_scores_zero(tmp_path: Path) -> None:
    db = tmp_path / "one.duckdb"
    store_rows(db, {"long_context": [(_declared(1), _pred("jean valjean")), (_declared(2), FAILED)],
                    "rag": [(_declared(1), _pred("cosette")), (_declared(2), _pred("mayor"))]})
    with Store(db) as s:
        # "old" judged every row earlier; "new" judged only long_context's j1, later.
        for ex_id, pipe in (("j1", "long_context"), ("j1", "rag"), ("j2", "rag")):
            _judged(s, ex_id, pipe, 1.0, "old")
        s.insert("judgements", [{"run_id": "r", "example_id": "j1", "pipeline": "long_context",
                                 "params_hash": "long_c", "judge_model": "new",
                                 "prompt_hash": judge.PROMPT_HASH, "verdict": 0.0, "raw": "x",
                                 "judged_at": "2026-01-05"}])
        assert judge.restore_scores(s, ["r"]) == 1
        got = s.con.execute(
            "SELECT example_id, pipeline, value FROM scores WHERE metric = 'judge'").fetchall()
        assert got == [("j1", "long_context", 0.0)]  # "old"'s verdicts never fill the gaps


class _Replies:
    """A judge endpoint that answers from a script, for the bookkeeping only (which rows are
    asked, skipped, stored as 0); the real model is asked in the test below."""

    model = "scripted"

    async def complete(self, messages: Any, *, max_tokens: int, temperature: float = 0.0) -> Any:
        from compare.core.types import Completion

        reply = messages[1]["content"].split("Candidate answer: ")[1].split("\n")[0]
        text = "CORRECT" if "jean" in reply else "INCORRECT"
        return Completion(text, 10, 0, 1, 0.01, 0.01, ())


async def test_judge_says_what_it_skipped_and_scores_a_failed_row_zero(tmp_path: Path) -> None:
    db = tmp_path / "skip.duckdb"
    short = Example("s1", ("d",), "Which number?", ("4827163",))
    store_rows(db, {"long_context": [(_declared(1), _pred("jean valjean")), (_declared(2), FAILED),
                                     (short, _pred("4827163"))]})
    with Store(db) as s:
        got = await judge.judge_runs(s, _Replies(), ["r"], control_questions=1)  # type: ignore[arg-type]
        assert (got.asked, got.failed_rows, got.reused) == (1, 1, 0)
        assert got.skipped == {"scored by contains, not free text (use --metric or --all)": 1}
        assert "skipped 1 row(s): scored by contains" in "\n".join(got.lines())
        assert got.controls is not None and got.controls.n == 4  # j1's controls (no other gold)
        scores = dict(s.con.execute("SELECT example_id, value FROM scores WHERE metric = 'judge'").fetchall())
        assert scores == {"j1": 1.0, "j2": 0.0}
        again = await judge.judge_runs(s, _Replies(), ["r"], "contains")  # type: ignore[arg-type]
        assert (again.asked, again.skipped) == (1, {"scored by judge": 2})


async def test_the_judge_is_checked_on_real_replies(tmp_path: Path, backend: Any) -> None:
    """The shared real vLLM judges the controls of two free-text questions (10 short prompts,
    another question's gold taken from the third) and three answers;
    the stored accuracy is computed from its real replies."""
    db = tmp_path / "real.duckdb"
    examples = {ex.id: ex for ex in load_jsonl_dir(FREE_TEXT).examples}
    rows = [(examples["m2"], _pred("Because he told Napoleon he was looking at a good man.")),
            (examples["m4"], _pred("The text does not say.")),
            (examples["o3"], _pred("Its costs are too high.")), (examples["m1"], _pred("1804"))]
    store_rows(db, {"long_context": rows})
    with Store(db) as s:
        result = await judge.judge_runs(s, backend, ["r"], control_questions=2)
        stored = s.con.execute("SELECT example_id, control, expected, verdict, raw, judge_model, prompt_hash "
                               "FROM judge_controls ORDER BY 1, 2").fetchall()
    assert len(stored) == 10 and {r[0] for r in stored} == {"m2", "m4"}
    assert all(r[5] == backend.model and r[6] == judge.PROMPT_HASH for r in stored)
    for _, _, _, verdict, raw, _, _ in stored:
        assert raw.strip() and verdict == judge.parse_verdict(raw)
    right = sum(r[3] == r[2] for r in stored)  # an unparsed reply (None) is never right
    assert result.controls is not None
    assert (result.controls.n, result.controls.correct) == (10, right)
    assert result.controls.trusted == (right >= 9)
    assert result.lines()[0] == result.controls.note()
    skipped = {"scored by contains, not free text (use --metric or --all)": 1}
    assert (result.asked, result.skipped) == (3, skipped)
    print("", *(f"{r[0]} {r[1]} expected {r[2]}: {r[4]!r}" for r in stored), result.controls.note(), sep="\n")


def test_the_default_judge_is_not_the_model_that_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    from compare.serving import weights

    def listed(*installed: str) -> list[dict[str, object]]:
        return [{"name": n, "chat": m.chat, "installed": n in installed, "prepared": False}
                for n, m in weights.MODELS.items()]

    small, big = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
    monkeypatch.setattr(weights, "list_models", lambda: listed(small, big))
    assert judge.default_judge(small) == (big, None)
    monkeypatch.setattr(weights, "list_models", lambda: listed(small))  # as on this machine
    name, note = judge.default_judge(small)
    assert name == small and note is not None and f"install {big}" in note and "judges its own" in note


def test_the_command_refuses_a_bad_scope(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from main import app

    db = tmp_path / "x.duckdb"
    for args, said in ((["--metric", "contains", "--all"], "give --metric or --all, not both"),
                       (["--metric", "evidence_recall"], "not an answer metric")):
        out = CliRunner().invoke(app, ["judge", "--db", str(db), *args])
        assert out.exit_code == 2 and said in out.output, out.output


@pytest.mark.parametrize("right", [8, 9])
def test_recommend_refuses_to_rank_on_a_judge_below_the_threshold(tmp_path: Path, right: int) -> None:
    """Issue 33 item 3, through `recommend` itself (the store: the recommend tests' held-out set,
    every row judged by "big")."""
    from compare.analysis.recommend import recommend
    from tests.analysis.test_recommend import _held_out, workload
    from tests.fixtures.cost import RAG

    db = tmp_path / "held.duckdb"
    _held_out(db)
    with Store(db) as s:
        rows = s.con.execute("SELECT run_id, example_id FROM predictions").fetchall()
        s.insert("judge_controls", [{**c, "run_id": "held"} for c in _control_rows("big", right, 10 - right)])
        s.insert("judgements", [{"run_id": r, "example_id": e, "pipeline": RAG[0], "params_hash": RAG[1],
                                 "judge_model": "big", "prompt_hash": judge.PROMPT_HASH, "verdict": 1.0,
                                 "raw": "CORRECT", "judged_at": "2026-01-02"} for r, e in rows])
        judge.restore_scores(s, ["held"])
    wl = workload(documents={"tokens": [15000, 20000]}, quality_metric="judge")
    if right < 9:
        with pytest.raises(ValueError, match=r"refusing to rank.*accuracy 80%.*fix: judge with a stronger"):
            recommend(db, wl)
    else:
        rec = recommend(db, wl)
        assert rec.rows and rec.rows[0]["quality"] == pytest.approx(1.0)
        assert any(a.startswith("quality is the judge's verdicts: judge big") and "90% (9 of 10)" in a
                   for a in rec.assumptions)

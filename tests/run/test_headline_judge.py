"""The LLM judge (issue 14, item 7): verdicts parsed, stored once, restored without asking,
compared with token F1. Expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb
import pytest

from compare.analysis import judgements
from compare.core.types import Example
from compare.report.assemble import write_report
from compare.run import judge
from compare.run.rescore import rescore
from compare.store import judge_rows
from compare.store.db import Store
from tests.fixtures.headline import FAILED, store_rows
from tests.fixtures.headline import pred as _pred
from tests.fixtures.headline import tpo as _tpo


def test_verdicts_are_the_first_word_said() -> None:
    assert judge.parse_verdict("CORRECT") == 1.0
    assert judge.parse_verdict("Incorrect.") == 0.0
    assert judge.parse_verdict("INCORRECT - not correct") == 0.0  # the first verdict counts
    assert judge.parse_verdict("The answer is correct") == 1.0
    assert judge.parse_verdict("I cannot tell") is None and judge.parse_verdict("") is None
    assert len(judge.PROMPT_HASH) == 12


def _free(i: int) -> Example:
    return Example(f"f{i}", ("d",), f"Question {i}?", ("jean valjean mayor",),
                   tags={"answer_format": "free", "primary_metric": "token_f1"})


# token F1 of each reply against "jean valjean mayor" (3 tokens):
# f1 "jean valjean mayor of town": 3 common, p = 3/5, r = 1 -> 0.75
# f2 "cosette": 0;  f3 "jean valjean": p = 1, r = 2/3 -> 0.8;  f4 "mayor": p = 1, r = 1/3 -> 0.5
REPLIES = {1: "jean valjean mayor of town", 2: "cosette", 3: "jean valjean", 4: "mayor"}
F1 = {1: 0.75, 2: 0.0, 3: 0.8, 4: 0.5}


def _judged(store: Store, i: int, verdict: float | None, model: str = "j", at: str = "2026-01-02") -> None:
    store.con.execute("INSERT INTO judgements VALUES ('r', ?, 'long_context', 'long_c', ?, ?, ?, ?, ?)",
                      [f"f{i}", model, judge.PROMPT_HASH, verdict, "raw", at])


def test_agreement_with_token_f1_and_restoring_without_asking(tmp_path: Path) -> None:
    db = tmp_path / "j.duckdb"
    store_rows(db, {"long_context": [(_free(i), _pred(r)) for i, r in REPLIES.items()]})
    with Store(db) as s:
        got = dict(s.con.execute("SELECT example_id, value FROM scores WHERE metric = 'token_f1'").fetchall())
        assert got == pytest.approx({f"f{i}": v for i, v in F1.items()})
        # Verdicts: f1 yes (F1 0.75: agree), f2 no (0: agree), f3 no (0.8: disagree), f4 yes (0.5: agree).
        for i, v in {1: 1.0, 2: 0.0, 3: 0.0, 4: 1.0}.items():
            _judged(s, i, v)
        _judged(s, 3, 1.0, model="older", at="2026-01-01")  # an older judge's verdict: not the score
        assert judge.restore_scores(s) == 4
        # `ragvslc score` drops nothing and asks nobody: the judge scores come back from the table.
        s.con.execute("DELETE FROM scores WHERE metric = 'judge'")
        rescore(s, None, ["contains", "token_f1"])
        scores = dict(s.con.execute("SELECT example_id, value FROM scores WHERE metric = 'judge'").fetchall())
        assert scores == {"f1": 1.0, "f2": 0.0, "f3": 0.0, "f4": 1.0}
    with duckdb.connect(str(db), read_only=True) as con:
        a = judgements.agreement(con, ["r"]).iloc[0]
        assert judgements.judges(con, ["r"]) == [("j", judge.PROMPT_HASH, 4), ("older", judge.PROMPT_HASH, 1)]
    assert (a["n"], a["judge_mean"]) == (4, 0.5)
    assert a["token_f1_mean"] == pytest.approx((0.75 + 0 + 0.8 + 0.5) / 4)
    assert a["agreement"] == pytest.approx(3 / 4)
    # Pearson: judge - 0.5 = (.5, -.5, -.5, .5); F1 - 0.5125 = (.2375, -.5125, .2875, -.0125);
    # cov = (.11875 + .25625 - .14375 - .00625) = .225; var_j = 1; var_f = .0564+.2627+.0827+.0002.
    dev = [0.75 - 0.5125, 0 - 0.5125, 0.8 - 0.5125, 0.5 - 0.5125]
    assert a["correlation"] == pytest.approx(0.225 / math.sqrt(1.0 * sum(d * d for d in dev)))
    page = write_report(db, tmp_path / "report", images=False).html.read_text()
    assert "LLM judge vs token F1" in page and f"j (prompt {judge.PROMPT_HASH}, 4 verdicts)" in page
    # Its controls beside the judge column: none were asked of "j", so it is not believed (issue 25).
    note = f"judge j (prompt {judge.PROMPT_HASH}): no controls were asked, below 90%: shown, but kept out"
    assert note in page
    assert "Quality is the headline: each question scored by its own metric" in page
    assert "token_f1 (4 questions)" in page


async def test_the_served_model_judges_once(tmp_path: Path, backend: Any) -> None:
    db = tmp_path / "real.duckdb"
    c = _tpo("C")
    store_rows(db, {"long_context": [(_free(1), _pred(REPLIES[1])), (_free(2), _pred(REPLIES[2])),
                                 (_free(3), FAILED), (c, _pred("C"))]})
    with Store(db) as s:
        first = await judge.judge_runs(s, backend, ["r"], control_questions=1)
        # f1 and f2 are answered free text; f3 failed (0 without asking); tpo is multiple choice.
        assert (first.asked, first.reused, first.failed, first.failed_rows) == (2, 0, 0, 1)
        assert first.skipped == {"scored by choice_accuracy, not free text (use --metric or --all)": 1}
        assert (first.judge_model, first.prompt_hash) == (backend.model, judge.PROMPT_HASH)
        # f1's controls: gold, question, empty, I don't know (no other question's gold)
        assert first.controls is not None and first.controls.n == 4
        rows = s.con.execute("SELECT example_id, judge_model, prompt_hash, verdict, raw FROM judgements "
                             "ORDER BY 1").fetchall()
        assert [r[:3] for r in rows] == [("f1", backend.model, judge.PROMPT_HASH),
                                          ("f2", backend.model, judge.PROMPT_HASH),
                                          ("f3", backend.model, judge.PROMPT_HASH)]
        for _, _, _, verdict, raw in rows[:2]:
            assert raw.strip() and verdict == judge.parse_verdict(raw)
        assert rows[2][3:] == (0.0, judge_rows.FAILED_RAW)
        again = await judge.judge_runs(s, backend, ["r"], control_questions=1)
        assert (again.asked, again.reused) == (0, 3)
        scored = s.con.execute(
            "SELECT example_id, value FROM scores WHERE metric = 'judge' ORDER BY 1").fetchall()
        assert scored == [(r[0], r[3]) for r in rows]
    print("\n" + "\n".join(f"{r[0]}: {r[4]!r} -> {r[3]}" for r in rows))

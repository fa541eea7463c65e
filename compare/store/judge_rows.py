"""The LLM judge's rows in the store: what is to be judged, its verdicts, its controls, and the
`judge` (and judge-declared `headline`) scores restored from them.

The SQL lives here, beside Store, so that compare/run/judge.py asks and decides and never writes
a transaction or rebuilds a stored question by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compare.core.types import Example
from compare.store.db import Store

JUDGE_SCORE = "judge"  # the verdicts' metric name in `scores` (compare/analysis/judgements.py)
FAILED_RAW = "(request failed: scored 0 without asking)"  # a failed row's stored judgement


@dataclass(frozen=True)
class JudgeRow:
    """One stored prediction with its question, and whether this judge already ruled on it."""

    key: tuple[str, str, str, str]  # run_id, example_id, pipeline, params_hash
    answer: str
    error: str | None
    example: Example
    done: bool


def run_list(store: Store, run_ids: Sequence[str] | None) -> list[str]:
    if run_ids:
        return list(run_ids)
    return [str(r[0]) for r in store.con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]


def rows_to_judge(store: Store, run_ids: Sequence[str] | None, judge_model: str, prompt_hash: str
                  ) -> list[JudgeRow]:
    """Every prediction of these runs in run order, each with its stored question; `done` when
    this judge and prompt already ruled on it (a failed row's 0 is redone once it is answered)."""
    rows = store.con.execute(
        "SELECT p.run_id, p.example_id, p.pipeline, p.params_hash, p.answer, p.error, "
        "(j.run_id IS NOT NULL AND NOT (j.raw = ? AND p.error IS NULL)) AS done "
        "FROM predictions p LEFT JOIN judgements j ON j.run_id = p.run_id AND j.example_id = p.example_id "
        "AND j.pipeline = p.pipeline AND j.params_hash = p.params_hash AND j.judge_model = ? "
        "AND j.prompt_hash = ? WHERE list_contains(?, p.run_id) ORDER BY p.run_id, p.seq",
        [FAILED_RAW, judge_model, prompt_hash, run_list(store, run_ids)],
    ).fetchall()
    examples: dict[str, dict[str, Example]] = {}
    out = []
    for run_id, ex_id, pipe, h, answer, error, done in rows:
        if run_id not in examples:
            examples[run_id] = store.examples(run_id)
        out.append(JudgeRow((run_id, ex_id, pipe, h), answer, error, examples[run_id][ex_id], bool(done)))
    return out


def add_judgements(store: Store, rows: Sequence[Mapping[str, Any]]) -> None:
    store.insert("judgements", rows, verb="INSERT OR REPLACE")


def controls_done(store: Store, run_id: str, judge_model: str, prompt_hash: str) -> set[tuple[str, str]]:
    """(example_id, control) pairs this judge and prompt already answered for the run."""
    rows = store.con.execute(
        "SELECT example_id, control FROM judge_controls WHERE run_id = ? AND judge_model = ? "
        "AND prompt_hash = ?", [run_id, judge_model, prompt_hash]).fetchall()
    return {(str(a), str(b)) for a, b in rows}


def add_controls(store: Store, rows: Sequence[Mapping[str, Any]]) -> None:
    store.insert("judge_controls", rows, verb="INSERT OR REPLACE")


def latest_judges(store: Store, run_ids: Sequence[str] | None) -> dict[str, tuple[str, str]]:
    """Per run, the judge (model, prompt hash) that ruled last: the one the `judge` column holds."""
    rows = store.con.execute(
        "SELECT run_id, arg_max(judge_model, judged_at), arg_max(prompt_hash, judged_at) FROM "
        "(SELECT run_id, judge_model, prompt_hash, max(judged_at) AS judged_at FROM judgements "
        " WHERE list_contains(?, run_id) GROUP BY ALL) GROUP BY run_id",
        [run_list(store, run_ids)],
    ).fetchall()
    return {str(r): (str(m), str(h)) for r, m, h in rows}


def write_judge_scores(store: Store, judges: Mapping[str, tuple[str, str]],
                       in_headline: Sequence[str], run_ids: Sequence[str] | None) -> int:
    """Replace these runs' `judge` scores with the verdicts of each run's one judge (`judges`:
    run -> model, prompt hash; never a mix of judges in one column). The `headline` of a
    judge-declared question is its token F1 (a failed row 0) except in the runs `in_headline`
    (a judge that passed its controls), where it is that judge's verdict. Returns judge scores."""
    runs = run_list(store, run_ids)
    pairs = [{"run_id": r, "judge_model": m, "prompt_hash": h} for r, (m, h) in judges.items() if r in runs]
    key = "s.run_id = p.run_id AND s.example_id = p.example_id AND s.pipeline = p.pipeline " \
          "AND s.params_hash = p.params_hash"
    with store.transaction():
        store.con.execute("DELETE FROM scores WHERE metric = ? AND list_contains(?, run_id)",
                          [JUDGE_SCORE, runs])
        store.con.execute("CREATE OR REPLACE TEMP TABLE chosen_judge (run_id VARCHAR, judge_model VARCHAR, "
                          "prompt_hash VARCHAR, headline BOOLEAN)")
        store.insert("chosen_judge", [{**p, "headline": p["run_id"] in in_headline} for p in pairs])
        store.con.execute(
            "INSERT INTO scores SELECT j.run_id, j.example_id, j.pipeline, j.params_hash, ?, j.verdict "
            "FROM judgements j JOIN chosen_judge c USING (run_id, judge_model, prompt_hash) "
            "SEMI JOIN predictions p USING (run_id, example_id, pipeline, params_hash)", [JUDGE_SCORE])
        # The headline of judge-declared questions: token F1 (0 for a failed row), then the
        # trusted judge's verdict where it gave one.
        store.con.execute(
            f"""UPDATE scores s SET value = CASE WHEN p.error IS NOT NULL THEN 0.0 ELSE f.value END
            FROM predictions p JOIN examples e USING (run_id, example_id)
            LEFT JOIN scores f ON f.run_id = p.run_id AND f.example_id = p.example_id
                AND f.pipeline = p.pipeline AND f.params_hash = p.params_hash AND f.metric = 'token_f1'
            WHERE {key} AND s.metric = 'headline' AND e.primary_metric = ? AND list_contains(?, s.run_id)""",
            [JUDGE_SCORE, runs])
        store.con.execute(
            f"""UPDATE scores s SET value = j.value
            FROM scores j, predictions p, examples e, chosen_judge c
            WHERE {key} AND j.run_id = p.run_id AND j.example_id = p.example_id AND j.pipeline = p.pipeline
                AND j.params_hash = p.params_hash AND e.run_id = p.run_id AND e.example_id = p.example_id
                AND c.run_id = p.run_id AND c.headline AND s.metric = 'headline' AND j.metric = ?
                AND j.value IS NOT NULL AND e.primary_metric = ?""",
            [JUDGE_SCORE, JUDGE_SCORE])
        store.con.execute("DROP TABLE chosen_judge")
    row = store.con.execute("SELECT count(*) FROM scores WHERE metric = ? AND list_contains(?, run_id)",
                            [JUDGE_SCORE, runs]).fetchone()
    return int(row[0]) if row else 0

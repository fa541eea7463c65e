"""The LLM judge in the report (issue 25): its column's header and its own table, each with the
judge's control record beside its numbers, so a judge's score is never read without how it did
on the controls built from the corpus (compare/analysis/judgements.py)."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from compare.analysis import judgements, summary
from compare.report.html import note, table


def judge_parts(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the quality table's `judge` header, the judge subsection's HTML parts); (None, []) when
    no judge ruled on these runs."""
    asked = judgements.judges(con, run_ids)
    if not asked:
        return None, []
    scored = judgements.scored_by_run(con, run_ids)  # each run's judge scored once, used thrice
    controls = judgements.controls_by_run(scored)
    labels = summary.pipeline_labels(con, list(run_ids))
    rows = judgements.agreement(con, run_ids).merge(labels, on=["run_id", "pipeline", "params_hash"])
    rows = [{**r, "controls": controls.get(str(r["run_id"]))} for r in rows.to_dict("records")]
    who = "; ".join(f"{m} (prompt {h}, {n} verdicts)" for m, h, n in asked)
    parts = [
        "<h3>LLM judge vs token F1 (free-text questions)</h3>",
        note(f"Judge: {who}. Agreement: share of rows where token F1 >= 0.5 and the judge's CORRECT say "
             "the same; correlation: Pearson of the two."),
        note(" ".join(judgements.notes_of(scored, len(run_ids) > 1))),  # its controls, in words
        table(rows, {"label": "pipeline", "n": "n", "judge_mean": "judge", "token_f1_mean": "token F1",
                     "agreement": "agreement", "correlation": "correlation", "controls": "judge's controls"},
              left=("label", "controls")),
    ]
    return judgements.judge_header(controls), parts

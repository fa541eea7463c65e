"""Checks on the answers behind a quality number, said as the verdict's caveats: answers cut by
the answer budget, and the judge's control record where a judge scored the run.

A reply that stopped at its token cap (`finish_reason = "length"`) is scored as if it were the
model's whole answer; a handful of them moves a free-text mean more than pipelines differ, and
nothing in the scores shows it. So cut answers are counted per pipeline and named.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb

from compare.analysis.judgements import JUDGE_METRIC, judge_notes, score_judge
from compare.analysis.summary import pipeline_labels


def cut_answers(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[dict[str, object]]:
    """Per pipeline with at least one cut answer: its label, answered rows, cut rows and the cap
    (its params' max_tokens, where it has one)."""
    rows = con.execute(
        "SELECT run_id, pipeline, params_hash, any_value(params), count(*) FILTER (WHERE error IS NULL), "
        "count(*) FILTER (WHERE error IS NULL AND finish_reason = 'length') FROM predictions "
        "WHERE list_contains(?, run_id) GROUP BY ALL "
        "HAVING count(*) FILTER (WHERE finish_reason = 'length') > 0 ORDER BY ALL",
        [list(run_ids)]).fetchall()
    if not rows:
        return []
    labels = pipeline_labels(con, list(run_ids)).set_index(["run_id", "pipeline", "params_hash"])["label"]
    out: list[dict[str, object]] = []
    for run_id, pipe, h, params, answered, cut in rows:
        cap = json.loads(params).get("max_tokens") if params else None
        out.append({"run_id": run_id, "label": labels.get((run_id, pipe, h), pipe), "answered": int(answered),
                    "cut": int(cut), "max_tokens": cap})
    return out


def answer_caveats(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[str]:
    """The verdict's lines on cut answers and on the judge (one each)."""
    out = []
    for r in cut_answers(con, run_ids):
        cap = f" of {r['max_tokens']} tokens" if r["max_tokens"] else ""
        out.append(f"{r['label']}: {r['cut']} of {r['answered']} answers were cut at the answer budget{cap} "
                   "(finish_reason = length) and scored as given: raise max_tokens or let the corpus's "
                   "budget apply")
    return out + judge_notes(con, run_ids)


def judge_for_ranking(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], metric: str) -> list[str]:
    """Before a recommendation ranks on a judge's verdicts: the judge's control record as a line
    to show; a ValueError naming the fix when the judge is below JUDGE_TRUST (or never checked).
    A headline that holds judge-declared questions shows the record too (below the threshold
    the headline already holds token F1 for them, so it ranks)."""
    if metric not in (JUDGE_METRIC, "headline"):
        return []
    got = score_judge(con, run_ids)
    if metric == JUDGE_METRIC:
        if got is None:
            raise ValueError("quality_metric 'judge': no judge verdicts in these runs; run `ragvslc judge`")
        if not got.trusted:
            raise ValueError(f"refusing to rank on quality_metric 'judge': {got.note()}")
        return [f"quality is the judge's verdicts: {got.note()}"]
    row = con.execute("SELECT count(*) FROM examples WHERE list_contains(?, run_id) AND primary_metric = ?",
                      [list(run_ids), JUDGE_METRIC]).fetchone()
    declared = int(row[0]) if row else 0
    if got is None or not declared:
        return []
    return [f"the headline's {declared} judge-declared question(s): {got.note()}"]

"""The report's "By kind of question" section (issue 30): per stratum of the run's questions
(compare/analysis/strata.py), each pipeline's quality with its 95% interval and n, its p50 and
cost over that stratum's questions, and the decision's rules applied to the stratum alone
(compare/analysis/verdict.py `stratum_verdicts`); one chart of quality per stratum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import duckdb
import pandas as pd

from compare.analysis.verdict import StratumVerdict, stratum_verdicts
from compare.report.charts import _colour, by_run, with_colours, with_run_param
from compare.report.html import Section, note, table

COLUMNS = {"run_id": "run", "stratum": "stratum", "n": "n", "sources": "from", "label": "pipeline",
           "quality_text": "quality", "ci": "95% interval", "p50_ms": "retrieval+E2E p50 ms",
           "usd_per_1k": "$/1k queries", "verdict": "verdict"}


def strata_rows(run_id: str, verdicts: Sequence[StratumVerdict]) -> list[dict[str, Any]]:
    """One row per stratum and pipeline (the numbers behind the table and the chart)."""
    rows = []
    for sv in verdicts:
        d = sv.decision
        if sv.too_few:
            verdict = "too few questions"
        elif d.choice is None:
            verdict = "nothing separates them"
        else:
            verdict = f"choose {d.choice} (by {d.decided_by})"
        for f in d.pipelines:
            q = f.quality
            rows.append({"run_id": run_id, "stratum": sv.stratum, "n": sv.n,
                         "sources": ", ".join(f"{k} {v}" for k, v in sv.sources.items()),
                         "label": f.label, "quality": None if q is None else q.value,
                         "quality_text": None if q is None else f"{q.value:.3f}",
                         "lo": None if q is None else q.lo, "hi": None if q is None else q.hi,
                         "ci": None if q is None else f"[{q.lo:.3f}, {q.hi:.3f}] (n = {q.n})",
                         "p50_ms": None if f.p50_ms is None else f.p50_ms.value,
                         "usd_per_1k": f.usd_per_1k, "verdict": verdict})
    return rows


def strata_chart(rows: pd.DataFrame, kinds: Mapping[str, str], multi_run: bool = False) -> alt.TopLevelMixin:
    """Quality per stratum and pipeline, with each 95% interval: where each strategy breaks."""
    data = with_colours(rows.dropna(subset=["quality"]), kinds)
    data = data.assign(group=data["stratum"] + " (n = " + data["n"].astype(str) + ")")
    base = alt.Chart(data, title="Quality by kind of question (95% intervals)")
    x = alt.X("group:N", title="stratum (kind of question)", sort=list(dict.fromkeys(data["group"])),
              axis=alt.Axis(labelAngle=0))
    bars = base.mark_bar().encode(
        x=x, xOffset="label:N", y=alt.Y("quality:Q", title="mean headline", scale=alt.Scale(domain=[0, 1])),
        color=_colour(data), tooltip=["stratum", "label", "quality", "ci", "n"])
    rules = base.mark_rule().encode(x=x, xOffset="label:N", y="lo:Q", y2="hi:Q")
    chart = (bars + rules).properties(width=420, height=260)
    return with_run_param(by_run(chart, multi_run), multi_run)


def strata_section(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], names: Mapping[str, str],
                   kinds: Mapping[str, str], sheet: Any, q: int
                   ) -> tuple[Section | None, alt.TopLevelMixin | None]:
    """The section and its chart; (None, None) when no run has questions of two or more strata."""
    rows, lines = [], []
    for run_id in run_ids:
        verdicts = stratum_verdicts(con, run_id, q, sheet)
        rows += strata_rows(names.get(run_id, run_id) if len(run_ids) > 1 else run_id, verdicts)
        lines += [sv.line for sv in verdicts]
    if not rows:
        return None, None
    sec = Section("By kind of question", before=[note(
        "Each question's stratum: local (one place), multi_hop (a few), aggregation (many, or counting), "
        "whole (no part short of all); from a corpus label, its evidence spans or the retrieval probe "
        "(ragvslc context-need). Per stratum the decision's rules apply to its questions alone; a "
        "stratum with too few questions says so.")])
    cols = dict(COLUMNS)
    if len(run_ids) == 1:
        del cols["run_id"]
    sec.before.append(table(rows, cols, left=("run_id", "stratum", "sources", "label", "verdict")))
    sec.after += [note(line) for line in lines]
    frame = pd.DataFrame([r for r in rows if r.get("label")])
    if frame.empty:
        return sec, None
    sec.charts.append("quality_by_stratum")
    return sec, strata_chart(frame, kinds, len(run_ids) > 1)

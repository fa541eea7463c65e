"""The answer first: for this run, which strategy wins on quality, on latency and on cost at the
workload's questions per document, with the break-even and the caveats, in plain words.

Everything here is read off numbers the report already shows (the summary rows, quality per
length, the cost table and its break-even pairs): the verdict restates the evidence, it never
computes a second version of it. A difference too small to call is said to be a tie, not a win.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from compare.analysis.cache_checks import leak_caveats, prefix_hit_rates

# NoLiMa's rule (Modarressi et al. 2025): the effective length is the longest tested context at
# which a model keeps at least 85% of its score at the shortest tested length.
EFFECTIVE_SHARE = 0.85
QUALITY_TIE = 0.02  # headline means closer than this are a tie (a few questions flip that much)
LATENCY_TIE = 0.05  # latencies within 5% of each other are a tie


@dataclass(frozen=True)
class EffectiveLength:
    label: str
    length: float | None  # None: no length keeps 85% (or the shortest scores 0)
    tested_max: float
    base_score: float | None

    def words(self) -> str:
        if self.base_score is None or self.base_score <= 0:
            return f"{self.label}: n/a (scores 0 at the shortest length)"
        if self.length is None:
            return f"{self.label}: below the shortest tested length"
        more = "+" if self.length >= self.tested_max else ""
        return f"{self.label}: {self.length:,.0f}{more} tokens"


@dataclass
class Verdict:
    """One run's answer in sentences, and the effective lengths side by side."""

    run_id: str
    metric: str | None
    lines: list[str] = field(default_factory=list)
    effective: list[EffectiveLength] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


def effective_lengths(by_length: pd.DataFrame, metric: str) -> list[EffectiveLength]:
    """Per pipeline label: the longest tested length, walking up from the shortest, at which the
    score is still >= 85% of the shortest length's (a later recovery does not count: a context
    length the pipeline failed at below it is not one it handles)."""
    out: list[EffectiveLength] = []
    if metric not in by_length:
        return out
    for label, g in by_length.dropna(subset=["length"]).groupby("label", sort=True):
        g = g.sort_values("length")
        scores = [float(s) if s is not None and not pd.isna(s) else 0.0 for s in g[metric]]
        lengths = [float(x) for x in g["length"]]
        base = scores[0] if scores else None
        best: float | None = None
        if base is not None and base > 0:
            for length, s in zip(lengths, scores, strict=True):
                if s < EFFECTIVE_SHARE * base:
                    break
                best = length
        out.append(EffectiveLength(str(label), best, max(lengths) if lengths else 0.0, base))
    return out


def _best(rows: Sequence[Mapping[str, Any]], key: str, higher: bool, tie: float, absolute: bool
          ) -> tuple[list[str], float | None]:
    """Labels that win on `key` (several: a tie within `tie`, absolute or relative)."""
    vals = [(str(r["label"]), float(r[key])) for r in rows if r.get(key) is not None and not _nan(r[key])]
    if not vals:
        return [], None
    top = max(v for _, v in vals) if higher else min(v for _, v in vals)
    margin = tie if absolute else tie * abs(top)
    return [lab for lab, v in vals if abs(v - top) <= margin], top


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _say(kind: str, winners: list[str], value: float | None, unit: str) -> str:
    if not winners or value is None:
        return f"{kind}: not measured"
    who = winners[0] if len(winners) == 1 else "tie between " + ", ".join(winners)
    return f"{kind}: {who} ({value:{unit}})"


def run_verdict(
    run_id: str,
    summary: Sequence[Mapping[str, Any]],
    by_length: pd.DataFrame,
    metric: str | None,
    cost_rows: Sequence[Mapping[str, Any]] = (),
    pairs: Sequence[Mapping[str, Any]] = (),
    q: int = 10,
) -> Verdict:
    """The verdict of one run: quality (the headline), p50 and p95 latency (retrieval + E2E and
    E2E), cost per query at `q` questions per document in each price view, the break-even."""
    rows = [r for r in summary if r.get("run_id") == run_id]
    v = Verdict(run_id, metric)
    if metric:
        winners, top = _best(rows, metric, True, QUALITY_TIE, True)
        v.lines.append(_say(f"quality ({metric}, over every asked question)", winners, top, ".3f"))
    for key, kind in (("total_p50_ms", "latency p50 (retrieval + E2E)"), ("e2e_p95_ms", "latency p95 (E2E)")):
        winners, top = _best(rows, key, False, LATENCY_TIE, False)
        v.lines.append(_say(kind, winners, top, ",.0f") + (" ms" if top is not None else ""))
    mine = [r for r in cost_rows if r.get("run_id", run_id) == run_id]
    for view in dict.fromkeys(r["view"] for r in mine):
        in_view = [r for r in mine if r["view"] == view]
        winners, top = _best(in_view, f"usd_per_query_q{q}", False, LATENCY_TIE, False)
        v.lines.append(_say(f"cost at {q} questions per document ({view})", winners, top, ".3g")
                       + (" $/query" if top is not None else ""))
    labels = {str(r["label"]) for r in rows}
    for p in pairs:
        if p.get("a") in labels and p.get("b") in labels and p.get("break_even_q"):
            v.lines.append(f"break-even ({p['view']}): {p['a']} vs {p['b']} at {p['break_even_q']:.3g} "
                           f"questions per document; below it {p['cheaper_below']} is cheaper, "
                           f"above it {p['cheaper_above']}")
    if metric:
        v.effective = effective_lengths(by_length[by_length["run_id"] == run_id], metric)
    v.caveats = _caveats(rows)
    return v


def _caveats(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if r.get("errors"):
            out.append(f"{r['label']}: {r['errors']} of {r['asked']} requests failed "
                       "(scored 0 in the headline)")
    asked = {r.get("asked") for r in rows}
    if len(asked) > 1:
        out.append("pipelines were asked different numbers of questions: compare with care")
    small = [r for r in rows if (r.get("asked") or 0) < 20]
    if small:
        out.append(f"only {min(r.get('asked') or 0 for r in small)} questions per pipeline: one or two "
                   "answers more or less move the quality by several points")
    return out


def add_cache_facts(v: Verdict, con: duckdb.DuckDBPyConnection) -> Verdict:
    """The server's prefix-cache hit rate, and cold requests that were not cold (flagged)."""
    rate = prefix_hit_rates(con, [v.run_id]).get(v.run_id)
    if rate is not None:
        v.lines.append(f"prefix cache: {rate:.0%} of prompt tokens served from cache (server /metrics)")
    v.caveats += leak_caveats(con, [v.run_id])
    return v


def verdict_for(con: duckdb.DuckDBPyConnection, run_id: str, q: int = 10) -> Verdict:
    """The verdict of one stored run, priced with the sheet the report would choose (what the
    terminal prints after a run; the report builds the same from the numbers it shows)."""
    from compare.analysis import prices, summary
    from compare.analysis.cost import break_even, cost_table

    rows = summary.pipeline_summary(con, [run_id])
    lengths = summary.by_length(con, [run_id])
    metric = summary.headline_metric(con, [run_id]) if rows else None
    metric = metric if metric and any(r.get(metric) is not None for r in rows) else None
    sheet = prices.choose_sheet(con, [run_id], None).sheet
    table = cost_table(con, [run_id], sheet, (q,))
    return add_cache_facts(run_verdict(run_id, rows, lengths, metric, table, break_even(table), q), con)

"""The answer first: for this run, which strategy wins on quality, on latency and on cost at the
workload's questions per document, with the break-even and the caveats, in plain words.

Everything here is read off numbers the report already shows (the summary rows, quality per
length, the cost table and its break-even pairs) and off the run's decision
(compare/analysis/decision.py: paired quality tests, intervals, the break-even's interval): the
verdict restates the evidence, it never computes a second version of it. Quality is a win only
when the paired difference's 95% interval excludes 0 (else "no detectable difference at n = ..."),
and every line states its n (issue 24).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd
from scipy import stats as sst

from compare.analysis.answer_checks import answer_caveats
from compare.analysis.cache_checks import leak_caveats, prefix_hit_rates
from compare.analysis.decision import BreakEven, Decision, PipelineFacts, break_even_words
from compare.analysis.stats import ALPHA, Interval

# NoLiMa's rule (Modarressi et al. 2025): the effective length is the longest tested context at
# which a model keeps at least 85% of its score at the shortest tested length.
EFFECTIVE_SHARE = 0.85
# Measured only on a grid: at least MIN_LENGTHS lengths with MIN_PER_LENGTH questions each (ten
# documents of ten lengths, one question each, are noise along a length axis, not a trend).
MIN_LENGTHS = 3
MIN_PER_LENGTH = 5
COST_TIE = 0.05  # the cost line: pipelines within 5% of the cheapest are named together (the
# decision line, not this, says whether the cost difference is real: bootstrap over documents)


@dataclass(frozen=True)
class EffectiveLength:
    label: str
    length: float | None  # None: no length keeps 85% (or the shortest scores 0, or not measured)
    tested_max: float
    base_score: float | None
    not_measured: str | None = None  # why no effective length is stated (too few lengths/questions)

    def words(self) -> str:
        if self.not_measured:
            return f"{self.label}: not measured ({self.not_measured})"
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
    decision: Decision | None = None  # the one decision line, first wherever the verdict is shown


def effective_lengths(by_length: pd.DataFrame, metric: str) -> list[EffectiveLength]:
    """Per pipeline label: the longest tested length, walking up from the shortest, at which the
    score is still >= 85% of the shortest length's (a later recovery does not count: a context
    length the pipeline failed at below it is not one it handles)."""
    out: list[EffectiveLength] = []
    if metric not in by_length:
        return out
    for label, g in by_length.dropna(subset=["length"]).groupby("label", sort=True):
        g = g.sort_values("length")
        counts = g["n"] if "n" in g else pd.Series(0, index=g.index)
        enough = g[counts >= MIN_PER_LENGTH]
        if len(enough) < MIN_LENGTHS:
            why = (f"{len(g)} tested length(s), {len(enough)} with >= {MIN_PER_LENGTH} questions; needs "
                   f">= {MIN_LENGTHS}")
            out.append(EffectiveLength(str(label), None, float(g["length"].max()), None, why))
            continue
        g = enough
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


def _best(rows: Sequence[Mapping[str, Any]], key: str, tie: float) -> tuple[list[str], float | None]:
    """Labels lowest on `key` (several: a tie within `tie`, relative)."""
    vals = [(str(r["label"]), float(r[key])) for r in rows if r.get(key) is not None and not _nan(r[key])]
    if not vals:
        return [], None
    top = min(v for _, v in vals)
    return [lab for lab, v in vals if abs(v - top) <= tie * abs(top)], top


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _ci(i: Interval, fmt: str = ".3f") -> str:
    hi = "unbounded" if math.isinf(i.hi) else f"{i.hi:{fmt}}"
    lo = "unbounded" if math.isinf(i.lo) else f"{i.lo:{fmt}}"
    return f"[{lo}, {hi}]"


def quality_lines(d: Decision) -> list[str]:
    """Each pipeline's quality with its interval and n; then each against the best, paired."""
    scored = [f for f in d.pipelines if f.quality is not None]
    if not d.metric or not scored:
        return [f"quality ({d.metric or 'no metric'}): not measured"]
    each = "; ".join(f"{f.label} {f.quality.value:.3f} {_ci(f.quality)} (n = {f.quality.n}, "
                     f"{f.quality.method})" for f in scored if f.quality)
    lines = [f"quality ({d.metric}, 95% intervals): {each}"]
    p = d.paired
    if p is None:
        return lines
    a, b = d.candidate, d.versus
    if p.separated:
        who = a if p.diff.value > 0 else b
        lines.append(f"quality difference: {who} better by {abs(p.diff.value):.3f} {_ci(p.diff)} "
                     f"({p.test}, p = {p.p:.2g}, n = {p.diff.n})")
    else:
        more = (f"; ~{p.n_needed:,} questions would detect a gap of {abs(p.diff.value):.3f} at power 0.8"
                if p.n_needed else "")
        lines.append(f"quality difference: no detectable difference at n = {p.diff.n} between {a} and {b} "
                     f"({p.diff.value:+.3f} {_ci(p.diff)}, {p.test}, p = {p.p:.2g}){more}")
    return lines


def latency_lines(d: Decision) -> list[str]:
    """p50 and p95 on one basis (retrieval + E2E) with order-statistic intervals and n, the
    cold/partial/warm mix, and cold and warm p50 apart (what q questions per document mixes)."""
    def one(f: PipelineFacts, key: str) -> str:
        i = f.p50_ms if key == "p50" else f.p95_ms
        if i is None:
            return f"{f.label} not measured"
        if i.method == "max of n":
            return f"{f.label} max of {i.n}: {i.value:,.0f} ms (too few rows for a p95)"
        return f"{f.label} {i.value:,.0f} {_ci(i, ',.0f')} ms (n = {i.n})"

    p50 = "; ".join(one(f, "p50") for f in d.pipelines)
    p95 = "; ".join(one(f, "p95") for f in d.pipelines)
    lines = [f"latency p50 (retrieval + E2E, 95% intervals): {p50}",
             f"latency p95 (retrieval + E2E): {p95}"]
    for f in d.pipelines:
        mix = f.cache_mix
        if not mix.get("warm") and not mix.get("partial"):
            continue
        cold = "-" if f.cold_p50_ms is None else f"{f.cold_p50_ms:,.0f}"
        warm = "-" if f.warm_p50_ms is None else f"{f.warm_p50_ms:,.0f}"
        lines.append(f"latency mix {f.label}: {mix.get('cold', 0)} cold / {mix.get('partial', 0)} partial / "
                     f"{mix.get('warm', 0)} warm requests; p50 cold {cold} ms, warm {warm} ms; at {d.q} "
                     f"questions per document 1 of {d.q} is cold")
    return lines


def run_verdict(
    run_id: str,
    summary: Sequence[Mapping[str, Any]],
    by_length: pd.DataFrame,
    metric: str | None,
    cost_rows: Sequence[Mapping[str, Any]] = (),
    pairs: Sequence[Mapping[str, Any]] = (),
    q: int = 10,
    decision: Decision | None = None,
) -> Verdict:
    """The verdict of one run: quality (paired, from the decision), p50 and p95 latency
    (retrieval + E2E) with intervals, cost per query at `q` questions per document in each price
    view, the break-even (with its interval from the decision)."""
    rows = [r for r in summary if r.get("run_id") == run_id]
    v = Verdict(run_id, metric, decision=decision)
    if decision is not None:
        v.lines += quality_lines(decision) if metric else []
        v.lines += latency_lines(decision)
    elif metric:
        each = "; ".join(f"{r['label']} {float(r[metric]):.3f} (n = {r.get('asked')})" for r in rows
                         if r.get(metric) is not None)
        v.lines.append(f"quality ({metric}): {each} (not tested: no decision built)")
    mine = [r for r in cost_rows if r.get("run_id", run_id) == run_id]
    for view in dict.fromkeys(r["view"] for r in mine):
        in_view = [r for r in mine if r["view"] == view]
        winners, top = _best(in_view, f"usd_per_query_q{q}", COST_TIE)
        docs = max((int(r.get("docs") or 0) for r in in_view), default=0)
        derived = [f"{r['label']} ({r['warm_basis']})" for r in in_view
                   if str(r.get("warm_basis", "")).startswith("derived")]
        flag = f"; warm cost DERIVED for {', '.join(derived)}" if derived else ""
        who = "not measured" if not winners or top is None else (
            (winners[0] if len(winners) == 1 else "tie between " + ", ".join(winners))
            + f" ({top:.3g} $/query)")
        v.lines.append(f"cost at {q} questions per document ({view}, n = {docs} documents): {who}{flag}")
    labels = {str(r["label"]) for r in rows}
    be = decision.break_even if decision else None
    for p in pairs:
        if p.get("a") in labels and p.get("b") in labels and p.get("break_even_q"):
            if be is not None and decision and p.get("view") == decision.view and {p["a"], p["b"]} == {
                    be.cheaper_below, be.cheaper_above}:
                continue  # said below, with its interval
            pair_derived = any(str(r.get("warm_basis", "")).startswith("derived") for r in mine
                               if r["label"] in (p["a"], p["b"]) and r["view"] == p["view"])
            v.lines.append(f"break-even ({p['view']}): {p['a']} vs {p['b']} at {p['break_even_q']:.3g} "
                           f"questions per document{' (derived)' if pair_derived else ''}; below it "
                           f"{p['cheaper_below']} is cheaper, above it {p['cheaper_above']} (no interval)")
    if be is not None and decision is not None:
        v.lines.append(f"break-even ({decision.view})" + _break_even_text(be))
    if metric:
        v.effective = effective_lengths(by_length[by_length["run_id"] == run_id], metric)
    v.caveats = _caveats(rows) + (decision.notes if decision else [])
    return v


def _break_even_text(be: BreakEven) -> str:
    return ": " + break_even_words(be).lstrip("; ")


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
    v.caveats += answer_caveats(con, [v.run_id])  # cut answers, the judge's controls (issue 25)
    return v


def min_stratum_questions() -> int:
    """The fewest questions on which the exact McNemar test can ever separate two pipelines at
    ALPHA (every question discordant, all one way): below it a stratum's quality cannot decide,
    whatever the answers. Found with scipy, not hard-coded, so it follows ALPHA (6 at 0.05)."""
    n = 1
    while sst.binomtest(n, n).pvalue >= ALPHA:
        n += 1
    return n


@dataclass(frozen=True)
class StratumVerdict:
    """The decision's rules over one stratum's questions (issue 30), with where its stratum came from."""

    stratum: str
    n: int  # questions of the run in the stratum
    sources: dict[str, int]  # how many were placed by label / spans / probe / none
    decision: Decision  # the rules over the stratum's questions (its facts: quality, p50, cost)
    too_few: bool  # fewer questions than min_stratum_questions(): the decision is not stated
    line: str


def stratum_verdicts(con: duckdb.DuckDBPyConnection, run_id: str, q: int = 10, sheet: Any = None
                     ) -> list[StratumVerdict]:
    """Per stratum of the run's questions (compare/analysis/strata.py), in STRATA order: the decision
    made on its questions alone; a stratum with fewer than min_stratum_questions() says "too few
    questions" and still shows each pipeline's quality with its interval and n. Empty when the run's
    questions all share one stratum (its verdict is the run's)."""
    from compare.analysis import prices
    from compare.analysis.decision import decision_for
    from compare.analysis.strata import STRATA, run_strata

    strata = run_strata(con, run_id)
    if strata["stratum"].nunique() < 2:
        return []
    sheet = sheet if sheet is not None else prices.choose_sheet(con, [run_id], None).sheet
    need, out = min_stratum_questions(), []
    for name in STRATA:
        g = strata[strata["stratum"] == name]
        if g.empty:
            continue
        d = decision_for(con, run_id, q, sheet, subset=(set(g["example_id"]), set(g["doc_key"])))
        sources = {str(k): int(v) for k, v in g["source"].value_counts().sort_index().items()}
        head = f"stratum {name} (n = {len(g)}; from {', '.join(f'{k} {v}' for k, v in sources.items())})"
        if len(g) < need:
            each = "; ".join(f"{f.label} {f.quality.value:.3f} {_ci(f.quality)} (n = {f.quality.n})"
                             for f in d.pipelines if f.quality is not None)
            out.append(StratumVerdict(name, len(g), sources, d, True,
                                      f"{head}: too few questions to decide (the paired test needs >= "
                                      f"{need}); quality {each or 'not measured'}"))
            continue
        out.append(StratumVerdict(name, len(g), sources, d, False, f"{head}: {d.sentence}"))
    return out


def verdict_for(con: duckdb.DuckDBPyConnection, run_id: str, q: int = 10) -> Verdict:
    """The verdict of one stored run, priced with the sheet the report would choose (what the
    terminal prints after a run; the report builds the same from the numbers it shows)."""
    from compare.analysis import prices, summary
    from compare.analysis.cost import break_even, cost_table
    from compare.analysis.decision import decision_for

    rows = summary.pipeline_summary(con, [run_id])
    lengths = summary.by_length(con, [run_id])
    metric = summary.headline_metric(con, [run_id]) if rows else None
    metric = metric if metric and any(r.get(metric) is not None for r in rows) else None
    sheet = prices.choose_sheet(con, [run_id], None).sheet
    table = cost_table(con, [run_id], sheet, (q,))
    decision = decision_for(con, run_id, q, sheet)
    v = add_cache_facts(run_verdict(run_id, rows, lengths, metric, table, break_even(table), q, decision),
                        con)
    v.lines += [sv.line for sv in stratum_verdicts(con, run_id, q, sheet)]  # issue 30: per kind of question
    return v

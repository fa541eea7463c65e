"""The one decision line (issue 24 item 12): which pipeline to choose at q questions per document,
built once here and shown by the run's terminal output, `run --json`, the top of report.html and
`recommend`.

The rules, stated once (docs/guide.md's verdict section says the same):
- Quality is compared PAIRED, on the questions both pipelines were asked (a failed request
  scores 0 where its metric applies): 0/1 scores by the exact McNemar test, graded scores by a
  paired bootstrap (compare/analysis/stats.py). Each pipeline's quality carries a 95% interval
  (Wilson for 0/1, bootstrap for graded) and its n.
- The better quality is chosen only when the 95% interval of the paired difference excludes 0.
  Otherwise quality does not decide: the line says "no detectable difference at n = ..." and
  how many questions would detect a gap of the observed size at power 0.8.
- Then cost decides, at q: the cheaper pipeline is chosen only when a bootstrap over the
  documents both pipelines priced puts the whole 95% interval of the cost difference on one
  side of 0. Else nothing is chosen (choice None) and the line says what more data would decide.
- The break-even q* (where the cost curves cross) gets a bootstrap interval over those same
  documents; an interval spanning the whole tested range (1..Q_RANGE) is "undetermined".
- A cost resting on DERIVED warm requests (no warm request measured) says "derived".
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from compare.analysis import stats
from compare.analysis.cache_terms import NO_USE, CacheUse
from compare.analysis.doc_costs import usd_per_query
from compare.analysis.stats import Interval, Paired
from compare.store import views

Q_RANGE = (1, 1000)  # the tested range of questions per document (the report's cost curve spans it)

_SCORES = """
WITH s AS (
    SELECT s.*, p.error IS NOT NULL AS failed,
        bool_or(s.value IS NOT NULL) OVER (PARTITION BY s.run_id, s.example_id, s.metric) AS applies
    FROM scores s JOIN predictions p USING (run_id, example_id, pipeline, params_hash)
    WHERE s.run_id = $run AND s.metric = $metric
)
SELECT pipeline, params_hash, example_id,
    CASE WHEN failed AND applies AND NOT starts_with(metric, 'evidence') THEN 0.0 ELSE value END AS score
FROM s
"""
_LATENCY = """
SELECT pipeline, params_hash, total_ms, cache, example_id FROM request_rows
WHERE run_id = $run AND error IS NULL AND total_ms IS NOT NULL
"""


@dataclass(frozen=True)
class PipelineFacts:
    """One pipeline's numbers in the decision (None: not measured)."""

    label: str
    role: str | None
    quality: Interval | None
    usd_per_1k: float | None
    p50_ms: Interval | None  # retrieval + E2E, every successful request
    p95_ms: Interval | None  # "max of n" below stats.MIN_P95_ROWS rows
    cold_p50_ms: float | None
    warm_p50_ms: float | None
    cache_mix: dict[str, int] = field(default_factory=dict)  # cold / partial / warm request counts
    warm_basis: str = "n/a"  # the cost's warm requests: measured, derived, or n/a


@dataclass(frozen=True)
class BreakEven:
    """Where `cheaper_below` stops being cheaper: q* with its bootstrap interval over documents."""

    q: float | None  # the point estimate (None: the curves do not cross at q >= 1)
    lo: float
    hi: float
    cheaper_below: str | None
    cheaper_above: str | None
    documents: int
    undetermined: bool  # the interval spans the whole tested range
    derived: bool  # rests on derived warm costs


@dataclass(frozen=True)
class Decision:
    run_id: str
    q: int
    metric: str | None
    view: str | None
    choice: str | None  # None: nothing separates the pipelines
    candidate: str | None  # the pipeline compared (the choice, or the one that would be chosen)
    versus: str | None
    decided_by: str  # "quality", "cost", "only pipeline" or "undecided"
    pipelines: list[PipelineFacts]
    paired: Paired | None  # quality of `choice` (or the best) minus `versus`
    cost_diff: Interval | None  # $/query at q of the same pair, bootstrap over documents
    break_even: BreakEven | None
    sentence: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (inf as None), the shape `run --json`, `recommend --json` and the API share."""
        return _plain(asdict(self))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _plain(v.item())
    return v


def scores_wide(con: duckdb.DuckDBPyConnection, run_id: str, metric: str, labels: pd.DataFrame
                ) -> pd.DataFrame:
    """Per question (rows) and pipeline label (columns): the metric's score, NaN where it does
    not apply; a failed request scores 0 where the metric applies (as the summary's mean)."""
    long = con.execute(_SCORES, {"run": run_id, "metric": metric}).df()
    if long.empty:
        return pd.DataFrame()
    long = long.merge(labels, on=["pipeline", "params_hash"])
    return long.pivot_table(index="example_id", columns="label", values="score", aggfunc="first")


def compare_quality(wide: pd.DataFrame, a: str, b: str) -> Paired | None:
    """a minus b on the questions both were scored on."""
    both = wide[[a, b]].dropna()
    return stats.compare_paired(both[a].to_numpy(), both[b].to_numpy()) if len(both) else None


def latency_facts(con: duckdb.DuckDBPyConnection, run_id: str, labels: pd.DataFrame,
                  example_ids: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per label: p50 and p95 (retrieval + E2E) with intervals, cold and warm p50, the cache mix
    (over `example_ids` only where given: one stratum's questions)."""
    views.install(con)
    rows = con.execute(_LATENCY, {"run": run_id}).df().merge(labels, on=["pipeline", "params_hash"])
    if example_ids is not None:
        rows = rows[rows["example_id"].isin(list(example_ids))]
    out: dict[str, dict[str, Any]] = {}
    for label, g in rows.groupby("label"):
        ms = g["total_ms"].to_numpy(float)
        cold, warm = g.loc[g["cache"] == "cold", "total_ms"], g.loc[g["cache"] == "warm", "total_ms"]
        out[str(label)] = {
            "p50": stats.quantile_interval(ms, 0.5), "p95": stats.quantile_interval(ms, 0.95),
            "cold_p50": float(cold.median()) if len(cold) else None,
            "warm_p50": float(warm.median()) if len(warm) else None,
            "mix": {c: int((g["cache"] == c).sum()) for c in ("cold", "partial", "warm")},
        }
    return out


def _doc_terms(docs: pd.DataFrame, labels: pd.DataFrame, view: str) -> dict[str, pd.DataFrame]:
    """Per label: its documents' cost terms in `view` (compare/analysis/doc_costs.py), by document."""
    if docs.empty:
        return {}
    d = docs[docs["view"] == view].merge(labels, on=["pipeline", "params_hash"])
    return {str(k): g.set_index("doc_key") for k, g in d.groupby("label")}


# Where the break-even is looked for: a log grid over the tested range, fine enough (about 1.7%
# between points) that a bootstrap replicate's crossing is placed closer than it can be known.
_GRID = np.geomspace(Q_RANGE[0], Q_RANGE[1], 400)


def _per_doc_curves(terms: pd.DataFrame, docs: pd.Index) -> np.ndarray:
    """documents x _GRID: each document's $ per query at each q (the cost function's own formula)."""
    t = terms.loc[docs]
    return np.column_stack([usd_per_query(t, float(q)) for q in _GRID])


def _sup_cheaper(diff: np.ndarray) -> float:
    """sup{q in the tested range: Y is cheaper than X}, from Y - X on _GRID: 1 when Y is never
    cheaper, inf when it still is at the top of the range; between grid points, interpolated."""
    below = np.flatnonzero(diff < 0)
    if not len(below):
        return float(Q_RANGE[0])
    last = int(below[-1])
    if last == len(_GRID) - 1:
        return math.inf
    d0, d1 = diff[last], diff[last + 1]  # d0 < 0 <= d1: the curves cross in between
    q0, q1 = _GRID[last], _GRID[last + 1]
    return float(q0 + (q1 - q0) * (-d0) / (d1 - d0))


def break_even_interval(y: pd.DataFrame, x: pd.DataFrame, y_label: str, x_label: str,
                        derived: bool = False) -> BreakEven | None:
    """q* below which Y is cheaper than X, with a bootstrap over the documents both priced
    (the per-document rows of compare/analysis/doc_costs.py, each document weighing the same)."""
    common = y.index.intersection(x.index)
    if not len(common):
        return None
    diff = _per_doc_curves(y, common) - _per_doc_curves(x, common)
    if not np.isfinite(diff).all():
        return None  # a view that refused to price one of them (self-hosted above concurrency 1)
    point = _sup_cheaper(diff.mean(axis=0))
    reps = stats.bootstrap_groups(len(common), lambda i: _sup_cheaper(diff[i].mean(axis=0)))
    # order statistics, not interpolation: a replicate's q* may be inf (cheaper over the whole range)
    lo, hi = (float(v) for v in np.quantile(reps, [stats.ALPHA / 2, 1 - stats.ALPHA / 2],
                                            method="inverted_cdf"))
    undetermined = lo <= Q_RANGE[0] and hi >= Q_RANGE[1]
    crosses = Q_RANGE[0] < point < math.inf
    return BreakEven(point if crosses else None, lo, hi, y_label if crosses else None,
                     x_label if crosses else None, len(common), undetermined, derived)


def cost_difference(a: pd.DataFrame, b: pd.DataFrame, q: int) -> Interval | None:
    """$ per query at q of a minus b over the documents both priced, bootstrap over documents."""
    common = a.index.intersection(b.index)
    if not len(common):
        return None
    d = usd_per_query(a.loc[common], float(q)) - usd_per_query(b.loc[common], float(q))
    if not np.isfinite(d).all():
        return None
    reps = stats.bootstrap_groups(len(d), lambda i: float(d[i].mean()))
    lo, hi = np.quantile(reps, [stats.ALPHA / 2, 1 - stats.ALPHA / 2])
    return Interval(float(d.mean()), float(lo), float(hi), len(d), "bootstrap over documents")


def _by_quality(facts: Sequence[PipelineFacts]) -> list[PipelineFacts]:
    return sorted(facts, key=lambda f: -(f.quality.value if f.quality and not math.isnan(f.quality.value)
                                          else -math.inf))


def _separated(t: Paired | None) -> bool:
    return t is not None and t.separated


def _usd(f: PipelineFacts) -> float:
    return math.inf if f.usd_per_1k is None else f.usd_per_1k


def decide(run_id: str, q: int, metric: str | None, view: str | None, facts: list[PipelineFacts],
           wide: pd.DataFrame, terms: dict[str, pd.DataFrame]) -> Decision:
    """The choice from the facts (module docstring's rules), and its sentence."""
    notes: list[str] = []
    if len(facts) < 2:
        only = facts[0].label if facts else None
        return Decision(run_id, q, metric, view, only, only, None, "only pipeline", facts, None, None, None,
                        f"At {q} questions per document: only {only or 'nothing'} was run; nothing to "
                        "choose between.")
    ranked = _by_quality(facts)
    best = ranked[0]
    tests = {f.label: compare_quality(wide, best.label, f.label) if metric and not wide.empty
             and {best.label, f.label} <= set(wide.columns) else None for f in ranked[1:]}
    beats_all = all(t is not None and t.separated and t.diff.value > 0 for t in tests.values())
    if beats_all:
        choice, versus, by = best, ranked[1], "quality"
    else:  # quality does not decide: the cheapest of those it cannot separate from the best
        tied = [best, *(f for f in ranked[1:] if not _separated(tests[f.label]))]
        cheap = sorted(tied, key=_usd)
        choice, versus, by = cheap[0], (cheap[1] if cheap[0] is best else best), "cost"
    paired = compare_quality(wide, choice.label, versus.label) if (
        metric and not wide.empty and {choice.label, versus.label} <= set(wide.columns)) else None
    a, b = terms.get(choice.label), terms.get(versus.label)
    diff = cost_difference(a, b, q) if a is not None and b is not None else None
    # One document gives the bootstrap nothing to resample: its "interval" is a point, no support.
    if by == "cost" and not (diff is not None and diff.hi < 0 and diff.n >= 2):
        by = "undecided"
    derived = any(f.warm_basis.startswith("derived") for f in (choice, versus))
    be = None
    if a is not None and b is not None:
        # Y: the one cheaper at q = 1 over the shared documents (the one cheaper below q*).
        common = a.index.intersection(b.index)
        y_is_a = bool(common.size) and usd_per_query(a.loc[common], 1.0).mean() <= usd_per_query(
            b.loc[common], 1.0).mean()
        y, x = (choice, versus) if y_is_a else (versus, choice)
        be = break_even_interval(terms[y.label], terms[x.label], y.label, x.label, derived)
        left_out = (set(a.index) ^ set(b.index))
        if left_out:
            notes.append(f"{len(left_out)} document(s) priced for only one of the two left out of the "
                         "cost comparison")
        if common.size == 1:
            notes.append("cost and break-even from 1 document: their intervals cannot show how documents "
                         "vary; price more documents")
    d = Decision(run_id, q, metric, view, None if by == "undecided" else choice.label, choice.label,
                 versus.label, by,
                 facts, paired, diff, be, "", notes)
    return _with_sentence(d, choice, versus)


def _q(v: float) -> str:
    return ">" + f"{Q_RANGE[1]:,}" if math.isinf(v) else f"{v:.3g}"


def _quality_words(d: Decision, c: PipelineFacts, v: PipelineFacts) -> str:
    if d.metric is None or c.quality is None or v.quality is None:
        return "quality not scored"
    cq, vq = c.quality, v.quality
    text = (f"quality {cq.value:.3f} [{cq.lo:.3f}, {cq.hi:.3f}] vs {vq.value:.3f} [{vq.lo:.3f}, {vq.hi:.3f}]")
    p = d.paired
    if p is None:
        return text + " (not paired: no question asked of both)"
    text += f" (paired p = {p.p:.2g}, n = {p.diff.n}"
    if p.separated:
        return text + ")"
    more = (f"; ~{p.n_needed:,} questions would detect a gap of {abs(p.diff.value):.3f}"
            if p.n_needed else "; no gap observed")
    return text + f": no detectable difference at n = {p.diff.n}{more})"


def _cost_words(d: Decision, c: PipelineFacts, v: PipelineFacts) -> str:
    if c.usd_per_1k is None or v.usd_per_1k is None:
        return "cost not priced"
    flag = [f.label for f in (c, v) if f.warm_basis.startswith("derived")]
    derived = f", warm cost DERIVED for {', '.join(flag)}" if flag else ""
    return f"$/1k queries {c.usd_per_1k:.3g} vs {v.usd_per_1k:.3g} ({d.view}{derived})"


def _p50_words(c: PipelineFacts, v: PipelineFacts) -> str:
    if c.p50_ms is None or v.p50_ms is None:
        return "p50 not measured"
    return f"p50 {c.p50_ms.value:,.0f} vs {v.p50_ms.value:,.0f} ms (retrieval + E2E)"


def break_even_words(be: BreakEven | None) -> str:
    if be is None:
        return ""
    derived = ", derived" if be.derived else ""
    if be.undetermined:
        return (f"; the break-even is undetermined: [{_q(be.lo)}, {_q(be.hi)}] over {be.documents} "
                f"document(s){derived}")
    if be.q is None:
        return f"; the cost curves do not cross at q >= 1 ([{_q(be.lo)}, {_q(be.hi)}]{derived})"
    interval = f"[{_q(be.lo)}, {_q(be.hi)}]" if be.documents > 1 else "(1 document: no interval)"
    return (f"; below q* = {be.q:.3g} {interval} {be.cheaper_below} is cheaper "
            f"({be.documents} document(s){derived})")


def _with_sentence(d: Decision, c: PipelineFacts, v: PipelineFacts) -> Decision:
    head = (f"choose {c.label}" if d.choice else f"nothing separates {c.label} and {v.label}")
    body = ", ".join((_quality_words(d, c, v), _cost_words(d, c, v), _p50_words(c, v)))
    text = f"At {d.q} questions per document: {head} — {body}{break_even_words(d.break_even)}."
    if d.decided_by == "cost":
        text += (f" Quality does not separate them; {c.label} is cheaper at q = {d.q} (the 95% interval of "
                 "the cost difference, bootstrapped over documents, is below 0).")
    if d.decided_by == "undecided":
        need = [f"~{d.paired.n_needed:,} questions to detect the quality gap"] if (
            d.paired and d.paired.n_needed) else []
        if d.cost_diff is not None:
            need.append(f"more documents to pin the cost difference at q = {d.q} (now "
                        f"[{1000 * d.cost_diff.lo:.3g}, {1000 * d.cost_diff.hi:.3g}] $/1k, "
                        f"{d.cost_diff.n} document(s))")
        text += " To decide: " + (" and ".join(need) if need else "price the run (no cost measured)") + "."
    return Decision(**{**d.__dict__, "sentence": text})


def decision_for(con: duckdb.DuckDBPyConnection, run_id: str, q: int = 10, sheet: Any = None,
                 use: CacheUse = NO_USE, view: str | None = None,
                 subset: tuple[Collection[str], Collection[str]] | None = None) -> Decision:
    """The decision of one stored run at q questions per document, priced with `sheet` (default:
    the one the report would choose) in `view` (default the sheet's first: API when it has one).
    `subset` (example ids, their document keys): the same rules over those questions only (one
    stratum's, compare/analysis/strata.py), each pipeline's cost the mean over their documents."""
    from compare.analysis import prices, summary
    from compare.analysis.cost import cost_table
    from compare.analysis.doc_costs import doc_costs

    labels = summary.pipeline_labels(con, [run_id])[["pipeline", "params_hash", "label"]]
    rows = summary.pipeline_summary(con, [run_id])
    metric = summary.headline_metric(con, [run_id]) if rows else None
    metric = metric if metric and any(r.get(metric) is not None for r in rows) else None
    sheet = sheet if sheet is not None else prices.choose_sheet(con, [run_id], None).sheet
    view = view or sheet.views()[0]
    costed = doc_costs(con, [run_id], sheet, use)  # once, for the table and the per-document terms
    table = {r["label"]: r for r in cost_table(con, [run_id], sheet, (q,), use, costed) if r["view"] == view}
    terms = _doc_terms(costed.docs, labels, view)
    wide = scores_wide(con, run_id, metric, labels) if metric else pd.DataFrame()
    if subset is not None:
        ids, keys = subset
        wide = wide[wide.index.isin(list(ids))] if not wide.empty else wide
        terms = {k: t[t.index.isin(list(keys))] for k, t in terms.items()}
        terms = {k: t for k, t in terms.items() if len(t)}
        table = {k: {**r, f"usd_per_query_q{q}": float(usd_per_query(terms[k], float(q)).mean())
                     if k in terms else None} for k, r in table.items()}
    lat = latency_facts(con, run_id, labels, subset[0] if subset is not None else None)
    facts = []
    for r in rows:
        label = str(r["label"])
        scores = wide[label].dropna().to_numpy(float) if label in wide else np.array([])
        cost, lt = table.get(label, {}), lat.get(label, {})
        usd = cost.get(f"usd_per_query_q{q}")
        facts.append(PipelineFacts(
            label, cost.get("role"), stats.quality(scores) if len(scores) else None,
            None if usd is None else 1000 * usd, lt.get("p50"), lt.get("p95"), lt.get("cold_p50"),
            lt.get("warm_p50"), lt.get("mix", {}), str(cost.get("warm_basis", "n/a"))))
    return decide(run_id, q, metric, view, facts, wide, terms)

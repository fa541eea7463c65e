"""Workload -> strategy: rank the measured pipelines for a stated workload, citing the evidence.

A workload (compare/analysis/workload.py: TOML, strict) states document sizes, questions per document,
request rate, a p95 latency target and a quality floor. The evidence is the stored rows of the
same model at the nearest measured document lengths (within a relative tolerance); nothing is
extrapolated: a workload length without measurements near it makes the verdict `partial` or
`none`, and the CLI exits non-zero.

How the numbers are formed, stated once:
- Each workload length weighs the same (a list may repeat a length to weigh it more); within a
  length every measured example weighs the same. Quality is that weighted mean of the metric
  (a failed request scores 0), with a 95% Wilson interval at the Kish effective sample size.
  The evidence is a set of distinct questions: a question near two workload lengths adds its
  two weights but is one question (n counts it once, and so does the Kish size). Lengths
  measured by exactly the same documents say so, and a length whose documents all lie nearer
  another listed length is marked as borrowing that length's evidence (assumptions, row notes;
  which documents serve which length: compare/analysis/bins.py).
- Latency and token columns: long context pays the document's prefill once per document, so
  with q questions per document 1/q of its requests are cold and (q-1)/q warm (warm when
  cached_tokens >= WARM_FRACTION x context_tokens, as in compare/analysis/doc_costs.py). Measured warm
  rows are used when the evidence has them; otherwise a warm request is DERIVED from each cold
  one with the document counted as cached (tokens), its latency kept at the cold value
  (conservative), and the row says so. Routers and RAG are used as measured.
- Latency is client-side: "ttft" = retrieval + TTFT, "e2e" = retrieval + E2E; p95 is a weighted
  quantile. Utilisation = request rate x mean service time, as if requests were served one at a
  time: >= 1 means the server cannot keep up, so the target is not met whatever the p95.
- Cost per query: computed (uncached) prompt, cached prompt and output tokens, and $ from the one
  cost function (compare/analysis/doc_costs.py, the same as `ragvslc cost` and the report: per document
  marginal + one_time / q), each document weighing what its length weighs in the workload. The
  sheet is the workload's `price_sheet`, else the one stored with the runs, else the shipped
  example (as the report chooses); the view is the sheet's first (API if it has one) unless
  `view` is given.
- Cache expiry (API view, a sheet with a chosen cache TTL, a workload stating
  `queries_per_doc_per_hour`): a later question finds the cache expired with probability
  p = exp(-rate x TTL) (Poisson arrivals; compare/analysis/cache_terms.py) and is cold again, so
  the cost (from the cost function, given the workload's cache use) and the latency and token
  columns alike weigh (1 + (q-1) p)/q of long context's requests cold and (q-1)(1-p)/q warm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd

from compare.analysis.answer_checks import judge_for_ranking
from compare.analysis.bins import Bins, bin_evidence, length_bins
from compare.analysis.decision import Decision, decision_for
from compare.analysis.doc_costs import doc_costs, weighted_usd
from compare.analysis.load import measured_busy
from compare.analysis.prices import choose_sheet
from compare.analysis.ranking import explain, rank, rank_cost
from compare.analysis.recommend_terms import busy_note, cache_rule, default_view, router_regret
from compare.analysis.replicas import FIELDS as REPLICA_FIELDS
from compare.analysis.replicas import replicas_for
from compare.analysis.strata_mix import MixVerdict, mix_verdict
from compare.analysis.summary import describe
from compare.analysis.verdict import StratumVerdict, stratum_verdicts
from compare.analysis.workload import Workload
from compare.store import views

Coverage = Literal["covered", "partial", "none"]
COLUMNS = (
    "rank", "strategy", "n", "quality", "quality_low", "quality_high", "p95_ms", "utilization",
    "input_tokens_per_1k", "cached_tokens_per_1k", "output_tokens_per_1k", "usd_per_1k",
    "meets_floor", "meets_target", "utilization_measured", *REPLICA_FIELDS, "notes",
)


@dataclass(frozen=True)
class Recommendation:
    workload: Workload
    model: str | None
    coverage: Coverage
    coverage_notes: list[str]
    rows: list[dict[str, Any]]  # ranked, COLUMNS plus run_ids and kind
    winner: str | None
    reasons: list[str]
    run_ids: list[str]
    lengths_used: dict[str, list[float]] = field(default_factory=dict)  # workload length -> measured
    assumptions: list[str] = field(default_factory=list)
    price_sheet: str | None = None
    decisions: list[Decision] = field(default_factory=list)  # per evidence run (compare/analysis/decision.py)
    strata: list[StratumVerdict] = field(default_factory=list)  # per evidence run and kind of question
    cache_basis: str | None = None  # which rule priced a later question's cache (recommend_terms.py)
    regret: list[dict[str, Any]] = field(default_factory=list)  # per router, against the oracle
    mix: list[MixVerdict] = field(default_factory=list)  # per evidence run, at the workload's strata_mix


_EVIDENCE = """
SELECT p.run_id, p.example_id, p.pipeline, p.params_hash, p.params,
    p.kind, p.role, e.doc_ids,
    coalesce(e.doc_length, max(p.context_tokens) FILTER (WHERE p.role = 'long_context')
        OVER (PARTITION BY p.run_id, p.example_id)) AS length,
    p.error, p.prompt_tokens, coalesce(p.cached_tokens, 0) AS cached_tokens, p.output_tokens,
    p.context_tokens, p.ttft_ms, p.e2e_ms, p.retrieval_ms, e.question, s.value AS score
FROM request_rows p JOIN example_rows e USING (run_id, example_id) JOIN runs r USING (run_id)
LEFT JOIN scores s ON s.run_id = p.run_id AND s.example_id = p.example_id AND s.pipeline = p.pipeline
    AND s.params_hash = p.params_hash AND s.metric = $metric
WHERE list_contains($runs, p.run_id)
"""


def wilson(p: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion p seen over n (possibly effective) trials."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Smallest value whose cumulative weight reaches q (inverse CDF of the weighted sample)."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    idx = int(np.searchsorted(cum, q * cum[-1] - 1e-12))
    return float(values[order][min(idx, len(values) - 1)])


def _select_runs(con: duckdb.DuckDBPyConnection, wl: Workload, run_ids: Sequence[str] | None
                 ) -> tuple[str | None, list[str], list[str]]:
    """(model, run ids with predictions for it, coverage notes when there are none)."""
    rows = con.execute("SELECT run_id, model, corpus FROM runs r WHERE EXISTS (SELECT 1 FROM "
                       "predictions p WHERE p.run_id = r.run_id) ORDER BY created_at").fetchall()
    # Unnamed, load runs are left out: their rows were asked under traffic (compare/analysis/load.py).
    rows = [r for r in rows if r[0] in run_ids] if run_ids is not None else \
        [r for r in rows if not views.is_load_run(r[0])]
    models = sorted({str(r[1]) for r in rows})
    if wl.model is None and len(models) != 1:
        return None, [], [f"the database holds runs of {len(models)} models ({', '.join(models) or 'none'}); "
                          "name one with `model = ...` in the workload"]
    model = wl.model or models[0]
    runs = [str(r[0]) for r in rows if r[1] == model and str(r[2]).startswith(wl.corpus or "")]
    if not runs:
        where = f" on corpus {wl.corpus!r}" if wl.corpus else ""
        return model, [], [f"no runs of model {model!r}{where}; runs in the database are of: "
                           f"{', '.join(models) or 'nothing'}"]
    return model, runs, []


def _mix(cold: pd.DataFrame, hot: pd.DataFrame, share: float, q: int, p: float) -> list[pd.DataFrame]:
    """Long context's requests of one length at the workload's q, its share of the weight split
    (1 + (q-1) p)/q cold and (q-1)(1-p)/q warm (p: cache expiry; 0 leaves 1/q cold)."""
    return [cold.assign(cw=share * (1 + (q - 1) * p) / q / len(cold)),
            hot.assign(cw=share * (q - 1) * (1 - p) / q / len(hot))]


def _strategy(df: pd.DataFrame, wl: Workload, bins: Bins, expiry: dict[str, float] | None = None
              ) -> tuple[dict[str, Any], list[str]]:
    """One strategy's expected quality, latency and cost under the workload (see module doc).

    Two weightings: `qw` (quality: every distinct question of a length alike, its repeats across
    runs averaged, so asking twice is not twice the evidence) and `cw` (cost and latency: for
    long context, 1/q cold and (q-1)/q warm requests; with cache expiry p, (1 + (q-1) p)/q cold)."""
    q, lc = wl.questions_per_doc, df["role"].iloc[0] == "long_context"
    notes: list[str] = []
    qparts, cparts, errors = [], [], 0
    total = sum(w for w, _ in bins.values())
    for key, (weight, lengths) in bins.items():
        share = weight / total
        rows = df[df["length"].isin(lengths)].assign(derived=False)
        errors += int(rows["error"].notna().sum())
        scored = rows[rows["score"].notna() | rows["error"].notna()]
        per_q = scored.assign(s=scored["score"].fillna(0.0)).groupby(["example_id", "question"])["s"].mean()
        qparts.append(pd.DataFrame({"s": per_q.to_numpy(float), "qw": share / max(len(per_q), 1)},
                                   index=per_q.index))
        ok = rows[rows["error"].isna()]
        if not len(ok):
            continue
        warm = views.is_warm(ok["cached_tokens"], ok["context_tokens"], ok["prompt_tokens"])
        if not lc:
            cparts.append(ok.assign(cw=share / len(ok)))
            continue
        cold, hot = ok[~warm], ok[warm]
        if not len(hot):  # derive warm from cold: the document counted as cached
            hot = cold.assign(derived=True, cached_tokens=np.minimum(
                cold["prompt_tokens"], np.maximum(cold["cached_tokens"], cold["context_tokens"])))
        elif not len(cold):
            cold = hot
            notes.append(f"~{key} tokens: no cold request measured; cost and latency are optimistic")
        cparts += _mix(cold, hot, share, q, (expiry or {}).get(key, 0.0))
    # A question is one piece of evidence whatever the bins it serves: its weights add up, n counts
    # it once (issue 33), and the interval's effective size is over the distinct questions.
    qrows = pd.concat(qparts).groupby(level=[0, 1]).agg(s=("s", "mean"), qw=("qw", "sum"))
    qual, qw = qrows["s"].to_numpy(float), qrows["qw"].to_numpy(float)
    quality = float(np.average(qual, weights=qw)) if len(qual) else math.nan
    n_eff = float(qw.sum() ** 2 / (qw**2).sum()) if len(qual) else 0.0
    lo, hi = wilson(quality, n_eff) if len(qual) else (math.nan, math.nan)
    if errors:
        notes.append(f"{errors} failed requests (scored 0, left out of latency; cost counts what they spent)")
    head = {"n": len(qrows), "quality": quality, "quality_low": lo, "quality_high": hi,
            "meets_floor": bool(quality >= wl.quality_floor)}
    crows = pd.concat(cparts) if cparts else None
    if crows is None or not (w := crows["cw"].to_numpy(float)).sum() > 0:
        notes.append("no successful request: no latency or cost")
        return {**dict.fromkeys(COLUMNS[6:12], math.nan), **head, "meets_target": False}, notes
    if lc and crows["derived"].any() and q > 1:
        notes.append("ASSUMPTION: no warm request measured; warm cost = cold request with the document "
                     "cached, warm latency = cold latency")
    lat = crows["retrieval_ms"] + (crows["ttft_ms"] if wl.latency.metric == "ttft" else crows["e2e_ms"])
    p95 = weighted_quantile(lat.to_numpy(float), w, 0.95)
    service_s = float(np.average((crows["retrieval_ms"] + crows["e2e_ms"]).to_numpy(float), weights=w)) / 1e3
    util = wl.requests_per_s * service_s
    computed = crows["prompt_tokens"] - crows["cached_tokens"]
    per_q = {k: 1000 * float(np.average(v.to_numpy(float), weights=w)) for k, v in
             {"in": computed, "cached": crows["cached_tokens"], "out": crows["output_tokens"]}.items()}
    return {**head, "p95_ms": p95, "utilization": util, "input_tokens_per_1k": per_q["in"],
            "cached_tokens_per_1k": per_q["cached"], "output_tokens_per_1k": per_q["out"],
            "meets_target": bool(p95 <= wl.latency.p95_ms and util < 1.0)}, notes


def _usd(terms: dict[str, pd.DataFrame], lengths: pd.Series, bins: Bins, q: int) -> float:
    """$ per query at the workload's q from the cost function's per-document terms (per workload
    length: its own cache rule's): each length its share, split evenly over the documents (per
    run) measured near it."""
    parts, weights = [], []
    for key, (share, measured) in bins.items():
        frame = terms.get(key)
        if frame is None or frame.empty:
            continue
        inside = (frame["run_id"] + "\x1f" + frame["doc_key"]).map(lengths).isin(measured).to_numpy()
        if inside.any():
            parts.append(frame[inside])
            weights.append(np.full(int(inside.sum()), share / inside.sum()))
    if not parts:
        return math.nan
    return weighted_usd(pd.concat(parts, ignore_index=True), np.concatenate(weights), q)


def recommend(db_path: Path | str, workload: Workload, run_ids: Sequence[str] | None = None,
              *, view: str | None = None) -> Recommendation:
    """Rank every measured strategy for the workload; say when the evidence does not cover it.
    `view`: the price view to rank by ("api" or "self_hosted"; default recommend_terms.default_view)."""
    if not Path(db_path).exists():
        raise ValueError(f"no database at {db_path}")
    with duckdb.connect(str(db_path), read_only=True) as con:
        model, runs, notes = _select_runs(con, workload, run_ids)
        chosen = choose_sheet(con, runs, workload.price_sheet)  # as the report chooses
        sheet = chosen.sheet
        view = view or default_view(workload, sheet)
        if view not in sheet.views():
            raise ValueError(f"price sheet {sheet.name!r} has no {view!r} view "
                             f"(it has: {', '.join(sheet.views())})")
        sheet_name = f"{sheet.name} @ {sheet.date.isoformat()} ({view} view; {chosen.origin})"
        if not runs:
            return _empty(workload, model, "none", notes, sheet_name)
        views.install(con)
        judged = judge_for_ranking(con, runs, workload.quality_metric)  # raises below the trust threshold
        ev = con.execute(_EVIDENCE, {"runs": runs, "metric": workload.quality_metric}).df()
        ev = ev[ev["length"].notna()]
        lengths = ev.assign(key=ev["run_id"] + "\x1f" + ev["doc_ids"]).groupby("key")["length"].first()
        bins, notes = length_bins(workload, sorted(set(ev["length"].astype(float))))
        if not bins:
            return _empty(workload, model, "none", notes, sheet_name)
        rule = cache_rule(workload, sheet, view, bins, ev)
        by_p = {p: doc_costs(con, runs, sheet, replace(workload.cache_use, evicted=p if rule.model else None))
                .docs for p in set(rule.p.values())}  # one cost-function call per distinct rule
        terms = {k: _in_view(by_p[p], view) for k, p in rule.p.items()}
        pipes = set(zip(ev["pipeline"], ev["params_hash"], strict=True))
        busy = {(p, h): measured_busy(con, p, h, workload.requests_per_s) for p, h in pipes}
        replicas = {(p, h): replicas_for(con, model, workload, sheet, p, h) for p, h in pipes}
        use = replace(workload.cache_use, evicted=rule.mean_p(bins), evicted_basis=rule.basis) \
            if rule.model else workload.cache_use  # the decision line prices the same cache
        decisions = [decision_for(con, r, workload.questions_per_doc, sheet, use, view)
                     for r in runs]  # the one decision line per evidence run (issue 24 item 12)
        strata = [sv for r in runs for sv in stratum_verdicts(con, r, workload.questions_per_doc, sheet)]
        shares = {str(k): v for k, v in (workload.strata_mix or {}).items()}
        mix = [m for r in runs if shares and (m := mix_verdict(con, r, shares))]
        regret, regret_notes = router_regret(con, runs, workload.quality_metric, chosen) \
            if (ev["role"] == "router").any() else ([], [])
    matched = ev[ev["length"].isin({m for _, ms in bins.values() for m in ms})]
    if matched["score"].isna().all() and matched["error"].isna().all():
        notes.append(f"no {workload.quality_metric!r} scores in the matching runs (rescore with that metric)")
        return _empty(workload, model, "none", notes, sheet_name)
    shared, borrowed = bin_evidence(bins, lengths)
    rows, excluded = [], []
    assumptions = ([rule.basis] if rule.said else []) + shared + judged + regret_notes
    marks = [f"evidence for {k} tokens borrowed from {t}" for k, t in borrowed.items()]
    for (pipe, h), df in matched.groupby(["pipeline", "params_hash"], sort=True):
        label = describe(str(pipe), json.loads(df["params"].iloc[0]))
        missing = [k for k, (_, ms) in bins.items() if not df["length"].isin(ms).any()]
        if missing:
            excluded.append(f"{label}: no rows near {', '.join(missing)} tokens; left out of the ranking")
            continue
        stats, row_notes = _strategy(df, workload, bins, rule.p)
        mine = {k: t[(t["pipeline"] == pipe) & (t["params_hash"] == h)] if len(t) else t
                for k, t in terms.items()}
        usd = _usd(mine, lengths, bins, workload.questions_per_doc)
        if any(len(t) and t["self_hosted_refused"].any() for t in mine.values()):  # busy seconds overlap
            conc = max(int(t["concurrency"].max()) for t in mine.values() if len(t))
            row_notes.append(f"no self-hosted $: measured at concurrency {conc}, "
                             "where requests' busy seconds overlap in a batch (measure at concurrency 1)")
        stats["utilization_measured"] = busy_note(busy.get((pipe, h)), stats["utilization"], workload,
                                                  row_notes)
        rep = replicas.get((pipe, h))
        stats |= rep.fields() if rep is not None else dict.fromkeys(REPLICA_FIELDS)
        if rep is not None:
            row_notes.append(f"replicas: {rep.note}")
        assumptions += [f"{label}: {n}" for n in row_notes if n.startswith(("ASSUMPTION", "UTILISATION"))]
        rows.append({"strategy": label, "kind": df["kind"].iloc[0], "run_ids": sorted(set(df["run_id"])),
                     **stats, "usd_per_1k": 1000 * usd, "notes": "; ".join(marks + row_notes)})
    if not rows:
        return _empty(workload, model, "none", notes + excluded, sheet_name)
    priced = [not math.isnan(r["usd_per_1k"]) for r in rows]
    if not all(priced):  # never rank $ against tokens: all on tokens, said
        excluded.append(f"ranked on tokens, not $: {priced.count(False)} strateg(ies) have no $ in the "
                        f"{view} view (see their notes)")
    for r in rows:
        r["_rank_cost"] = rank_cost(r, all(priced))
    rows = rank(rows)
    winner, reasons = explain(rows, workload, all(priced))
    return Recommendation(
        workload, model, "partial" if notes else "covered", notes, rows, winner, reasons + excluded,
        sorted({r for row in rows for r in row["run_ids"]}), {k: ms for k, (_, ms) in bins.items()},
        assumptions, sheet_name, decisions, strata, rule.basis, regret, mix)


def _in_view(docs: pd.DataFrame, view: str) -> pd.DataFrame:
    return docs[docs["view"] == view] if not docs.empty else docs


def _empty(wl: Workload, model: str | None, coverage: Coverage, notes: list[str], sheet: str | None
           ) -> Recommendation:
    return Recommendation(wl, model, coverage, notes, [], None, ["no recommendation: the evidence does "
                          "not cover this workload"], [], price_sheet=sheet)

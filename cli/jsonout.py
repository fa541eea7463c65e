"""The shapes of `--json` output: one object per command, fields named once here.

These are an interface (scripts, notebooks and CI parse them), so the fields are chosen here
rather than passed through from whatever the engine returns: a new engine column does not
appear, or vanish, unannounced. Units are in the names (`_ms`, `_s`, `_usd`, `_tokens`,
`_bytes`); shares and scores are 0..1; timestamps are ISO 8601 (UTC); missing is null.
docs/reference.md lists the same fields; tests/test_json_output.py checks
that the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the analysis (duckdb, pandas) is not loaded for a listing
    from compare.analysis.cache_terms import CacheUse

Row = Mapping[str, Any]

# pipelines: [{label, metric, headline}], each pipeline of the run with its mean headline score
# (`metric` names it: "headline", or for an old run never rescored the answer metric it scored).
RUN_FIELDS = ("run_id", "created_at", "status", "load", "corpus", "model", "pipelines", "predictions",
              "errors")
SUMMARY_FIELDS = (
    "run_id", "label", "pipeline", "params_hash", "n", "errors", "ttft_p50_ms", "ttft_p95_ms",
    "e2e_p50_ms", "e2e_p95_ms", "total_p50_ms", "context_tokens_mean", "prompt_tokens_mean",
    "cached_tokens_mean", "metrics",
)
MODEL_FIELDS = (
    "name", "default", "chat", "context_tokens", "installed", "missing_packages", "prepared", "path",
    "size_bytes", "sha256", "note",
)
CORPUS_FIELDS = ("kind", "description", "options")
COST_FIELDS = (
    "run_id", "label", "pipeline", "params_hash", "kind", "view", "n", "docs", "cold", "warm",
    "warm_basis", "one_time_usd_per_doc", "marginal_usd_per_query", "usd_per_query",
    "total_p50_ms", "cold_total_p50_ms", "warm_total_p50_ms", "caveats",
)
BREAK_EVEN_FIELDS = ("view", "a", "b", "break_even_q", "cheaper_below", "cheaper_above", "status")
RECOMMEND_FIELDS = (
    "rank", "strategy", "kind", "run_ids", "n", "quality", "quality_low", "quality_high", "p95_ms",
    "utilization", "input_tokens_per_1k", "cached_tokens_per_1k", "output_tokens_per_1k",
    "usd_per_1k", "meets_floor", "meets_target", "utilization_measured", "replicas", "replicas_basis",
    "per_replica_rps", "per_replica_goodput_rps", "per_replica_n", "load_run_id", "load_step", "swept_rps",
    "replicas_usd_per_hour", "replicas_usd_per_1k", "replicas_note", "notes",
)
# per router of the evidence runs (issue 30): its regret against the per-question oracle
REGRET_FIELDS = ("run_id", "strategy", "n", "n_priced", "quality", "oracle_quality", "quality_lost",
                 "lc_strategy", "usd_per_q", "lc_usd_per_q", "usd_saved_per_q", "usd_saved_share", "line")
RETRIEVAL_FIELDS = (
    "config", "params_hash", "index", "k", "budget_tokens", "recall", "mrr", "n_examples",
    "n_without_evidence", "mean_chunks", "mean_context_tokens", "max_context_tokens", "n_chunks",
    "build_s", "cache_hit", "query_ms",
)
EXPORT_FIELDS = ("table", "path", "rows")

# Top-level keys of each command's object (docs/reference.md lists them too).
TOP_LEVEL: dict[str, tuple[str, ...]] = {
    "run": ("run_id", "db", "done", "skipped", "errors", "resumed", "decision", "verdict", "pipelines"),
    "runs": ("db", "runs"),
    "models list": ("models",),
    "corpora list": ("corpora",),
    "cost": ("price_sheet", "queries_per_doc", "queries_per_doc_per_hour", "cache_hold_hours", "rows",
             "break_even", "caveats"),
    "recommend": (
        "workload", "model", "coverage", "coverage_notes", "winner", "reasons", "assumptions",
        "run_ids", "lengths_used", "price_sheet", "rows", "decisions", "strata", "cache_basis", "regret",
        "mix",
    ),
    "retrieval": ("eval_id", "run_id", "db", "rows"),
    "export": ("db", "format", "out", "tables"),
}


def pick(row: Row, fields: Sequence[str]) -> dict[str, Any]:
    return {f: row.get(f) for f in fields}


def _split(text: Any) -> list[str]:
    return [p for p in str(text or "").split("; ") if p]


def caveats(rows: Iterable[Row]) -> list[str]:
    """Every caveat of the cost rows once (each row holds its own, "; "-joined)."""
    return sorted({c for r in rows for c in _split(r.get("caveats"))})


def summary_json(rows: Iterable[Row], metric_names: Iterable[str]) -> list[dict[str, Any]]:
    """Summary rows with the metric means (one column per metric in the table) nested under
    `metrics`, so the row's keys do not depend on the corpus, and the questions each mean is over
    under `metric_n`; a metric that applies to none of the pipeline's questions is left out."""
    names = set(metric_names)
    return [
        {**pick(r, SUMMARY_FIELDS),
         "metrics": {k: v for k, v in r.items() if k in names and v is not None},
         "metric_n": {k: v for k, v in (r.get("metric_n") or {}).items()
                      if k in names and r.get(k) is not None}}
        for r in rows
    ]


def run_json(result: Any, db: Path, summary: list[dict[str, Any]], verdict: Any = None) -> dict[str, Any]:
    return {
        "run_id": result.run_id, "db": str(db), "done": result.done, "skipped": result.skipped,
        "errors": result.errors, "resumed": result.resumed,
        "decision": verdict.decision.to_dict() if getattr(verdict, "decision", None) else None,
        "verdict": verdict_json(verdict), "pipelines": summary,
    }


def verdict_json(v: Any) -> dict[str, Any] | None:
    """The verdict's sentences, effective lengths (tokens; null: none kept 85%) and caveats."""
    if v is None:
        return None
    return {"metric": v.metric, "lines": list(v.lines), "caveats": list(v.caveats),
            "effective_length": [
                {"label": e.label, "effective_tokens": e.length, "tested_max_tokens": e.tested_max,
                 "base_score": e.base_score} for e in v.effective]}


def model_json(row: Row) -> dict[str, Any]:
    return pick({**row, "context_tokens": row.get("context")}, MODEL_FIELDS)


def cost_json(
    rows: Sequence[Row], break_even: Sequence[Row], sheet: Any, sheet_path: Path, qs: Sequence[int],
    use: CacheUse | None = None,
) -> dict[str, Any]:
    """Cost rows with the per-q prices as one object keyed by queries per document (a string,
    as JSON keys are): `.rows[0].usd_per_query["10"]`; the cache use priced (null: not stated)."""
    out_rows = [
        {**pick(r, COST_FIELDS), "usd_per_query": {str(q): r.get(f"usd_per_query_q{q}") for q in qs},
         "caveats": _split(r.get("caveats"))}
        for r in rows
    ]
    return {
        "price_sheet": {"name": sheet.name, "date": sheet.date, "path": str(sheet_path)},
        "queries_per_doc": list(qs),
        "queries_per_doc_per_hour": use.queries_per_doc_per_hour if use else None,
        "cache_hold_hours": use.hold_hours if use else None,
        "rows": out_rows,
        "break_even": [pick(b, BREAK_EVEN_FIELDS) for b in break_even],
        "caveats": caveats(rows),
    }


def recommendation_json(rec: Any) -> dict[str, Any]:
    return {
        "workload": rec.workload, "model": rec.model, "coverage": rec.coverage,
        "coverage_notes": list(rec.coverage_notes), "winner": rec.winner, "reasons": list(rec.reasons),
        "assumptions": list(rec.assumptions), "run_ids": list(rec.run_ids),
        "lengths_used": dict(rec.lengths_used), "price_sheet": rec.price_sheet,
        "rows": [{**pick(r, RECOMMEND_FIELDS), "notes": _split(r.get("notes"))} for r in rec.rows],
        "decisions": [d.to_dict() for d in getattr(rec, "decisions", [])],  # one per evidence run
        "strata": [{"run_id": sv.decision.run_id, "stratum": sv.stratum, "n": sv.n, "sources": sv.sources,
                    "too_few": sv.too_few, "line": sv.line, "decision": sv.decision.to_dict()}
                   for sv in getattr(rec, "strata", [])],  # issue 30: per kind of question
        "cache_basis": getattr(rec, "cache_basis", None),  # issue 28: which rule priced the cache
        "regret": [pick(r, REGRET_FIELDS) for r in getattr(rec, "regret", [])],  # issue 30: routers
        "mix": [{"run_id": m.run_id, "shares": m.shares, "n": m.n, "winner": m.winner, "line": m.line,
                 "quality": {k: asdict(q) for k, q in m.quality.items()},
                 "diff": asdict(m.diff) if m.diff else None}
                for m in getattr(rec, "mix", [])],  # issue 30: at the workload's mix of kinds
    }

"""The oracle router and the routing section: what routing bought, measured from stored rows.

The oracle is the ceiling any router between the run's own pipelines could reach: per question,
among the base pipelines' answers (every RAG and long-context configuration in the run), take
the best by the chosen metric and, among equally good ones, the cheapest (by prompt tokens not
served from the prefix cache, by prompt tokens, or by total latency). Best first also for
graded metrics (token F1, time IoU): a ceiling never trades quality for cost. When no answer
scores, the cheapest is taken anyway (a router pays for some request either way). The metric
is the headline (each question's own metric) when the runs scored it.
It is computed in SQL from rows already stored: no model call, so it costs nothing to add to
any run that measured both pipelines.

Rules, stated once:
- A row counts when its metric applies: a scored row, or a failed request (quality 0, because
  a failure answers nothing). Rows whose metric does not apply (NULL score, no error) are left
  out of everything.
- "Correct" (the accuracy column) is score >= `correct_at` (1.0: the answer was right).
- Every strategy is compared on the same questions: those every configuration of the run
  answered (a partial run is compared on what all of them finished).
- Cost of a failed request is unknown (NULL): the oracle never prefers it, means skip it.
- The oracle pays for the caches it uses (compare/analysis/oracle_cache.py): a warm long-context
  answer is only as cheap as measured if the oracle also took (and paid cold for) the request
  that warmed that document; otherwise its first long-context pick on a document pays cold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import duckdb
import pandas as pd

from compare.analysis.oracle_cache import oracle_choice
from compare.analysis.summary import headline_metric, pipeline_labels
from compare.store import views

# computed_tokens: prompt tokens the server had to prefill (prompt - cached), the cache-aware cost.
CostBy = Literal["computed_tokens", "prompt_tokens", "total_ms"]
COST_BY: tuple[str, ...] = get_args(CostBy)
STRATEGY_COLUMNS = (
    "run_id", "strategy", "kind", "role", "pipeline", "params_hash", "n", "errors", "quality", "accuracy",
    "prompt_tokens_mean", "cached_tokens_mean", "output_tokens_mean", "total_ms_mean", "total_ms_p95",
    "share_long_context",
)

# Per run: every counted row with its kind, quality, correctness, document and the chosen cost.
_ROWS = """
WITH p AS (
    SELECT p.run_id, p.example_id, p.pipeline, p.params_hash, p.seq, e.doc_ids,
        p.kind, p.role, p.error, p.prompt_tokens, p.cached_tokens, p.output_tokens, p.total_ms, p.route,
        p.context_tokens, p.steps, s.value AS score
    FROM request_rows p JOIN example_rows e USING (run_id, example_id) LEFT JOIN scores s
        ON s.run_id = p.run_id AND s.example_id = p.example_id AND s.pipeline = p.pipeline
        AND s.params_hash = p.params_hash AND s.metric = $metric
    WHERE list_contains($runs, p.run_id) AND (s.value IS NOT NULL OR p.error IS NOT NULL)
), configs AS (
    SELECT run_id, count(DISTINCT pipeline || '/' || params_hash) AS n_configs FROM p GROUP BY run_id
), common AS (
    SELECT p.run_id, p.example_id FROM p JOIN configs USING (run_id)
    GROUP BY p.run_id, p.example_id, configs.n_configs
    HAVING count(DISTINCT p.pipeline || '/' || p.params_hash) = configs.n_configs
)
SELECT p.*,
    CASE WHEN p.error IS NOT NULL THEN 0.0 ELSE p.score END AS quality,
    (p.error IS NULL AND p.score >= $correct_at) AS correct,
    CASE $cost_by WHEN 'total_ms' THEN p.total_ms WHEN 'prompt_tokens' THEN p.prompt_tokens
        ELSE p.prompt_tokens - coalesce(p.cached_tokens, 0) END AS cost
FROM p JOIN common USING (run_id, example_id)
"""
# The oracle's picks (oracle_choice) and every counted row are registered as these two relations.
_CTES = "oracle_rows AS (SELECT * FROM _oracle_rows), chosen AS (SELECT * FROM _oracle_chosen)"

_VS_LC = {"prompt_tokens_mean": "prompt_tokens_vs_lc", "total_ms_mean": "total_ms_vs_lc",
          "total_ms_p95": "total_ms_p95_vs_lc"}

_AGG = """
    count(*) AS n, count(error) AS errors, avg(quality) AS quality, avg(correct::INTEGER) AS accuracy,
    avg(prompt_tokens) AS prompt_tokens_mean, avg(cached_tokens) AS cached_tokens_mean,
    avg(output_tokens) AS output_tokens_mean, avg(total_ms) AS total_ms_mean,
    quantile_cont(total_ms, 0.95) AS total_ms_p95
"""

_STRATEGIES = f"""
WITH {_CTES}
SELECT run_id, 'oracle' AS kind, 'oracle' AS role, NULL AS pipeline, NULL AS params_hash, {_AGG},
    avg((role = 'long_context')::INTEGER) AS share_long_context
FROM chosen GROUP BY run_id
UNION ALL
SELECT run_id, any_value(kind) AS kind, any_value(role) AS role, pipeline, params_hash, {_AGG},
    CASE WHEN any_value(role) = 'long_context' THEN 1.0 WHEN any_value(role) = 'retrieval' THEN 0.0
         ELSE avg((route = 'long_context')::INTEGER) END AS share_long_context
FROM oracle_rows GROUP BY run_id, pipeline, params_hash
"""

_ROUTES = f"""
WITH {_CTES}, routed AS (
    SELECT run_id, NULL AS pipeline, NULL AS params_hash,
        CASE role WHEN 'long_context' THEN 'long_context' ELSE 'rag' END AS route,  -- Prediction.route names
        quality, prompt_tokens, total_ms
    FROM chosen
    UNION ALL
    SELECT run_id, pipeline, params_hash, coalesce(route, 'none') AS route, quality, prompt_tokens, total_ms
    FROM oracle_rows WHERE route IS NOT NULL OR role = 'router'
)
SELECT run_id, pipeline, params_hash, route, count(*) AS n,
    count(*) / sum(count(*)) OVER (PARTITION BY run_id, pipeline, params_hash) AS share,
    avg(quality) AS quality, avg(prompt_tokens) AS prompt_tokens_mean, avg(total_ms) AS total_ms_mean
FROM routed GROUP BY run_id, pipeline, params_hash, route
"""


def _runs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None) -> list[str]:
    if run_ids is not None:
        return list(run_ids)
    return [str(r[0]) for r in con.execute("SELECT run_id FROM runs ORDER BY created_at").fetchall()]


def oracle_frames(
    con: duckdb.DuckDBPyConnection, runs: list[str], metric: str | None, cost_by: CostBy, correct_at: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every counted row on the common questions, the oracle's pick per question): what the
    tables here aggregate, and what compare/analysis/regret.py prices row by row."""
    if cost_by not in COST_BY:
        raise ValueError(f"cost_by must be one of {', '.join(COST_BY)}, got {cost_by!r}")
    metric = metric or headline_metric(con, runs)
    params = {"runs": runs, "metric": metric, "correct_at": correct_at, "cost_by": cost_by}
    views.install(con)
    rows = con.execute(_ROWS, params).df()
    return rows, oracle_choice(rows, cost_by)


def _query(
    con: duckdb.DuckDBPyConnection, sql: str, runs: list[str], metric: str | None, cost_by: CostBy,
    correct_at: float,
) -> pd.DataFrame:
    rows, chosen = oracle_frames(con, runs, metric, cost_by, correct_at)
    con.register("_oracle_rows", rows)
    con.register("_oracle_chosen", chosen)
    try:
        return con.execute(sql).df()
    finally:
        con.unregister("_oracle_rows")
        con.unregister("_oracle_chosen")


def _label(df: pd.DataFrame, con: duckdb.DuckDBPyConnection, runs: list[str]) -> pd.DataFrame:
    """Strategy names: the report's pipeline labels, 'oracle' for the ceiling."""
    labels = pipeline_labels(con, runs).rename(columns={"label": "strategy"})
    out = df.merge(labels, on=["run_id", "pipeline", "params_hash"], how="left")
    out["strategy"] = out["strategy"].where(out["pipeline"].notna(), "oracle")
    return out


def strategy_table(
    con: duckdb.DuckDBPyConnection,
    run_ids: Sequence[str] | None = None,
    *,
    metric: str | None = None,
    cost_by: CostBy = "computed_tokens",
    correct_at: float = 1.0,
) -> pd.DataFrame:
    """Per run: the oracle, each base configuration (always-RAG, always-LC) and each router,
    on the same questions: quality, accuracy, mean tokens, mean and p95 latency, LC share."""
    runs = _runs(con, run_ids)
    df = _query(con, _STRATEGIES, runs, metric, cost_by, correct_at)
    if df.empty:
        return pd.DataFrame(columns=list(STRATEGY_COLUMNS))
    df = _label(df, con, runs)
    order = {"oracle": 0, "long_context": 1, "retrieval": 2}
    df["_o"] = df["role"].map(order).fillna(3)
    df = df.sort_values(["run_id", "_o", "strategy"]).drop(columns="_o")
    return df[list(STRATEGY_COLUMNS)].reset_index(drop=True)


def route_table(
    con: duckdb.DuckDBPyConnection,
    run_ids: Sequence[str] | None = None,
    *,
    metric: str | None = None,
    cost_by: CostBy = "computed_tokens",
    correct_at: float = 1.0,
) -> pd.DataFrame:
    """Per router (and the oracle): share of questions per route, with each route's quality
    and cost, so a reader sees where a router sent questions and what that path delivered."""
    runs = _runs(con, run_ids)
    df = _query(con, _ROUTES, runs, metric, cost_by, correct_at)
    cols = ["run_id", "strategy", "route", "n", "share", "quality", "prompt_tokens_mean", "total_ms_mean"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    return _label(df, con, runs).sort_values(["run_id", "strategy", "route"])[cols].reset_index(drop=True)


@dataclass(frozen=True)
class RoutingSection:
    """What the report's routing section shows (empty frames when no run has both paths)."""

    metric: str
    cost_by: CostBy
    strategies: pd.DataFrame  # STRATEGY_COLUMNS + *_vs_lc ratios and quality_vs_oracle
    routes: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def routing_section(
    con: duckdb.DuckDBPyConnection,
    run_ids: Sequence[str] | None = None,
    *,
    metric: str | None = None,
    cost_by: CostBy = "computed_tokens",
    correct_at: float = 1.0,
) -> RoutingSection:
    """Routers vs always-RAG, always-LC and the oracle, per run that measured both paths.

    Ratios are against the run's always-LC configuration of highest quality (ties: label):
    `prompt_tokens_vs_lc` 0.35 means 65% fewer prompt tokens than sending every question with
    the whole document. `quality_vs_oracle` is the quality gap to the ceiling (negative = below).
    """
    metric = metric or headline_metric(con, _runs(con, run_ids))
    table = strategy_table(con, run_ids, metric=metric, cost_by=cost_by, correct_at=correct_at)
    notes: list[str] = []
    keep = []
    for run_id, group in table.groupby("run_id", sort=False):
        roles = set(group["role"])
        if not {"retrieval", "long_context"} <= roles:
            notes.append(f"{run_id}: no routing comparison (needs both a RAG and a long-context pipeline)")
            continue
        if "router" not in roles:
            notes.append(f"{run_id}: no router in this run; showing the oracle ceiling and both baselines")
        lc = group[group["role"] == "long_context"]
        ref = lc.sort_values(["quality", "strategy"], ascending=[False, True]).iloc[0]
        oracle_quality = group.loc[group["role"] == "oracle", "quality"].iloc[0]
        g = group.copy()
        for col, name in _VS_LC.items():
            g[name] = g[col] / ref[col] if pd.notna(ref[col]) and ref[col] > 0 else None
        g["quality_vs_oracle"] = g["quality"] - oracle_quality
        keep.append(g)
    strategies = pd.concat(keep, ignore_index=True) if keep else table.iloc[0:0]
    runs = list(dict.fromkeys(strategies["run_id"])) if not strategies.empty else []
    routes = route_table(con, runs, metric=metric, cost_by=cost_by, correct_at=correct_at) if runs else (
        pd.DataFrame(columns=["run_id", "strategy", "route", "n", "share", "quality",
                              "prompt_tokens_mean", "total_ms_mean"]))
    return RoutingSection(metric=metric, cost_by=cost_by, strategies=strategies, routes=routes, notes=notes)

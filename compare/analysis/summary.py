"""SQL over the store that the report (and the CLI) read: one row per pipeline, per length.

Scores are long in the store (one row per metric), so every metric a run recorded becomes a
column here without the report knowing metric names in advance. Failed requests score 0 in the
quality means (every pipeline over the same asked questions) but are kept out of latency and
token statistics: a request that never produced a token has no TTFT, and averaging its zero
context into a mean would flatter the pipeline that failed.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pandas as pd

from compare.store import views

# A needle corpus records the length it aimed for; other corpora only the measured length.
_KEY = ["run_id", "pipeline", "params_hash"]


def latest_run_id(con: duckdb.DuckDBPyConnection) -> str | None:
    """The newest run that has predictions: a run that just started has nothing to report."""
    row = con.execute(
        "SELECT r.run_id FROM runs r WHERE EXISTS (SELECT 1 FROM predictions p WHERE p.run_id = r.run_id) "
        "ORDER BY r.created_at DESC, r.run_id DESC LIMIT 1"
    ).fetchone()
    return str(row[0]) if row else None


def _runs(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> list[str]:
    """`None` means every run in the store (the report narrows it to the latest itself)."""
    if run_ids is not None:
        return list(run_ids)
    return [str(r[0]) for r in con.execute("SELECT run_id FROM runs ORDER BY created_at").fetchall()]


# Before the headline existed (or with a spec that left it out), the report read these instead.
FALLBACK_METRICS = ("contains", "exact_match", "token_f1")


def headline_metric(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> str:
    """`headline` (each question's own metric) when the runs scored it, else the first answer
    metric they did: old runs stay readable, and `ragvslc score` adds the headline to them."""
    runs = _runs(con, run_ids)
    scored = {str(r[0]) for r in con.execute(
        "SELECT DISTINCT metric FROM scores WHERE list_contains(?, run_id) AND value IS NOT NULL", [runs]
    ).fetchall()}
    return next((m for m in ("headline", *FALLBACK_METRICS) if m in scored), "headline")


def primary_metrics(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> dict[str, int]:
    """Questions per primary metric in these runs (what the headline is made of); empty for a
    store from before the column existed (read-only connections are not migrated)."""
    has_column = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'examples' "
        "AND column_name = 'primary_metric'"
    ).fetchone()
    if not has_column or not has_column[0]:
        return {}
    rows = con.execute(
        "SELECT coalesce(primary_metric, 'undeclared'), count(*) FROM examples "
        "WHERE list_contains(?, run_id) GROUP BY 1 ORDER BY 2 DESC, 1", [_runs(con, run_ids)]
    ).fetchall()
    return {str(m): int(n) for m, n in rows}


def describe(pipeline: str, params: dict[str, Any]) -> str:
    """A legend-sized name: the knobs a reader compares, not every parameter."""
    if "top_k" in params:  # a retriever's own knobs (a router's are nested under "rag")
        return f"{pipeline} k={params.get('top_k')} cs={params.get('chunk_size')} {params.get('order')}"
    marker = f" cache={params['cache_marker']}" if params.get("cache_marker") else ""
    if params.get("truncation", "error") != "error":
        return f"{pipeline} trunc={params['truncation']}{marker}"
    return pipeline + marker


def pipeline_labels(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> pd.DataFrame:
    """One unique label per (run, pipeline, params): charts colour by it, so it must not collide."""
    rows = con.execute(
        "SELECT run_id, pipeline, params_hash, any_value(params) FROM predictions "
        "WHERE list_contains(?, run_id) GROUP BY ALL ORDER BY ALL",
        [_runs(con, run_ids)],
    ).fetchall()
    df = pd.DataFrame(
        [(r, p, h, describe(p, json.loads(params))) for r, p, h, params in rows],
        columns=[*_KEY, "label"],
    )
    clash = df.duplicated(["run_id", "label"], keep=False)
    df.loc[clash, "label"] = df.loc[clash, "label"] + " #" + df.loc[clash, "params_hash"].str[:6]
    if df["run_id"].nunique() > 1:
        df["label"] = df["label"] + " @" + df["run_id"]
    return df


def _metric_means(
    con: duckdb.DuckDBPyConnection, runs: list[str], per_length: bool, answered_only: bool = False
) -> pd.DataFrame:
    """Mean of every metric as its own column, over the asked questions: a failed request scores
    0 on every answer metric that applies to its question (some row of the run scored it),
    so each pipeline is compared on the same questions; retrieval metrics (evidence_*) keep their
    value. NULL scores (not applicable) are skipped. `answered_only`: the second, named view,
    over the requests that answered."""
    length = ", e.length AS length" if per_length else ""
    views.install(con)
    long = con.execute(
        f"""
        WITH s AS (
            SELECT s.*, p.error IS NOT NULL AS failed,
                bool_or(s.value IS NOT NULL) OVER (PARTITION BY s.run_id, s.example_id, s.metric) AS applies
            FROM scores s JOIN predictions p USING (run_id, example_id, pipeline, params_hash)
            WHERE list_contains(?, s.run_id)
        )
        SELECT s.run_id, s.pipeline, s.params_hash{length}, s.metric,
            avg(CASE WHEN s.failed AND s.applies AND NOT starts_with(s.metric, 'evidence')
                THEN 0.0 ELSE s.value END) AS mean
        FROM s JOIN example_rows e USING (run_id, example_id)
        WHERE NOT (? AND s.failed) GROUP BY ALL
        """,
        [runs, answered_only],
    ).df()
    index = [*_KEY, "length"] if per_length else _KEY
    if long.empty:
        return pd.DataFrame(columns=index)
    wide = long.pivot_table(index=index, columns="metric", values="mean", dropna=False).reset_index()
    wide.columns.name = None
    return wide


def pipeline_summary(
    con: duckdb.DuckDBPyConnection, run_ids: list[str] | None, *, answered_only: bool = False
) -> list[dict[str, Any]]:
    """Per pipeline configuration: questions asked and answered, quality means (over the asked
    questions; `answered_only`: over the answered ones), latency percentiles, token means."""
    runs = _runs(con, run_ids)
    ok = "FILTER (WHERE error IS NULL)"
    stats = con.execute(
        f"""
        SELECT run_id, pipeline, params_hash, count(*) AS n, count(*) AS asked,
            count(*) - count(error) AS answered, count(error) AS errors,
            quantile_cont(ttft_ms, 0.5) {ok} AS ttft_p50_ms, quantile_cont(ttft_ms, 0.95) {ok} AS ttft_p95_ms,
            quantile_cont(e2e_ms, 0.5) {ok} AS e2e_p50_ms, quantile_cont(e2e_ms, 0.95) {ok} AS e2e_p95_ms,
            quantile_cont(total_ms, 0.5) {ok} AS total_p50_ms,
            avg(context_tokens) {ok} AS context_tokens_mean, avg(prompt_tokens) {ok} AS prompt_tokens_mean,
            avg(cached_tokens) {ok} AS cached_tokens_mean
        FROM predictions WHERE list_contains(?, run_id) GROUP BY ALL
        """,
        [runs],
    ).df()
    means = _metric_means(con, runs, per_length=False, answered_only=answered_only)
    df = pipeline_labels(con, runs).merge(stats, on=_KEY).merge(means, on=_KEY, how="left")
    df = df.sort_values(["run_id", "label"]).astype(object)
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in df.to_dict("records")]


def by_length(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> pd.DataFrame:
    """Quality and latency per document length: the x axis of the length charts."""
    runs = _runs(con, run_ids)
    views.install(con)
    stats = con.execute(
        """
        SELECT p.run_id, p.pipeline, p.params_hash, e.length, count(*) AS n,
            count(p.error) AS errors, avg(e.doc_length) AS doc_tokens,
            bool_or(json_extract_string(e.tags, '$.target_tokens') IS NOT NULL) AS is_target,
            quantile_cont(p.ttft_ms, 0.5) FILTER (WHERE p.error IS NULL) AS ttft_p50_ms,
            quantile_cont(p.e2e_ms, 0.5) FILTER (WHERE p.error IS NULL) AS e2e_p50_ms
        FROM request_rows p JOIN example_rows e USING (run_id, example_id)
        WHERE list_contains(?, p.run_id) GROUP BY ALL
        """,
        [runs],
    ).df()
    means = _metric_means(con, runs, per_length=True)
    df = pipeline_labels(con, runs).merge(stats, on=_KEY).merge(means, on=[*_KEY, "length"], how="left")
    return df.sort_values(["run_id", "label", "length"]).reset_index(drop=True)


def needle_grid(
    con: duckdb.DuckDBPyConnection, run_ids: list[str] | None, metric: str = "contains"
) -> pd.DataFrame:
    """Mean score per (target length, depth) cell; empty when the run has no depth tags."""
    runs = _runs(con, run_ids)
    grid = con.execute(
        """
        SELECT s.run_id, s.pipeline, s.params_hash,
            TRY_CAST(json_extract_string(e.tags, '$.target_tokens') AS DOUBLE) AS target_tokens,
            TRY_CAST(json_extract_string(e.tags, '$.depth') AS DOUBLE) AS depth,
            avg(s.value) AS score, count(s.value) AS n
        FROM scores s JOIN examples e USING (run_id, example_id)
        WHERE list_contains(?, s.run_id) AND s.metric = ?
            AND json_extract_string(e.tags, '$.depth') IS NOT NULL
            AND json_extract_string(e.tags, '$.target_tokens') IS NOT NULL
        GROUP BY ALL
        """,
        [runs, metric],
    ).df()
    return pipeline_labels(con, runs).merge(grid, on=_KEY).sort_values(["label", "target_tokens", "depth"])

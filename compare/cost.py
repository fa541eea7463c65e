"""The cost model: what a query costs as a function of queries per document (sheets: prices.py).

Long context pays for the whole document on the first question (cold prefill) and, while the
prefix cache holds it, little for the next ones; RAG pays for an index once per document and a
short prompt per question. Cost per query at q questions per document is therefore

    cost(q) = (one_time_per_doc + q * marginal_per_query) / q = marginal + one_time / q

for every pipeline, with one_time and marginal built only from measured tokens and seconds.
Two views price the same measurements: API-equivalent ($ per token, cached tokens cheaper,
tiers by prompt length, optional cache storage) and self-hosted ($ per hour of busy hardware).

Rules, stated once:
- Warm request: cached_tokens >= WARM_FRACTION * context_tokens (the document, not just the
  template, was served from the cache). Every other request is cold. A missing cached_tokens
  (server did not report it) counts as 0 and is flagged.
- Per document, cold cost = mean of its cold requests and warm cost = mean of its warm ones.
  A document with no warm request gets a derived warm cost: the cold request with
  min(prompt, context_tokens) tokens cached (API), and its prefill seconds scaled by the tokens
  left to compute (self-hosted). A document with no cold request gets a derived cold cost: the
  warm request with nothing cached, its cached tokens prefilled at the pipeline's measured
  prefill seconds per computed token (else the same kind's in the run, else the run's). Rows
  say how many documents were derived.
- Busy seconds of a request = TTFT * k_prefill + (E2E - TTFT) * k_decode, where k is, per run,
  vLLM's own request prefill (decode) seconds summed over the run divided by the clients'
  summed TTFT (E2E - TTFT), capped at 1. The ratio strips queueing and HTTP time out of the
  client's clock while keeping each request's own measurement; without server stats k = 1.
  Busy seconds charge a request as if it had the hardware alone: exact at concurrency 1, an
  overcount of batched work above it (flagged).
- RAG's index build (index_stats.build_s, once per document; a whole-corpus index split evenly
  over the documents asked about) and retrieval seconds (per query:
  question embedding + search) are CPU seconds priced at the sheet's index/local hourly rate.
- Routers (any other pipeline kind) pay their measured mean per query plus any index they
  built: their cold/warm mix is the run's own, not extrapolated in q (flagged).
- Failed requests are left out: their tokens are unknown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from compare.prices import (
    VIEWS,
    ApiPrices,
    PriceSheet,
    PriceSheetError,
    SelfHosted,
    Tier,
    api_cost,
    load_price_sheet,
    sheet_json,
)
from compare.summary import pipeline_labels
from compare.types import CORPUS_INDEX

__all__ = [  # the price-sheet names stay importable from here, where callers first met them
    "BREAK_EVEN_COLUMNS", "DEFAULT_CURVE_Q", "VIEWS", "WARM_FRACTION", "ApiPrices", "PriceSheet",
    "PriceSheetError", "SelfHosted", "Tier", "api_cost", "break_even", "cost_columns", "cost_curve_frame",
    "cost_report", "cost_table", "load_price_sheet", "sheet_json",
]

# Warm means "the document was already in the cache": nearly all of it, not a shared haystack
# prefix. At 0.5 a needle-grid request that reused half a haystack (the prefix before an
# earlier needle) counted as warm and made long context's marginal cost look like a cold one.
WARM_FRACTION = 0.9
DEFAULT_CURVE_Q = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000)
BREAK_EVEN_COLUMNS = ("view", "a", "b", "break_even_q", "cheaper_below", "cheaper_above", "status")
_Q_KEY = re.compile(r"^usd_per_query_q(\d+)$")


# measured requests ----------------------------------------------------------------------------
_REQUESTS = """
WITH cal AS (
    SELECT run_id,
        sum(value) FILTER (WHERE name = 'vllm:request_prefill_time_seconds_sum') AS prefill_s,
        sum(value) FILTER (WHERE name = 'vllm:request_decode_time_seconds_sum') AS decode_s
    FROM server_stats WHERE list_contains($runs, run_id) GROUP BY run_id
), req AS (
    SELECT p.run_id, p.pipeline, p.params_hash, r.concurrency,
        coalesce(json_extract_string(p.params, '$.kind'), p.pipeline) AS kind,
        e.doc_ids AS doc_key, p.prompt_tokens, coalesce(p.cached_tokens, 0) AS cached_tokens,
        p.cached_tokens IS NULL AS cache_unreported, coalesce(p.output_tokens, 0) AS output_tokens,
        p.context_tokens, p.ttft_ms / 1e3 AS ttft_s, greatest(p.e2e_ms - p.ttft_ms, 0) / 1e3 AS decode_wall_s,
        p.retrieval_ms / 1e3 AS retrieval_s, p.total_ms,
        p.context_tokens > 0 AND coalesce(p.cached_tokens, 0) >= $warm * p.context_tokens AS warm
    FROM predictions p JOIN examples e USING (run_id, example_id) JOIN runs r USING (run_id)
    WHERE list_contains($runs, p.run_id) AND p.error IS NULL AND p.prompt_tokens IS NOT NULL
), k AS (
    SELECT run_id,
        CASE WHEN c.prefill_s > 0 AND sum(ttft_s) > 0 THEN least(1.0, c.prefill_s / sum(ttft_s)) END AS kp,
        CASE WHEN c.decode_s > 0 AND sum(decode_wall_s) > 0
            THEN least(1.0, c.decode_s / sum(decode_wall_s)) END AS kd
    FROM req LEFT JOIN cal c USING (run_id) GROUP BY run_id, c.prefill_s, c.decode_s
), busy AS (
    SELECT req.*, k.kp IS NOT NULL AND k.kd IS NOT NULL AS calibrated,
        ttft_s * coalesce(k.kp, 1.0) AS prefill_s, decode_wall_s * coalesce(k.kd, 1.0) AS decode_s,
        CASE WHEN NOT warm THEN ttft_s * coalesce(k.kp, 1.0) END AS cold_prefill_s,
        CASE WHEN NOT warm THEN prompt_tokens - cached_tokens END AS cold_computed
    FROM req JOIN k USING (run_id)
), rate AS (  -- prefill s per computed token of cold requests: per pipeline, else kind, else run
    SELECT *,
        sum(cold_prefill_s) OVER pipe / nullif(sum(cold_computed) OVER pipe, 0) AS s_tok_pipe,
        sum(cold_prefill_s) OVER kind / nullif(sum(cold_computed) OVER kind, 0) AS s_tok_kind,
        sum(cold_prefill_s) OVER run / nullif(sum(cold_computed) OVER run, 0) AS s_tok_run
    FROM busy
    WINDOW pipe AS (PARTITION BY run_id, pipeline, params_hash), kind AS (PARTITION BY run_id, kind),
        run AS (PARTITION BY run_id)
)
SELECT *, least(prompt_tokens, greatest(cached_tokens, context_tokens)) AS warm_cached,
    prefill_s + decode_s AS busy_s,
    decode_s + CASE WHEN warm THEN prefill_s + coalesce(s_tok_pipe, s_tok_kind, s_tok_run) * cached_tokens
        ELSE prefill_s * (prompt_tokens - least(prompt_tokens, greatest(cached_tokens, context_tokens)))
             / nullif(prompt_tokens - cached_tokens, 0) END AS busy_alt_s
FROM rate
"""

# One row per pipeline: per-document cold/warm means (measured, else the derived counterpart),
# then averaged over documents so each document weighs the same whatever its question count.
_PER_PIPELINE = """
WITH doc AS (
    SELECT run_id, pipeline, params_hash, doc_key,
        count(*) FILTER (WHERE NOT warm) AS n_cold, count(*) FILTER (WHERE warm) AS n_warm,
        coalesce(avg(api_usd) FILTER (WHERE NOT warm), avg(api_alt_usd) FILTER (WHERE warm)) AS cold_api,
        coalesce(avg(api_usd) FILTER (WHERE warm), avg(api_alt_usd) FILTER (WHERE NOT warm)) AS warm_api,
        coalesce(avg(busy_s) FILTER (WHERE NOT warm), avg(busy_alt_s) FILTER (WHERE warm)) AS cold_busy_s,
        coalesce(avg(busy_s) FILTER (WHERE warm), avg(busy_alt_s) FILTER (WHERE NOT warm)) AS warm_busy_s,
        coalesce(avg(cached_tokens) FILTER (WHERE warm), avg(warm_cached) FILTER (WHERE NOT warm))
            AS cache_tokens,
        avg(api_usd) AS mean_api, avg(busy_s) AS mean_busy_s, avg(retrieval_s) AS retrieval_s
    FROM cost_requests GROUP BY ALL
), doc_keys AS (
    SELECT DISTINCT run_id, pipeline, params_hash, doc_key FROM cost_requests
), doc_ids AS (
    SELECT DISTINCT *, unnest(from_json(doc_key, '["VARCHAR"]')) AS doc_id FROM doc_keys
), idx AS (
    SELECT run_id, pipeline, params_hash, doc_key, sum(build_s) AS index_s FROM (
        SELECT d.run_id, d.pipeline, d.params_hash, d.doc_key, i.build_s
        FROM doc_ids d JOIN index_stats i USING (run_id, pipeline, params_hash, doc_id)
        UNION ALL  -- one whole-corpus index: each asked-about document carries an equal share
        SELECT k.run_id, k.pipeline, k.params_hash, k.doc_key,
            i.build_s / count(*) OVER (PARTITION BY k.run_id, k.pipeline, k.params_hash)
        FROM doc_keys k JOIN index_stats i USING (run_id, pipeline, params_hash)
        WHERE i.doc_id = $corpus_index
    ) GROUP BY ALL
), lat AS (
    SELECT run_id, pipeline, params_hash, any_value(kind) AS kind, any_value(concurrency) AS concurrency,
        count(*) AS n, count(*) FILTER (WHERE cache_unreported) AS cache_unreported,
        bool_and(calibrated) AS calibrated,
        quantile_cont(total_ms, 0.5) AS total_p50_ms,
        quantile_cont(total_ms, 0.5) FILTER (WHERE NOT warm) AS cold_total_p50_ms,
        quantile_cont(total_ms, 0.5) FILTER (WHERE warm) AS warm_total_p50_ms
    FROM cost_requests GROUP BY ALL
)
SELECT lat.*, count(*) AS docs, sum(n_cold) AS cold, sum(n_warm) AS warm,
    count(*) FILTER (WHERE n_warm = 0) AS docs_warm_derived,
    count(*) FILTER (WHERE n_cold = 0) AS docs_cold_derived,
    avg(cold_api - warm_api) AS prefix_api, avg(warm_api) AS warm_api,
    avg(cold_busy_s - warm_busy_s) AS prefix_busy_s, avg(warm_busy_s) AS warm_busy_s,
    avg(cache_tokens) AS cache_tokens, avg(mean_api) AS mean_api, avg(mean_busy_s) AS mean_busy_s,
    avg(doc.retrieval_s) AS retrieval_s, avg(coalesce(idx.index_s, 0)) AS index_s
FROM doc LEFT JOIN idx USING (run_id, pipeline, params_hash, doc_key)
    JOIN lat USING (run_id, pipeline, params_hash)
GROUP BY ALL
"""


def _run_ids(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None) -> list[str]:
    if run_ids is not None:
        return list(run_ids)
    return [str(r[0]) for r in con.execute("SELECT run_id FROM runs ORDER BY created_at").fetchall()]


def _priced_requests(con: duckdb.DuckDBPyConnection, runs: list[str], sheet: PriceSheet) -> pd.DataFrame:
    """One row per successful request with its API $ and busy seconds, measured and derived."""
    df = con.execute(_REQUESTS, {"runs": runs, "warm": WARM_FRACTION}).df()
    api = sheet.api
    if api is None or df.empty:
        df["api_usd"] = math.nan
        df["api_alt_usd"] = math.nan
        return df
    measured, alt = [], []
    cols = ["prompt_tokens", "cached_tokens", "output_tokens", "warm_cached", "warm"]
    for prompt, cached, out, warm_cached, warm in df[cols].itertuples(index=False):
        measured.append(api_cost(api, int(prompt), int(cached), int(out)))
        # The counterpart: a warm request with nothing cached, a cold one with its document cached.
        alt.append(api_cost(api, int(prompt), 0 if warm else int(warm_cached), int(out)))
    df["api_usd"], df["api_alt_usd"] = measured, alt
    return df


def _num(v: Any) -> float | None:
    """NaN/NULL (a quantity the data cannot give) as None, so tables print '-' and JSON null."""
    return None if v is None or pd.isna(v) else float(v)


def _view_terms(p: dict[str, Any], view: str, sheet: PriceSheet) -> tuple[float, float, list[str]]:
    """(one-time $ per document, marginal $ per query, caveats) of one pipeline in one view."""
    prefix_cached = p["kind"] == "long_context"  # the prompt starts with the whole document
    notes: list[str] = []
    if view == "api":
        api = sheet.api
        assert api is not None
        local = api.local_usd_per_hour / 3600
        one_time, marginal = p["index_s"] * local, p["retrieval_s"] * local
        if prefix_cached:
            storage = p["cache_tokens"] / 1e6 * api.cache_storage_usd_per_mtok_hour * api.cache_hold_hours
            one_time += p["prefix_api"] + storage
            marginal += p["warm_api"]
            if storage:
                notes.append(f"cache storage {api.cache_hold_hours:g} h per document included")
        else:
            marginal += p["mean_api"]
        return one_time, marginal, notes
    hosted = sheet.self_hosted
    assert hosted is not None
    rate, index_rate = hosted.usd_per_hour / 3600, hosted.index_rate / 3600
    one_time, marginal = p["index_s"] * index_rate, p["retrieval_s"] * index_rate
    if prefix_cached:
        one_time += p["prefix_busy_s"] * rate
        marginal += p["warm_busy_s"] * rate
    else:
        marginal += p["mean_busy_s"] * rate
    if not p["calibrated"]:
        notes.append("busy s = client TTFT + decode time (no server prefill/decode stats)")
    if p["concurrency"] > 1:
        notes.append(f"concurrency {p['concurrency']}: per-request busy s overcounts batched work")
    return one_time, marginal, notes


def _basis(p: dict[str, Any]) -> tuple[str, list[str]]:
    """How the warm cost was obtained, and what the reader must know about it."""
    notes = []
    if p["cache_unreported"]:
        notes.append(f"no cached_tokens reported for {p['cache_unreported']} requests: counted as uncached")
    if p["kind"] not in ("long_context", "rag"):  # routers: a mix of both paths
        notes.append("priced at the run's own mix of cold/warm requests: not extrapolated in q")
    if p["kind"] != "long_context":
        return "n/a", notes
    docs, dw, dc = p["docs"], p["docs_warm_derived"], p["docs_cold_derived"]
    if dw:
        notes.append(f"warm cost DERIVED for {dw}/{docs} docs (no warm request: cold, context cached)")
    if dc:
        notes.append(f"cold cost DERIVED for {dc}/{docs} docs (no cold request: warm, nothing cached)")
    basis = "measured" if not dw else "derived" if dw == docs else f"derived {dw}/{docs} docs"
    return basis, notes


def cost_table(
    con: duckdb.DuckDBPyConnection,
    run_ids: Sequence[str] | None,
    sheet: PriceSheet,
    queries_per_doc: Sequence[int],
) -> list[dict[str, Any]]:
    """One row per (pipeline, view): one-time and marginal $, $ per query at each q, latency p50."""
    if not queries_per_doc or any(q < 1 for q in queries_per_doc):
        raise ValueError(f"queries per document must be integers >= 1, got {list(queries_per_doc)}")
    runs = _run_ids(con, run_ids)
    requests = _priced_requests(con, runs, sheet)
    if requests.empty:
        return []
    con.register("cost_requests", requests)
    try:
        per_pipe = con.execute(_PER_PIPELINE, {"corpus_index": CORPUS_INDEX}).df()
    finally:
        con.unregister("cost_requests")
    labels = pipeline_labels(con, runs)
    per_pipe = labels.merge(per_pipe, on=["run_id", "pipeline", "params_hash"])
    rows = []
    for p in per_pipe.sort_values(["run_id", "label"]).to_dict("records"):
        basis, notes = _basis(p)
        for view in sheet.views():
            one_time, marginal, view_notes = _view_terms(p, view, sheet)
            row: dict[str, Any] = {
                "run_id": p["run_id"], "pipeline": p["pipeline"], "params_hash": p["params_hash"],
                "label": p["label"], "kind": p["kind"], "view": view, "n": int(p["n"]),
                "docs": int(p["docs"]), "cold": int(p["cold"]), "warm": int(p["warm"]), "warm_basis": basis,
                "one_time_usd_per_doc": _num(one_time), "marginal_usd_per_query": _num(marginal),
            }
            for q in queries_per_doc:
                row[f"usd_per_query_q{q}"] = _num(marginal + one_time / q)
            row |= {k: _num(p[k]) for k in ("total_p50_ms", "cold_total_p50_ms", "warm_total_p50_ms")}
            row["price_sheet"] = f"{sheet.name} @ {sheet.date.isoformat()}"
            row["caveats"] = "; ".join(notes + view_notes)
            rows.append(row)
    return rows


def cost_columns(queries_per_doc: Sequence[int]) -> list[str]:
    """The order in which `ragvslc cost` prints a cost_table row."""
    return [
        "label", "view", "n", "cold", "warm", "warm_basis", "one_time_usd_per_doc",
        "marginal_usd_per_query", *(f"usd_per_query_q{q}" for q in queries_per_doc),
        "cold_total_p50_ms", "warm_total_p50_ms", "caveats",
    ]


def break_even(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where each pair of pipelines (same view) costs the same per query.

    Both curves are marginal + one_time / q, so they cross once at most, in closed form:
    q* = (one_time_a - one_time_b) / (marginal_b - marginal_a). Below q* the pipeline with the
    smaller one-time cost is cheaper, above it the one with the smaller marginal cost.
    """
    qs = sorted({int(m.group(1)) for r in table for k in r if (m := _Q_KEY.match(k))})
    lo, hi = (qs[0], qs[-1]) if qs else (1, math.inf)
    out = []
    for view in dict.fromkeys(r["view"] for r in table):
        rows = [r for r in table if r["view"] == view and r["marginal_usd_per_query"] is not None
                and r["one_time_usd_per_doc"] is not None]
        for a, b in combinations(rows, 2):
            fa, ma = a["one_time_usd_per_doc"], a["marginal_usd_per_query"]
            fb, mb = b["one_time_usd_per_doc"], b["marginal_usd_per_query"]
            entry = {"view": view, "a": a["label"], "b": b["label"], "break_even_q": None}
            if math.isclose(ma, mb, rel_tol=1e-9, abs_tol=1e-15):
                same = math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-15)
                cheaper = None if same else (a if fa < fb else b)["label"]
                entry |= {"cheaper_below": cheaper, "cheaper_above": cheaper,
                          "status": "identical" if same else "never (parallel curves)"}
            else:
                q_star = (fa - fb) / (mb - ma)
                low_fixed, low_marginal = (a if fa < fb else b)["label"], (a if ma < mb else b)["label"]
                if q_star <= 1:
                    entry |= {"cheaper_below": low_marginal, "cheaper_above": low_marginal,
                              "status": "never for q >= 1"}
                else:
                    where = "" if lo <= q_star <= hi else f", outside {lo}..{hi}"
                    entry |= {"break_even_q": q_star, "cheaper_below": low_fixed,
                              "cheaper_above": low_marginal, "status": f"crosses at q={q_star:.3g}{where}"}
            out.append(entry)
    return out


def cost_curve_frame(
    con: duckdb.DuckDBPyConnection,
    run_ids: Sequence[str] | None,
    sheet: PriceSheet,
    queries_per_doc: Sequence[int] = DEFAULT_CURVE_Q,
) -> pd.DataFrame:
    """Long format for a chart: x = queries_per_doc (log), y = usd_per_query, colour = pipeline."""
    table = cost_table(con, run_ids, sheet, queries_per_doc)
    records = [
        (r["label"], q, r["view"], r[f"usd_per_query_q{q}"]) for r in table for q in queries_per_doc
    ]
    return pd.DataFrame(records, columns=["pipeline", "queries_per_doc", "view", "usd_per_query"])


def cost_report(
    db_path: Path | str, run_ids: Sequence[str] | None, sheet_path: Path | str, queries_per_doc: Sequence[int]
) -> list[dict[str, Any]]:
    """What `ragvslc cost` prints (in cost_columns order); errors are ValueErrors worth showing."""
    sheet = load_price_sheet(sheet_path)
    if not Path(db_path).exists():
        raise ValueError(f"no database at {db_path}")
    with duckdb.connect(str(db_path), read_only=True) as con:
        if run_ids:
            known = {str(r[0]) for r in con.execute("SELECT run_id FROM runs").fetchall()}
            unknown = sorted(set(run_ids) - known)
            if unknown:
                raise ValueError(f"unknown run ids: {', '.join(unknown)}")
        rows = cost_table(con, run_ids, sheet, queries_per_doc)
    if not rows:
        raise ValueError("no successful predictions to price in the selected runs")
    return rows

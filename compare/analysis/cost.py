"""The cost table: what a query costs as a function of queries per document (sheets: prices.py).

Long context pays for the whole document on the first question (its cold prefill) and, while
the prefix cache holds it, little for the next ones; RAG pays for an index once per document and
a short prompt per question. Cost per query at q questions per document is therefore

    cost(q) = (one_time_per_doc + q * marginal_per_query) / q = marginal + one_time / q

for every pipeline, with one_time and marginal built only from measured tokens and seconds by
the one cost function, compare/analysis/doc_costs.py (its docstring states the rules: cold = the
document prefilled from nothing, warm = served from the cache, failed rows count what they
spent, router steps priced apart), and averaged here over documents so each document weighs the
same whatever its question count. Two views price the same measurements: API-equivalent ($ per
token, cached tokens cheaper, tiers by prompt length, optional cache storage) and self-hosted
($ per hour of busy hardware). On a sheet of 2026's shape the API view also bills a document's
cache write (at its TTL's multiplier), its storage, and, given a rate of questions per document
per hour, the re-prefills of a cache that expired between them (compare/analysis/cache_terms.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from compare.analysis import traffic_cache
from compare.analysis.cache_terms import NO_USE, CacheUse
from compare.analysis.cost_notes import cache_notes, embed_note, eviction_note, router_notes
from compare.analysis.doc_costs import PIPE_KEY, Costed, doc_costs
from compare.analysis.prices import (
    VIEWS,
    ApiPrices,
    CacheWrite,
    PriceSheet,
    PriceSheetError,
    SelfHosted,
    Tier,
    api_cost,
    load_price_sheet,
    sheet_json,
)
from compare.analysis.summary import pipeline_labels
from compare.analysis.traffic_cache import KvCache
from compare.store import views
from compare.store.views import WARM_FRACTION

__all__ = [  # the price-sheet names stay importable from here, where callers first met them
    "BREAK_EVEN_COLUMNS", "DEFAULT_CURVE_Q", "VIEWS", "WARM_FRACTION", "ApiPrices", "CacheUse", "CacheWrite",
    "PriceSheet",
    "PriceSheetError", "SelfHosted", "Tier", "api_cost", "break_even", "cost_columns", "cost_curve_frame",
    "cost_report", "cost_table", "load_price_sheet", "sheet_json", "usd_at",
]

DEFAULT_CURVE_Q = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000)
BREAK_EVEN_COLUMNS = ("view", "a", "b", "break_even_q", "cheaper_below", "cheaper_above", "status")
_Q_KEY = re.compile(r"^usd_per_query_q(\d+)$")

_LATENCY = """
SELECT run_id, pipeline, params_hash, quantile_cont(total_ms, 0.5) AS total_p50_ms,
    quantile_cont(total_ms, 0.5) FILTER (WHERE NOT warm) AS cold_total_p50_ms,
    quantile_cont(total_ms, 0.5) FILTER (WHERE warm) AS warm_total_p50_ms
FROM request_rows WHERE list_contains($runs, run_id) AND error IS NULL AND total_ms IS NOT NULL
GROUP BY ALL
"""


def _run_ids(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None) -> list[str]:
    if run_ids is not None:
        return list(run_ids)
    return views.idle_runs(con)  # load runs only when named


def _num(v: Any) -> float | None:
    """NaN/NULL (a quantity the data cannot give) as None, so tables print '-' and JSON null."""
    return None if v is None or pd.isna(v) else float(v)


def _fallback_terms(docs: pd.DataFrame) -> pd.Series:
    """Per (pipeline config, view): [[fallback one-time $ / documents, fallback share], ...] over
    the documents where only a share of the questions sent the document (usd_at reads them)."""
    def terms(g: pd.DataFrame) -> list[list[float]]:
        part = g[g["fallback_one_time_usd"].fillna(0.0) != 0]
        return [[float(c) / len(g), float(f)] for c, f in zip(part["fallback_one_time_usd"],
                                                              part["fallback_share"], strict=True)]
    return docs.groupby([*PIPE_KEY, "view"], sort=False).apply(terms, include_groups=False).rename(
        "fallback_terms")


def usd_at(row: dict[str, Any], q: float) -> float | None:
    """A cost_table row's $ per query at q questions per document: marginal + one_time / q, less
    the one-time cost of a router's fallback on the documents where none of q questions fell
    back (probability (1 - f)^q, fallbacks independent at the measured share f). None: unpriced."""
    one_time, marginal = row["one_time_usd_per_doc"], row["marginal_usd_per_query"]
    if one_time is None or marginal is None:
        return None
    unpaid = sum(c * (1 - f) ** q for c, f in row.get("fallback_terms") or [])
    return float(marginal + (one_time - unpaid) / q)


def _per_pipeline(docs: pd.DataFrame) -> pd.DataFrame:
    """Per (pipeline config, view): document means of the terms, sums of the counts."""
    return docs.groupby([*PIPE_KEY, "view"], as_index=False, sort=False).agg(
        kind=("kind", "first"), role=("role", "first"), concurrency=("concurrency", "first"),
        n=("n", "sum"),
        docs=("doc_key", "size"),
        cold=("cold", "sum"), warm=("warm", "sum"), cache_unreported=("cache_unreported", "sum"),
        calibrated=("calibrated", "all"), docs_warm_derived=("warm_derived", "sum"),
        docs_cold_derived=("cold_derived", "sum"), storage=("storage_usd", "max"),
        docs_write_derived=("cold_write_derived", "sum"), writes_derived=("writes_derived", "sum"),
        expiry_p=("expiry_p", "max"), refused=("self_hosted_refused", "any"),
        prefix_requests=("prefix_requests", "sum"),
        embed_tokens=("query_embed_tokens", "sum"), index_embed_tokens=("index_embed_tokens", "sum"),
        one_time=("one_time_usd", "mean"), marginal=("marginal_usd", "mean"), paid=("run_paid_usd", "mean"))


_MARKERS = """
SELECT run_id, pipeline, params_hash, any_value(json_extract_string(params, '$.cache_marker')) AS cache_marker
FROM predictions WHERE list_contains($runs, run_id) GROUP BY ALL
"""


def _notes(p: dict[str, Any], sheet: PriceSheet, use: CacheUse = NO_USE) -> tuple[str, list[str]]:
    """How the long-context terms were obtained (its warm basis), and what the reader must know."""
    notes = [p["left_out"]] if isinstance(p.get("left_out"), str) else []
    if p["cache_unreported"]:
        notes.append(f"no cached_tokens reported for {p['cache_unreported']} requests: counted as uncached")
    if p["failed_priced"]:
        notes.append(f"{p['failed_priced']} failed requests priced at what they spent before failing")
    if p["unpriced"]:
        notes.append(f"{p['unpriced']} requests with no usage reported: left out of the means "
                     "(spend unknown)")
    if p["embed_tokens"] or p["index_embed_tokens"]:
        notes.append(embed_note(sheet))
    if p["role"] == "router" and p["prefix_requests"]:
        notes += router_notes(p)
    if p["view"] == "api" and sheet.api is not None:
        notes += cache_notes(p, sheet.api, use)
    if p["view"] == "self_hosted":
        notes += eviction_note(p, use)
        if not p["calibrated"]:
            notes.append("busy s = client TTFT + decode time (no server prefill/decode stats)")
        if p["refused"]:
            notes.append(f"self-hosted $ refused at concurrency {p['concurrency']}: requests' busy seconds "
                         "overlap in a batch, so their sum overbills the engine; measure at concurrency 1")
    if p["role"] != "long_context":
        return "n/a", notes
    docs, dw, dc = int(p["docs"]), int(p["docs_warm_derived"]), int(p["docs_cold_derived"])
    if dw:
        notes.append(f"warm cost DERIVED for {dw}/{docs} docs (no warm request: cold, context cached)")
    if dc:
        notes.append(f"cold cost DERIVED for {dc}/{docs} docs (no request prefilled the document from "
                     "nothing: its cached tokens priced as computed)")
    basis = "measured" if not dw else "derived" if dw == docs else f"derived {dw}/{docs} docs"
    return basis, notes


def cost_table(
    con: duckdb.DuckDBPyConnection,
    run_ids: Sequence[str] | None,
    sheet: PriceSheet,
    queries_per_doc: Sequence[int],
    use: CacheUse = NO_USE,
    costed: Costed | None = None,
) -> list[dict[str, Any]]:
    """One row per (pipeline, view): one-time and marginal $, $ per query at each q, what the run
    paid per query, latency p50. `use`: the workload's cache use (default: none stated, so no
    expiry between questions and the sheet's hold hours). `costed`: doc_costs of the same runs,
    sheet and use when the caller has it (the cost function is most of the time here)."""
    if not queries_per_doc or any(q < 1 for q in queries_per_doc):
        raise ValueError(f"queries per document must be integers >= 1, got {list(queries_per_doc)}")
    runs = _run_ids(con, run_ids)
    costed = costed if costed is not None else doc_costs(con, runs, sheet, use)
    if costed.docs.empty:
        return []
    per_pipe = _per_pipeline(costed.docs).merge(costed.counts, on=PIPE_KEY, how="left")
    per_pipe = per_pipe.merge(costed.left_out, on=PIPE_KEY, how="left")
    per_pipe = per_pipe.merge(_fallback_terms(costed.docs).reset_index(), on=[*PIPE_KEY, "view"], how="left")
    latency = con.execute(_LATENCY, {"runs": runs}).df()  # doc_costs installed the views
    per_pipe = per_pipe.merge(latency, on=PIPE_KEY, how="left")
    per_pipe = per_pipe.merge(con.execute(_MARKERS, {"runs": runs}).df(), on=PIPE_KEY, how="left")
    per_pipe = pipeline_labels(con, runs).merge(per_pipe, on=PIPE_KEY)
    rows = []
    order = {v: i for i, v in enumerate(sheet.views())}
    records = per_pipe.to_dict("records")
    for p in sorted(records, key=lambda r: (r["run_id"], r["label"], order[r["view"]])):
        basis, notes = _notes(p, sheet, use)
        one_time, marginal = float(p["one_time"]), float(p["marginal"])
        row: dict[str, Any] = {
            "run_id": p["run_id"], "pipeline": p["pipeline"], "params_hash": p["params_hash"],
            "label": p["label"], "kind": p["kind"], "role": p["role"], "view": p["view"], "n": int(p["n"]),
            "failed": int(p["failed"]), "unpriced": int(p["unpriced"]),
            "docs": int(p["docs"]), "cold": int(p["cold"]), "warm": int(p["warm"]), "warm_basis": basis,
            "one_time_usd_per_doc": _num(one_time), "marginal_usd_per_query": _num(marginal),
            "fallback_terms": p["fallback_terms"] if isinstance(p["fallback_terms"], list) else [],
        }
        for q in queries_per_doc:
            row[f"usd_per_query_q{q}"] = usd_at(row, q)
        row["run_paid_usd_per_query"] = _num(p["paid"])
        row |= {k: _num(p[k]) for k in ("total_p50_ms", "cold_total_p50_ms", "warm_total_p50_ms")}
        row["price_sheet"] = f"{sheet.name} @ {sheet.date.isoformat()}"
        row["caveats"] = "; ".join(notes)
        rows.append(row)
    return rows


def cost_columns(queries_per_doc: Sequence[int]) -> list[str]:
    """The order in which `ragvslc cost` prints a cost_table row."""
    return [
        "label", "view", "n", "failed", "cold", "warm", "warm_basis", "one_time_usd_per_doc",
        "marginal_usd_per_query", *(f"usd_per_query_q{q}" for q in queries_per_doc),
        "run_paid_usd_per_query", "cold_total_p50_ms", "warm_total_p50_ms", "caveats",
    ]


def _crossings(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
    """Where two curves with a router's fallback term cross (q >= 1): sign changes of their
    difference on a log grid up to 1e6, each refined by Brent's method (scipy). No closed form:
    the fallback term is not a multiple of 1/q."""
    from scipy.optimize import brentq

    def diff(q: float) -> float:
        return float(usd_at(a, q) or 0.0) - float(usd_at(b, q) or 0.0)

    grid = np.geomspace(1.0, 1e6, 600)
    values = np.array([diff(q) for q in grid])
    scale = max(float(np.abs(values).max()), 1e-300)
    values = np.where(np.abs(values) <= 1e-12 * scale, 0.0, values)
    roots = []
    for i in range(len(grid) - 1):
        lo, hi = values[i], values[i + 1]
        if lo == 0.0 and (i == 0 or values[i - 1] != 0.0):
            roots.append(float(grid[i]))
        elif lo * hi < 0:
            roots.append(float(brentq(diff, grid[i], grid[i + 1], xtol=1e-12, rtol=1e-12)))
    return roots


def _numeric_pair(a: dict[str, Any], b: dict[str, Any], entry: dict[str, Any], lo: float, hi: float
                  ) -> dict[str, Any]:
    """break_even's entry for a pair where either curve has a router's fallback term."""
    def cheaper(q: float) -> str | None:
        ua, ub = usd_at(a, q) or 0.0, usd_at(b, q) or 0.0
        return None if math.isclose(ua, ub, rel_tol=1e-9, abs_tol=1e-15) else (a if ua < ub else b)["label"]

    roots = [q for q in _crossings(a, b) if q > 1 and not math.isclose(q, 1.0)]
    below, above = cheaper(1.0), cheaper(1e6)
    if not roots:
        same = below is None and above is None
        return entry | {"cheaper_below": below or above, "cheaper_above": above or below,
                        "status": "identical" if same else "never for q >= 1"}
    q_star = roots[0]
    where = "" if lo <= q_star <= hi else f", outside {lo}..{hi}"
    again = f" (and again at {', '.join(f'{r:.3g}' for r in roots[1:])})" if len(roots) > 1 else ""
    return entry | {"break_even_q": q_star, "cheaper_below": below,
                    "cheaper_above": above, "status": f"crosses at q={q_star:.3g}{where}{again}"}


def break_even(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where each pair of pipelines (same view) costs the same per query.

    Both curves are marginal + one_time / q, so they cross once at most, in closed form:
    q* = (one_time_a - one_time_b) / (marginal_b - marginal_a). Below q* the pipeline with the
    smaller one-time cost is cheaper, above it the one with the smaller marginal cost. A router
    whose fallback is a share of its questions adds a term that is not 1/q (usd_at): such a pair
    is solved numerically, and a router that costs more at every q never "crosses".
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
            if a.get("fallback_terms") or b.get("fallback_terms"):
                out.append(_numeric_pair(a, b, entry, lo, hi))
                continue
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
    use: CacheUse = NO_USE,
) -> pd.DataFrame:
    """Long format for a chart: x = queries_per_doc (log), y = usd_per_query, colour = pipeline."""
    table = cost_table(con, run_ids, sheet, queries_per_doc, use)
    records = [(r["label"], q, r["view"], r[f"usd_per_query_q{q}"]) for r in table for q in queries_per_doc]
    return pd.DataFrame(records, columns=["pipeline", "queries_per_doc", "view", "usd_per_query"])


def cost_report(
    db_path: Path | str, run_ids: Sequence[str] | None, sheet_path: Path | str,
    queries_per_doc: Sequence[int], use: CacheUse = NO_USE, kv: KvCache | None = None,
) -> list[dict[str, Any]]:
    """What `ragvslc cost` prints (in cost_columns order); errors are ValueErrors worth showing.
    `kv`: the deployment's KV cache, so the self-hosted view prices evictions at that traffic."""
    sheet = load_price_sheet(sheet_path)
    if not Path(db_path).exists():
        raise ValueError(f"no database at {db_path}")
    with duckdb.connect(str(db_path), read_only=True) as con:
        if run_ids:
            known = {str(r[0]) for r in con.execute("SELECT run_id FROM runs").fetchall()}
            unknown = sorted(set(run_ids) - known)
            if unknown:
                raise ValueError(f"unknown run ids: {', '.join(unknown)}")
        if kv is not None:
            use = traffic_cache.over_runs(con, _run_ids(con, run_ids), kv, use)
        rows = cost_table(con, run_ids, sheet, queries_per_doc, use)
    if not rows:
        raise ValueError("no successful predictions to price in the selected runs")
    return rows

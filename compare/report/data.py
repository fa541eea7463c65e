"""The numbers behind the dashboard's charts, as plain frames (tests check them, charts draw them).

Each function answers one question of the report from stored rows only, and returns an empty
frame (not an error) when the run cannot answer it: the report then omits that chart with a
note. Rows are read through the store's views (compare/store/views.py), never restated: a
request is warm there, for the latency split and the cost split alike, so both always agree on
which requests were cold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from compare.analysis import cost
from compare.analysis.prices import ChosenSheet
from compare.analysis.summary import pipeline_labels, run_names
from compare.store import views

PERCENTILES = (50, 95, 99)
# measure -> (column, header). RAG's end-to-end includes retrieval: total_ms, not e2e_ms.
LATENCY_MEASURES = {
    "ttft": ("ttft_ms", "TTFT"),
    "tpot": ("tpot_ms", "TPOT"),
    "e2e": ("total_ms", "E2E incl. retrieval"),
}
MAX_EXACT_LENGTHS = 12  # beyond this many distinct lengths, group them into powers of two
_KEY = ["run_id", "pipeline", "params_hash"]

_REQUESTS = """
SELECT p.run_id, p.pipeline, p.params_hash, r.concurrency,
    p.kind, p.role, e.length, p.context_tokens, p.ttft_ms, p.tpot_ms, p.total_ms,
    CASE WHEN p.warm THEN 'warm' ELSE 'cold' END AS cache
FROM request_rows p JOIN example_rows e USING (run_id, example_id) JOIN runs r USING (run_id)
WHERE list_contains($runs, p.run_id) AND p.error IS NULL AND p.ttft_ms IS NOT NULL
"""


def _length_groups(lengths: pd.Series) -> pd.Series:
    """A needle grid keeps its few lengths; a real corpus (every document its own length) is
    grouped into powers of two, so a percentile is taken over more than one request."""
    if lengths.nunique() <= MAX_EXACT_LENGTHS:
        return lengths
    return lengths.map(lambda v: float(2 ** round(math.log2(v))) if v and v > 0 else v)


def latency_requests(con: duckdb.DuckDBPyConnection, runs: Sequence[str]) -> pd.DataFrame:
    """One row per successful request: its timings, document length group and cold/warm state."""
    views.install(con)
    df = con.execute(_REQUESTS, {"runs": list(runs)}).df()
    if df.empty:
        return df
    df["length"] = df.groupby("run_id")["length"].transform(_length_groups)
    return pipeline_labels(con, list(runs)).merge(df, on=_KEY)


def latency_percentiles(con: duckdb.DuckDBPyConnection, runs: Sequence[str]) -> pd.DataFrame:
    """Per (run, pipeline, length, cold/warm): TTFT, TPOT and E2E p50/p95/p99 in ms.

    Percentiles interpolate linearly (numpy's default, DuckDB's quantile_cont), as the summary
    table does, so the same requests give the same p50 in both places.
    """
    req = latency_requests(con, runs)
    if req.empty:
        return pd.DataFrame()
    keys = ["run_id", "label", "pipeline", "params_hash", "kind", "concurrency", "length", "cache"]
    rows = []
    for key, g in req.groupby(keys, sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        row["n"] = len(g)
        row["context_tokens_mean"] = float(g["context_tokens"].mean())
        for m, (col, _) in LATENCY_MEASURES.items():
            values = g[col].dropna().to_numpy(dtype=float)
            for p in PERCENTILES:
                row[f"{m}_p{p}_ms"] = float(np.percentile(values, p)) if len(values) else None
        rows.append(row)
    return pd.DataFrame(rows)


def latency_long(
    pct: pd.DataFrame, measures: Sequence[str] = ("ttft", "e2e"), percentiles: Sequence[int] = (50, 95)
) -> pd.DataFrame:
    """The chart's rows: one per (pipeline, length, cache, measure, percentile)."""
    if pct.empty:
        return pd.DataFrame()
    cols = {f"{m}_p{p}_ms": (LATENCY_MEASURES[m][1], f"p{p}") for m in measures for p in percentiles}
    ids = ["run_id", "label", "concurrency", "length", "cache", "n", "context_tokens_mean"]
    long = pct.melt(id_vars=ids, value_vars=list(cols), var_name="col", value_name="ms").dropna(subset=["ms"])
    long["measure"] = long["col"].map(lambda c: cols[c][0])
    long["percentile"] = long["col"].map(lambda c: cols[c][1])
    return long.drop(columns="col").reset_index(drop=True)


# cost -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostData:
    """The cost table at the report's q values, its curves, and where the curves cross."""

    chosen: ChosenSheet
    queries_per_doc: tuple[int, ...]
    table: list[dict[str, Any]]
    pairs: list[dict[str, Any]]  # cost.break_even over the whole table
    curve: pd.DataFrame  # run_id, label, view, queries_per_doc, usd_per_query
    marks: pd.DataFrame  # same-run crossings: run_id, view, a, b, break_even_q, usd_per_query
    caveats: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # same run, different kinds: in words


def usd_at(row: dict[str, Any], q: float) -> float | None:
    """A pipeline's $ per query at q questions per document: the model's own formula."""
    return cost.usd_at(row, q)  # a router's fallback term included


def curve_points(hi: float) -> list[int]:
    """1, 2, 3, 5, 7, 10, ... up to hi: dense enough on a log axis to draw a 1/q curve."""
    points, decade = [], 1
    while decade <= hi:
        points += [decade * m for m in (1, 2, 3, 5, 7) if decade * m <= hi]
        decade *= 10
    return points


def cost_data(
    con: duckdb.DuckDBPyConnection, runs: Sequence[str], chosen: ChosenSheet, queries_per_doc: Sequence[int]
) -> CostData | None:
    """None when no request of the runs can be priced (nothing succeeded)."""
    qs = tuple(sorted(set(queries_per_doc)))
    table = cost.cost_table(con, list(runs), chosen.sheet, qs)
    if not table:
        return None
    pairs = cost.break_even(table)
    run_of = {(r["label"], r["view"]): r for r in table}
    marks, verdicts = [], []
    for p in pairs:
        a, b = run_of[(p["a"], p["view"])], run_of[(p["b"], p["view"])]
        if a["run_id"] == b["run_id"] and a["role"] != b["role"]:  # the question: LC or RAG?
            verdicts.append(_verdict(p))
        if p["break_even_q"] is not None and a["run_id"] == b["run_id"]:
            q = float(p["break_even_q"])
            marks.append(
                {
                    "run_id": a["run_id"],
                    "view": p["view"],
                    "a": p["a"],
                    "b": p["b"],
                    "break_even_q": q,
                    "usd_per_query": usd_at(a, q),
                    "text": f"q*={q:.3g}",
                    "status": p["status"],
                }
            )
    crossing = [m["break_even_q"] for m in marks if m["break_even_q"] < 1e6]
    hi = max([max(qs), *(10 ** math.ceil(math.log10(q * 1.5)) for q in crossing)])
    curve = pd.DataFrame(
        [(r["run_id"], r["label"], r["view"], q, usd_at(r, q)) for r in table for q in curve_points(hi)],
        columns=["run_id", "label", "view", "queries_per_doc", "usd_per_query"],
    ).dropna()
    caveats = sorted(
        {f"{r['label']} ({r['view']}): {c}" for r in table for c in r["caveats"].split("; ") if c}
    )
    return CostData(chosen, qs, table, pairs, curve, pd.DataFrame(marks), caveats, verdicts)


def _verdict(pair: dict[str, Any]) -> str:
    """A pair's break-even in words: which pipeline is cheaper on which side of it."""
    view = pair["view"].replace("_", "-")
    if pair["break_even_q"] is not None:
        return (
            f"{view}: {pair['cheaper_below']} cheaper below q={pair['break_even_q']:.3g} queries/doc, "
            f"{pair['cheaper_above']} above"
        )
    if pair["cheaper_below"] is None:
        return f"{view}: {pair['a']} and {pair['b']} cost the same"
    cheaper = pair["cheaper_below"]
    other = pair["b"] if cheaper == pair["a"] else pair["a"]
    why = "" if pair["status"] == "never for q >= 1" else f" ({pair['status']})"
    return f"{view}: {cheaper} cheaper than {other} at every q >= 1{why}"


# quality vs cost ----------------------------------------------------------------------------------
def pareto(points: pd.DataFrame, x: str = "usd_per_query", y: str = "quality") -> pd.Series:
    """True for points no other point dominates (cost <= and quality >=, one of them strictly)."""
    xs, ys = points[x].to_numpy(dtype=float), points[y].to_numpy(dtype=float)
    out = []
    for i in range(len(points)):
        dominated = (xs <= xs[i]) & (ys >= ys[i]) & ((xs < xs[i]) | (ys > ys[i]))
        out.append(not bool(dominated.any()))
    return pd.Series(out, index=points.index)


def frontier(summary_rows: Sequence[dict[str, Any]], data: CostData, q: int, metric: str) -> pd.DataFrame:
    """Each pipeline config at q questions per document: (cost, mean quality), frontier flagged
    per view over every run shown (comparing runs is the point of showing several) and, for the
    run picker, within each run."""
    quality = {(r["run_id"], r["label"]): r.get(metric) for r in summary_rows}
    rows = [
        {
            "run_id": r["run_id"],
            "label": r["label"],
            "view": r["view"],
            "usd_per_query": usd_at(r, q),
            "quality": quality.get((r["run_id"], r["label"])),
            "n": r["n"],
        }
        for r in data.table
    ]
    df = pd.DataFrame(rows).dropna(subset=["usd_per_query", "quality"])
    if df.empty:
        return df
    df["quality"] = df["quality"].astype(float)
    df["on_frontier"] = df["on_run_frontier"] = False
    for _, g in df.groupby("view"):
        df.loc[g.index, "on_frontier"] = pareto(g)
    for _, g in df.groupby(["run_id", "view"]):  # what the chart shows when one run is picked
        df.loc[g.index, "on_run_frontier"] = pareto(g)
    return df.sort_values(["view", "usd_per_query"]).reset_index(drop=True)


# retrieval -------------------------------------------------------------------------------------
def evidence_recall(con: duckdb.DuckDBPyConnection, runs: Sequence[str]) -> pd.DataFrame:
    """Mean evidence recall per retrieving config (one with a top_k), with its k and chunk size."""
    df = con.execute(
        """
        SELECT s.run_id, s.pipeline, s.params_hash, any_value(p.params) AS params,
            avg(s.value) AS recall, count(s.value) AS n
        FROM scores s JOIN predictions p USING (run_id, example_id, pipeline, params_hash)
        WHERE list_contains(?, s.run_id) AND s.metric = 'evidence_recall' AND s.value IS NOT NULL
            AND json_extract(p.params, '$.top_k') IS NOT NULL
        GROUP BY ALL
        """,
        [list(runs)],
    ).df()
    if df.empty:
        return df
    params = df.pop("params").map(json.loads)
    df["top_k"] = params.map(lambda p: int(p["top_k"]))
    df["chunk_size"] = params.map(lambda p: p.get("chunk_size"))
    # A line joins configs that differ only in k: name it by every other knob that varies.
    keys = sorted({k for p in params for k in p} - {"top_k"})
    varying = [k for k in keys if k != "chunk_size" and len({json.dumps(p.get(k)) for p in params}) > 1]
    df["series"] = params.map(
        lambda p: ", ".join([f"{p.get('chunk_size')}-tok chunks", *(f"{k}={p.get(k)}" for k in varying)])
    )
    df = pipeline_labels(con, list(runs)).merge(df, on=_KEY)
    if df["run_id"].nunique() > 1:
        df["series"] = df["series"] + " \u00b7 " + df["run_id"].map(run_names(con, list(runs)))
    return df.sort_values(["run_id", "series", "top_k", "label"]).reset_index(drop=True)


def varies_k(recall: pd.DataFrame) -> bool:
    """Whether some run tried several k with all else equal: then recall is a curve in k."""
    if recall.empty:
        return False
    return bool((recall.groupby(["run_id", "series"])["top_k"].nunique() > 1).any())


_EVAL_METRICS = ("recall", "recall_at_k", "mrr", "ndcg", "hit_rate", "precision")
_EVAL_GROUPS = ("run_id", "label", "config", "pipeline", "embedder", "index_kind", "chunk_size")


def retrieval_eval(con: duckdb.DuckDBPyConnection, runs: Sequence[str]) -> pd.DataFrame:
    """recall@k / MRR vs k from an optional `retrieval_eval` table (a retrieval-only evaluation
    written by another tool); empty when the table, or a `k` column and a metric, are absent."""
    cols = [
        str(r[0])
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'retrieval_eval'"
        ).fetchall()
    ]
    metrics = [c for c in _EVAL_METRICS if c in cols]
    if "k" not in cols or not metrics:
        return pd.DataFrame()
    groups = [c for c in _EVAL_GROUPS if c in cols]
    where = "WHERE list_contains($runs, run_id)" if "run_id" in cols else ""
    select = ", ".join([*groups, "k", *(f"avg({m}) AS {m}" for m in metrics)])
    df = con.execute(
        f"SELECT {select} FROM retrieval_eval {where} GROUP BY ALL ORDER BY ALL",
        {"runs": list(runs)} if where else {},
    ).df()
    if df.empty:
        return df
    df["series"] = df[groups].astype(str).agg(" ".join, axis=1) if groups else "all"
    return df.melt(
        id_vars=[*groups, "series", "k"], value_vars=metrics, var_name="metric", value_name="value"
    ).dropna(subset=["value"])

"""The one cost function: per document, what a pipeline's first question and each further one cost.

`ragvslc cost` and the report (compare/analysis/cost.py, compare/report/data.py) and `ragvslc recommend`
(compare/analysis/recommend.py) all price stored rows here and differ only in how they weigh the
documents (cost and the report: each document alike; recommend: by the workload's lengths), so
the same runs and sheet give the same $ per query in all three. Per document and view,

    cost(q) = marginal + one_time / q

Rules, stated once:
- Each HTTP request is priced on its own, at its own prompt's tier: a router's fallback row is
  its steps (RAG try, then long context), not their sum. A failed row counts what it spent
  before failing (the steps it completed, e.g. a router's RAG try); a row that reported no
  usage (a failed request, a stream without its usage chunk) has an unknown spend: it is left
  out of the means (so it costs what the others do, not nothing) and counted as `unpriced`.
  A missing cached_tokens counts as 0 (flagged).
- Busy seconds of a request = TTFT * k_prefill + (E2E - TTFT) * k_decode, with k per run =
  vLLM's summed request prefill (decode) seconds over the clients' summed TTFT (E2E - TTFT) of
  every request, capped at 1; k = 1 without server stats (flagged).
- Long context (its prompt starts with the whole document, so its cost depends on the cache):
  one_time = cold - warm (+ cache storage for the hold time), marginal = later, where
  - cold is the document prefilled from nothing: every prompt token priced as computed (API; the
    answer template's few tokens included, so it is conservative by at most those; and the
    document's cache write where the sheet bills one), the
    request's prefill seconds plus its cached tokens at the pipeline's measured prefill seconds
    per computed token (self-hosted). It is the mean over the document's requests that found at
    most the template cached (cached <= prompt - context), else over those with the fewest
    cached tokens (DERIVED, flagged). A first request that found a sibling document's prefix
    cached therefore does not shrink the one-time cost, whatever the run order.
  - warm is the measured mean of its warm requests (cached >= WARM_FRACTION x context), else
    each request with its document counted as cached (DERIVED, flagged).
  - later is the measured mean of the document's requests after its first (in run order): a
    re-prefill after eviction raises it, and never lowers the one-time cost. With a single
    request per document, later = warm.
- API view, on a sheet with a chosen cache TTL and a stated rate of questions per document per
  hour: a later question finds the cache expired with probability p and re-pays cold, so
  marginal = (1 - p) later + p cold, one_time = (1 - p)(cold - warm) + storage (cache writes,
  storage and expiry: compare/analysis/cache_terms.py). Without a rate, p = 0: the lines above.
- Other kinds (RAG, routers): one_time = their index build, marginal = measured mean per
  question (a router's cold/warm mix is the run's own: not extrapolated in q, flagged).
- Index builds (index_stats, a whole-corpus index split evenly over the documents asked about)
  and retrieval seconds are priced at the sheet's local/index hourly rate; where an embeddings
  endpoint embedded them, its billed tokens (index_stats.embed_tokens once, predictions.
  embed_tokens per question) at the sheet's [embeddings] usd_per_mtok too, in both views.
- run_paid = what this run paid per question: measured tokens and seconds, with whatever prefix
  it shared across documents, at its own questions per document (shown beside the model).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from compare.analysis import cache_terms
from compare.analysis.cache_terms import NO_USE, PREFIX_CACHED_ROLES, CacheUse
from compare.analysis.prices import PriceSheet
from compare.core.types import CORPUS_INDEX
from compare.store import views

__all__ = ["DOC_KEY", "NO_USE", "PIPE_KEY", "PREFIX_CACHED_ROLES", "CacheUse", "Costed", "doc_costs",
           "priced_requests", "weighted_usd"]
DOC_KEY = ["run_id", "pipeline", "params_hash", "doc_key"]
PIPE_KEY = ["run_id", "pipeline", "params_hash"]

_ROWS = """
SELECT p.run_id, p.pipeline, p.params_hash, p.example_id, p.seq, r.concurrency,
    p.kind, p.role, e.doc_ids AS doc_key,
    p.error IS NOT NULL AS failed, p.steps, p.prompt_tokens, p.cached_tokens, p.cache_write_tokens,
    p.output_tokens,
    p.context_tokens, p.ttft_ms, p.e2e_ms, coalesce(p.retrieval_ms, 0) / 1e3 AS retrieval_s, p.total_ms,
    coalesce(p.embed_tokens, 0) AS embed_tokens
FROM request_rows p JOIN example_rows e USING (run_id, example_id) JOIN runs r USING (run_id)
WHERE list_contains($runs, p.run_id)
"""
_CALIBRATION = """
SELECT run_id,
    sum(value) FILTER (WHERE name = 'vllm:request_prefill_time_seconds_sum') AS prefill_s,
    sum(value) FILTER (WHERE name = 'vllm:request_decode_time_seconds_sum') AS decode_s
FROM server_stats WHERE list_contains($runs, run_id) GROUP BY run_id
"""


def _known(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _request(row: dict[str, Any], step: dict[str, Any] | None) -> dict[str, Any] | None:
    """One priced request (a row, or one step of it); None when its usage is unknown."""
    src = step if step is not None else row
    raw = [src.get(k) for k in ("prompt_tokens", "output_tokens", "ttft_ms", "e2e_ms")]
    values = [float(v) for v in raw if v is not None and _known(v)]
    if len(values) < len(raw) or values[0] < 0 or values[1] < 0:
        return None  # no usage chunk (or -1 placeholders): never priced as if it were free
    prompt, out, ttft, e2e = values
    cached, write = src.get("cached_tokens"), src.get("cache_write_tokens")
    return {
        "prompt": int(prompt), "cached": int(cached) if cached is not None and _known(cached) else 0,
        "cache_unreported": not _known(cached), "output": int(out),
        "write": float(write) if write is not None and _known(write) else math.nan,
        "ctx": int(src.get("context_tokens") or 0), "ttft_s": ttft / 1e3,
        "decode_wall_s": max(e2e - ttft, 0) / 1e3,
    }


_ROW_KEYS = (*PIPE_KEY, "example_id", "seq", "kind", "role", "doc_key", "concurrency")
_REQ_COLUMNS = [*_ROW_KEYS, "prompt", "cached", "cache_unreported", "output", "write", "ctx", "ttft_s",
                "decode_wall_s"]


def _expand(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[bool]]:
    """Rows -> priced requests (a row, or each of its steps); and whether each row is priced."""
    reqs, priced = [], []
    for row in rows.to_dict("records"):
        steps = json.loads(row["steps"]) if row["steps"] else [None]
        found = [r for st in steps if (r := _request(row, st)) is not None]
        ok = len(found) == len(steps) or (bool(row["failed"]) and bool(found))
        priced.append(ok)
        reqs += [{k: row[k] for k in _ROW_KEYS} | r for r in (found if ok else [])]
    req = pd.DataFrame(reqs, columns=_REQ_COLUMNS)
    for col in ("prompt", "cached", "output", "ctx", "seq", "concurrency"):
        req[col] = req[col].astype(int)
    req[["ttft_s", "decode_wall_s", "write"]] = req[["ttft_s", "decode_wall_s", "write"]].astype(float)
    req["cache_unreported"] = req["cache_unreported"].astype(bool)
    return req, priced


def priced_requests(
    con: duckdb.DuckDBPyConnection, runs: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(requests, rows): one row per priced HTTP request with its busy seconds, and one per
    stored prediction with whether it failed and whether its spend is known (`priced`)."""
    views.install(con)
    rows = con.execute(_ROWS, {"runs": list(runs)}).df().astype(object)
    rows = rows.where(rows.notna(), None)
    req, priced = _expand(rows)
    rows["priced"] = pd.Series(priced, index=rows.index, dtype=bool)
    rows["failed"] = rows["failed"].astype(bool)
    if req.empty:
        return req, rows
    cal = con.execute(_CALIBRATION, {"runs": list(runs)}).df().set_index("run_id").astype(float)
    sums = req.groupby("run_id")[["ttft_s", "decode_wall_s"]].sum().reindex(cal.index)
    kp = (cal["prefill_s"] / sums["ttft_s"]).clip(upper=1.0)
    kd = (cal["decode_s"] / sums["decode_wall_s"]).clip(upper=1.0)
    kp, kd = kp[np.isfinite(kp) & (kp > 0)], kd[np.isfinite(kd) & (kd > 0)]
    req["calibrated"] = req["run_id"].isin(kp.index) & req["run_id"].isin(kd.index)
    req["prefill_s"] = req["ttft_s"] * req["run_id"].map(kp).fillna(1.0).astype(float)
    req["decode_s"] = req["decode_wall_s"] * req["run_id"].map(kd).fillna(1.0).astype(float)
    req["busy_s"] = req["prefill_s"] + req["decode_s"]
    req["warm"] = views.is_warm(req["cached"], req["ctx"])
    req["from_nothing"] = req["cached"] <= (req["prompt"] - req["ctx"]).clip(lower=0)
    req["doc_cached"] = np.minimum(req["prompt"], np.maximum(req["cached"], req["ctx"]))
    # Prefill seconds per computed token of the requests that were not warm: per pipeline, else
    # its kind, else the run (what a cached token would have cost to compute).
    cold = req[~req["warm"]].assign(computed=lambda d: d["prompt"] - d["cached"])
    rate = pd.Series(np.nan, index=req.index)
    for keys in (PIPE_KEY, ["run_id", "kind"], ["run_id"]):
        per = cold.groupby(keys)[["prefill_s", "computed"]].sum()
        s_tok = (per["prefill_s"] / per["computed"].where(per["computed"] > 0)).rename("s_tok")
        rate = rate.fillna(req.join(s_tok, on=keys)["s_tok"])
    req["busy_s_cold"] = req["busy_s"] + rate.fillna(0.0) * req["cached"]
    left = (req["prompt"] - req["doc_cached"]) / (req["prompt"] - req["cached"]).where(lambda s: s > 0)
    derived = req["decode_s"] + req["prefill_s"] * left.fillna(0.0)
    req["busy_s_warm"] = req["busy_s"].where(req["warm"], derived)
    return req, rows


_INDEX = """
SELECT run_id, pipeline, params_hash, doc_id, build_s,
    CASE WHEN embed_model IS NOT NULL THEN coalesce(embed_tokens, 0) ELSE 0 END AS embed_tokens
FROM index_stats WHERE list_contains(?, run_id)
"""


def _index_terms(con: duckdb.DuckDBPyConnection, runs: Sequence[str], keys: pd.DataFrame) -> pd.DataFrame:
    """Index build seconds and endpoint-billed embedding tokens per (pipeline, document key): its
    documents' own indexes, plus an equal share of a whole-corpus index among the document keys
    the pipeline was asked about. Tokens embedded in-process are not billed (seconds are)."""
    idx = con.execute(_INDEX, [list(runs)]).df()
    cols = {"build_s": "index_s", "embed_tokens": "index_embed_tokens"}
    out = pd.DataFrame(0.0, index=pd.MultiIndex.from_frame(keys[DOC_KEY]), columns=list(cols.values()))
    if idx.empty:
        return out
    own = idx[idx["doc_id"] != CORPUS_INDEX].set_index([*PIPE_KEY, "doc_id"])[list(cols)]
    whole = idx[idx["doc_id"] == CORPUS_INDEX].groupby(PIPE_KEY)[list(cols)].sum()
    shares = keys.groupby(PIPE_KEY)["doc_key"].transform("count")
    for i, k in enumerate(keys[DOC_KEY].itertuples(index=False)):
        pipe = (k.run_id, k.pipeline, k.params_hash)
        for j, col in enumerate(cols):
            s = sum(float(own[col].get((*pipe, d), 0.0)) for d in json.loads(k.doc_key))
            out.iloc[i, j] = s + float(whole[col].get(pipe, 0.0)) / int(shares.iloc[i])
    return out


@dataclass(frozen=True)
class Costed:
    """What the cost function gives its callers: the per-document terms and the row counts."""

    docs: pd.DataFrame  # per (run, pipeline config, doc_key, view): one_time_usd, marginal_usd, ...
    counts: pd.DataFrame  # per pipeline config: asked, failed, failed_priced, unpriced


def _mean_where(values: pd.Series, mask: pd.Series, by: list[pd.Series]) -> pd.Series:
    """Per document: the mean of `values` over the rows where `mask` holds (NaN when none do)."""
    sums = pd.DataFrame({"v": values.where(mask, 0.0), "m": mask.astype(float)}).groupby(by).sum()
    return sums["v"] / sums["m"].where(sums["m"] > 0)


def _prefix_terms(req: pd.DataFrame, by: list[pd.Series], col: str) -> pd.DataFrame:
    """Per long-context document in one view (`col`, with its `_cold` and `_warm` counterparts):
    cold, warm and later (module docstring)."""
    doc = req.groupby(by)
    # Cold's least derived basis: the requests that computed the most of the document themselves.
    any_nothing = doc["from_nothing"].transform("any")
    basis = req["from_nothing"].where(any_nothing, req["cached"] == doc["cached"].transform("min"))
    warm = _mean_where(req[col], req["warm"], by).fillna(doc[f"{col}_warm"].mean())
    later = _mean_where(req[col], req["seq"] > doc["seq"].transform("min"), by)
    return pd.DataFrame({"cold": _mean_where(req[f"{col}_cold"], basis.astype(bool), by), "warm": warm,
                         "later": later.fillna(warm)})


def _counts(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(failed_priced=rows["failed"] & rows["priced"], unpriced=~rows["priced"])
    return rows.groupby(PIPE_KEY, as_index=False).agg(
        asked=("example_id", "size"), failed=("failed", "sum"), failed_priced=("failed_priced", "sum"),
        unpriced=("unpriced", "sum"))


def _documents(req: pd.DataFrame, rows: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Per document key: kind, counts, flags, index and retrieval seconds, storage tokens."""
    by = [req[k] for k in DOC_KEY]
    doc = req.groupby(by)
    base = doc.agg(kind=("kind", "first"), role=("role", "first"), concurrency=("concurrency", "first"),
                   warm=("warm", "sum"),
                   cache_unreported=("cache_unreported", "sum"), calibrated=("calibrated", "all"),
                   any_nothing=("from_nothing", "any"), requests=("warm", "size"),
                   writes_derived=("write_derived", "sum"))
    base["cold"] = base.pop("requests") - base["warm"]
    prefix = base["role"].isin(PREFIX_CACHED_ROLES)
    base["warm_derived"] = prefix & (base["warm"] == 0)
    base["cold_derived"] = prefix & ~base.pop("any_nothing")
    # The cold term's write is derived when the request it is taken from reported none itself.
    basis = req["from_nothing"].where(doc["from_nothing"].transform("any"), True)
    base["cold_write_derived"] = _mean_where(req["cold_write_derived"].astype(float), basis, by) > 0
    base["storage_tokens"] = _mean_where(req["cached"].astype(float), req["warm"], by).fillna(
        doc["doc_cached"].mean())
    per_doc = rows.groupby(DOC_KEY).agg(n=("example_id", "size"), retrieval_s=("retrieval_s", "mean"),
                                        query_embed_tokens=("embed_tokens", "mean"))
    base = base.join(per_doc)
    for col in index.columns:
        base[col] = index[col].reindex(base.index).fillna(0.0).to_numpy()
    return base


def _view_terms(
    view: str, sheet: PriceSheet, base: pd.DataFrame, use: CacheUse
) -> tuple[str, float, float, pd.Series, float]:
    """(request $ column, $ per unit, local $ per second, storage $ per document, expiry p)."""
    if view == "api":
        api = sheet.api
        assert api is not None
        storage = cache_terms.storage_usd(api, base["storage_tokens"], use)
        p = cache_terms.expiry_probability(api, use)
        return "api_usd", 1.0, api.local_usd_per_hour / 3600, storage, p
    hosted = sheet.self_hosted
    assert hosted is not None
    storage = base["storage_tokens"] * 0.0  # vLLM's prefix cache: memory already paid by the hour
    return "busy_s", hosted.usd_per_hour / 3600, hosted.index_rate / 3600, storage, 0.0


def doc_costs(
    con: duckdb.DuckDBPyConnection, runs: Sequence[str], sheet: PriceSheet, use: CacheUse = NO_USE
) -> Costed:
    """One row per (run, pipeline config, document key, view) with one_time_usd, marginal_usd,
    run_paid_usd and what the caller must say about them (counts, derived, calibrated).
    `use`: how the workload uses the provider's cache (rate for expiry, hold hours)."""
    req, rows = priced_requests(con, runs)
    counts = _counts(rows)
    if req.empty:
        return Costed(pd.DataFrame(), counts)
    cache_terms.write_columns(req, sheet.api)
    if sheet.api is not None:
        cache_terms.api_columns(req, sheet.api)
    cost_cols = ["busy_s", *(["api_usd"] if sheet.api else [])]
    per_row = req.groupby([*PIPE_KEY, "example_id"])[cost_cols].sum()
    rows = rows[rows["priced"]].join(per_row, on=[*PIPE_KEY, "example_id"])
    rows["retrieval_s"] = rows["retrieval_s"].astype(float)
    rows["embed_tokens"] = rows["embed_tokens"].astype(float)
    index = _index_terms(con, runs, rows[DOC_KEY].drop_duplicates().reset_index(drop=True))
    base = _documents(req, rows, index)
    spent = rows.groupby(DOC_KEY)[cost_cols].sum().astype(float).reindex(base.index)
    prefix = base["role"].isin(PREFIX_CACHED_ROLES)
    by = [req[k] for k in DOC_KEY]
    out = []
    for view in sheet.views():
        col, unit, local, storage, p = _view_terms(view, sheet, base, use)
        storage = storage.where(prefix, 0.0)
        terms = _prefix_terms(req, by, col).reindex(base.index)
        # An embeddings endpoint bills its tokens in either view; in-process embedding is seconds.
        embed = sheet.embed_usd_per_token
        index_usd = base["index_s"] * local + base["index_embed_tokens"] * embed
        retrieval_usd = base["retrieval_s"] * local + base["query_embed_tokens"] * embed
        mean_spent = spent[col] * unit / base["n"]
        # p = 0 (no expiry) leaves exactly: one_time = cold - warm (+ storage), marginal = later
        one_time = ((1 - p) * (terms["cold"] - terms["warm"]) * unit + storage).where(prefix, 0.0) + index_usd
        marginal = (((1 - p) * terms["later"] + p * terms["cold"]) * unit).where(prefix, mean_spent)
        marginal = marginal + retrieval_usd
        paid = mean_spent + (storage + index_usd) / base["n"] + retrieval_usd
        out.append(base.assign(view=view, storage_usd=storage, one_time_usd=one_time, marginal_usd=marginal,
                               run_paid_usd=paid, expiry_p=pd.Series(p, index=base.index).where(prefix, 0.0)))
    docs = pd.concat(out).reset_index()
    docs = docs.drop(columns="storage_tokens").sort_values([*DOC_KEY, "view"], ignore_index=True)
    return Costed(docs, counts)


def weighted_usd(terms: pd.DataFrame, weights: np.ndarray, q: float) -> float:
    """$ per query at q questions per document over the documents of `terms`, weighted."""
    per_doc = (terms["marginal_usd"] + terms["one_time_usd"] / q).to_numpy(float)
    return float(np.average(per_doc, weights=weights)) if weights.sum() > 0 else math.nan

"""The one cost function: per document, what a pipeline's first question and each further one cost.

`ragvslc cost` and the report (compare/analysis/cost.py, compare/report/data.py) and `ragvslc recommend`
(compare/analysis/recommend.py) all price stored rows here and differ only in how they weigh the
documents (cost and the report: each document alike; recommend: by the workload's lengths), so
the same runs and sheet give the same $ per query in all three. Per document and view,

    cost(q) = marginal + one_time / q     (a router's fallback adds its own term: usd_per_query)

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
  one_time = cold - later (+ cache storage for the hold time), marginal = later, so the first
  question costs cold and each further one later (cost(1) = cold; at the run's own questions
  per document the model is what the run paid when nothing was shared between documents), where
  - cold is the document prefilled from nothing: every prompt token priced as computed (API; the
    answer template's few tokens included, so it is conservative by at most those; and the
    document's cache write where the sheet bills one), the
    request's prefill seconds plus its cached tokens at the pipeline's measured prefill seconds
    per computed token (self-hosted). It is the document's first request (in run order) when
    that one found at most the template cached (cached <= prompt - context), else the mean over
    the requests that did, else over those with the fewest cached tokens (DERIVED, flagged). A
    first request that found a sibling document's prefix cached therefore does not shrink the
    first question's cost, whatever the run order.
  - later is the measured mean of the document's requests after its first (in run order): a
    re-prefill after eviction raises it. With a single request per document, later = warm:
    the measured mean of its warm requests (cached >= WARM_FRACTION x context), else the request
    with its document counted as cached (DERIVED, flagged).
- API view, on a sheet with a chosen cache TTL and a stated rate of questions per document per
  hour: a later question finds the cache expired with probability p and re-pays cold, so
  marginal = (1 - p) later + p cold, one_time = (1 - p)(cold - later) + storage (cache writes,
  storage and expiry: compare/analysis/cache_terms.py). Without a rate, p = 0: the lines above.
- Routers, per step: the steps that do not send the document (a RAG try) at their measured mean
  per question; the long-context fallback priced like long context from its own steps (cold,
  later, warm as above, no cache write: a router marks nothing) for the measured share f of the
  document's questions that fell back. The fallbacks are taken as independent, so at q questions
  the document's first fallback (probability 1 - (1 - f)^q) pays cold; expiry p uses the
  fallbacks' own rate f x rate. Never the run's own cold/warm mix extrapolated in q.
- RAG: one_time = its index build, marginal = measured mean per question.
- Pipelines are compared over the same documents: per run, the documents every pipeline priced
  (a document whose long-context request overflowed leaves the others too; said per pipeline).
- Self-hosted view at concurrency > 1: refused (NaN, said). Each request's busy seconds overlap
  with the others' in a batch, so their sum bills more than the engine worked, unevenly (short
  RAG prompts batch better than long prefills); measure at concurrency 1 for that view.
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
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from compare.analysis import cache_terms
from compare.analysis.cache_terms import NO_USE, PREFIX_CACHED_ROLES, CacheUse
from compare.analysis.priced import DOC_KEY, PIPE_KEY, priced_requests
from compare.analysis.prices import PriceSheet
from compare.core.types import CORPUS_INDEX

__all__ = ["DOC_KEY", "NO_USE", "PIPE_KEY", "PREFIX_CACHED_ROLES", "CacheUse", "Costed", "doc_costs",
           "priced_requests", "usd_per_query", "weighted_usd"]

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
    # per pipeline config: documents it priced that another pipeline of its run did not (left out)
    left_out: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[*PIPE_KEY, "left_out"]))


def _mean_where(values: pd.Series, mask: pd.Series, by: list[pd.Series]) -> pd.Series:
    """Per document: the mean of `values` over the rows where `mask` holds (NaN when none do)."""
    sums = pd.DataFrame({"v": values.where(mask, 0.0), "m": mask.astype(float)}).groupby(by).sum()
    return sums["v"] / sums["m"].where(sums["m"] > 0)


def _prefix_terms(req: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per document, over its requests that start with the whole document, in one view (`col`,
    with its `_cold` and `_warm` counterparts): cold, warm and later (module docstring)."""
    by = [req[k] for k in DOC_KEY]
    doc = req.groupby(by)
    first = req["seq"] == doc["seq"].transform("min")
    # Cold's least derived basis: the document's first request when it started from nothing (so
    # the model at the run's own q is what the run paid), else every request that did, else the
    # requests that found the fewest tokens cached (DERIVED).
    own = (first & req["from_nothing"]).groupby(by).transform("any")
    any_nothing = doc["from_nothing"].transform("any")
    fewest = req["cached"] == doc["cached"].transform("min")
    basis = (first & req["from_nothing"]).where(own, req["from_nothing"].where(any_nothing, fewest))
    warm = _mean_where(req[col], req["warm"], by).fillna(doc[f"{col}_warm"].mean())
    later = _mean_where(req[col], ~first, by)
    return pd.DataFrame({"cold": _mean_where(req[f"{col}_cold"], basis.astype(bool), by), "warm": warm,
                         "later": later.fillna(warm)})


def _counts(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(failed_priced=rows["failed"] & rows["priced"], unpriced=~rows["priced"])
    return rows.groupby(PIPE_KEY, as_index=False).agg(
        asked=("example_id", "size"), failed=("failed", "sum"), failed_priced=("failed_priced", "sum"),
        unpriced=("unpriced", "sum"))


def _documents(req: pd.DataFrame, rows: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Per document key: kind, counts, flags, index and retrieval seconds, storage tokens, and the
    share of its questions that sent the whole document (1 for long context, a router's fallbacks)."""
    by = [req[k] for k in DOC_KEY]
    doc = req.groupby(by)
    base = doc.agg(kind=("kind", "first"), role=("role", "first"), concurrency=("concurrency", "first"),
                   warm=("warm", "sum"),
                   cache_unreported=("cache_unreported", "sum"), calibrated=("calibrated", "all"),
                   requests=("warm", "size"), writes_derived=("write_derived", "sum"))
    base["cold"] = base.pop("requests") - base["warm"]
    pre = req[req["doc_prefix"]]
    pby = [pre[k] for k in DOC_KEY]
    flags = pre.groupby(pby).agg(prefix_requests=("warm", "size"), prefix_warm=("warm", "sum"),
                                 any_nothing=("from_nothing", "any")).reindex(base.index)
    has = flags["prefix_requests"].fillna(0) > 0
    base["prefix_requests"] = flags["prefix_requests"].fillna(0)
    base["warm_derived"] = has & (flags["prefix_warm"].fillna(0) == 0)
    base["cold_derived"] = has & ~flags["any_nothing"].fillna(False).astype(bool)
    # The cold term's write is derived when the request it is taken from reported none itself.
    basis = req["from_nothing"].where(doc["from_nothing"].transform("any"), True)
    base["cold_write_derived"] = _mean_where(req["cold_write_derived"].astype(float), basis, by) > 0
    base["storage_tokens"] = _mean_where(pre["cached"].astype(float), pre["warm"], pby).fillna(
        pre.groupby(pby)["doc_cached"].mean()).reindex(base.index).fillna(0.0)
    per_doc = rows.groupby(DOC_KEY).agg(n=("example_id", "size"), retrieval_s=("retrieval_s", "mean"),
                                        query_embed_tokens=("embed_tokens", "mean"))
    base = base.join(per_doc)
    base["fallback_share"] = base["prefix_requests"] / base["n"]
    for col in index.columns:
        base[col] = index[col].reindex(base.index).fillna(0.0).to_numpy()
    return base


def _same_documents(base: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the documents every pipeline of a run priced (so pipelines are compared over the same
    documents: one whose long-context request overflowed leaves RAG's cost too); and, per pipeline
    config, what was left out. A run whose pipelines share no priced document keeps them all."""
    keys = base.index.to_frame(index=False)
    keep = pd.Series(True, index=base.index)
    left: list[dict[str, object]] = []
    for run_id, group in keys.groupby("run_id", sort=False):
        per_pipe = {pipe: set(g["doc_key"]) for pipe, g in group.groupby(["pipeline", "params_hash"])}
        common = set.intersection(*per_pipe.values())
        if not common or len(per_pipe) < 2:
            continue
        for (pipe, h), docs in per_pipe.items():
            if gone := sorted(docs - common):
                names = ", ".join(d for key in gone for d in json.loads(key))
                left.append({"run_id": run_id, "pipeline": pipe, "params_hash": h, "left_out": (
                    f"compared over the {len(common)} documents every pipeline of the run priced: left out "
                    f"{len(gone)} ({names}) that another pipeline has no priced request for")})
        keep &= ~(base.index.get_level_values("run_id") == run_id) | base.index.get_level_values(
            "doc_key").isin(common)
    return base[keep.to_numpy()], pd.DataFrame(left, columns=[*PIPE_KEY, "left_out"])


def _view_terms(
    view: str, sheet: PriceSheet, base: pd.DataFrame, use: CacheUse
) -> tuple[str, float, float, pd.Series, pd.Series]:
    """(request $ column, $ per unit, local $ per second, storage $ per document, expiry p per
    document: a router's fallbacks arrive at its fallback share of the workload's rate)."""
    if view == "api":
        api = sheet.api
        assert api is not None
        storage = cache_terms.storage_usd(api, base["storage_tokens"], use)
        p = base["fallback_share"].map(lambda f: cache_terms.expiry_probability(api, use, f))
        return "api_usd", 1.0, api.local_usd_per_hour / 3600, storage, p.astype(float)
    hosted = sheet.self_hosted
    assert hosted is not None
    storage = base["storage_tokens"] * 0.0  # vLLM's prefix cache: memory already paid by the hour
    evicted = storage + (use.evicted or 0.0)  # the cache model's p at the user's traffic, when stated
    return "busy_s", hosted.usd_per_hour / 3600, hosted.index_rate / 3600, storage, evicted


def doc_costs(
    con: duckdb.DuckDBPyConnection, runs: Sequence[str], sheet: PriceSheet, use: CacheUse = NO_USE
) -> Costed:
    """One row per (run, pipeline config, document key, view) with one_time_usd, marginal_usd,
    fallback_share and fallback_one_time_usd (usd_per_query gives $ per query at any q),
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
    base, left_out = _same_documents(_documents(req, rows, index))
    spent = rows.groupby(DOC_KEY)[cost_cols].sum().astype(float).reindex(base.index)
    pre, rest = req[req["doc_prefix"]], req[~req["doc_prefix"]]
    rest_spent = rest.groupby(DOC_KEY)[cost_cols].sum().astype(float).reindex(base.index).fillna(0.0)
    f = base["fallback_share"]
    lc = base["role"].isin(PREFIX_CACHED_ROLES)
    refused = base["concurrency"] > 1  # self-hosted: per-request busy seconds overlap in a batch
    out = []
    for view in sheet.views():
        col, unit, local, storage, p = _view_terms(view, sheet, base, use)
        storage = storage.where(lc, 0.0)  # only a long-context prompt marks its document for caching
        terms = _prefix_terms(pre, col).reindex(base.index)
        # An embeddings endpoint bills its tokens in either view; in-process embedding is seconds.
        embed = sheet.embed_usd_per_token
        index_usd = base["index_s"] * local + base["index_embed_tokens"] * embed
        retrieval_usd = base["retrieval_s"] * local + base["query_embed_tokens"] * embed
        # The part that sends the whole document, as one request per question: the first pays cold
        # (one_time = cold - later, so q = 1 costs cold), each later one `later`; p (expiry) of
        # them find the cache expired and pay cold again.
        step_one = ((1 - p) * (terms["cold"] - terms["later"]) * unit + storage).where(f > 0, 0.0)
        step_marginal = (((1 - p) * terms["later"] + p * terms["cold"]) * unit).where(f > 0, 0.0)
        one_time = step_one + index_usd
        marginal = rest_spent[col] * unit / base["n"] + f * step_marginal + retrieval_usd
        paid = spent[col] * unit / base["n"] + (storage + index_usd) / base["n"] + retrieval_usd
        fallback = step_one.where((f > 0) & (f < 1), 0.0)
        if view == "self_hosted":
            one_time, marginal, paid, fallback = (
                s.where(~refused) for s in (one_time, marginal, paid, fallback))
        out.append(base.assign(view=view, storage_usd=storage, one_time_usd=one_time, marginal_usd=marginal,
                               fallback_one_time_usd=fallback, run_paid_usd=paid,
                               expiry_p=p.where(f > 0, 0.0),
                               self_hosted_refused=refused & (view == "self_hosted")))
    docs = pd.concat(out).reset_index()
    docs = docs.drop(columns="storage_tokens").sort_values([*DOC_KEY, "view"], ignore_index=True)
    return Costed(docs, counts, left_out)


def usd_per_query(terms: pd.DataFrame, q: float) -> np.ndarray:
    """Per document, $ per query at q questions per document. A share f < 1 of the questions sends
    the whole document (a router's fallbacks, independent at the measured share): the document's
    one-time prefix cost is paid only if one of its q questions falls back, probability
    1 - (1 - f)^q, so the one-time term loses fallback_one_time x (1 - f)^q (nothing at f = 1)."""
    marginal = terms["marginal_usd"].to_numpy(float)
    one_time = terms["one_time_usd"].to_numpy(float)
    per_doc = marginal + one_time / q
    if "fallback_one_time_usd" in terms:
        fallback = terms["fallback_one_time_usd"].to_numpy(float)
        unpaid = np.where(fallback != 0, fallback * (1 - terms["fallback_share"].to_numpy(float)) ** q, 0.0)
        per_doc = per_doc - unpaid / q
    return per_doc


def weighted_usd(terms: pd.DataFrame, weights: np.ndarray, q: float) -> float:
    """$ per query at q questions per document over the documents of `terms`, weighted."""
    per_doc = usd_per_query(terms, q)
    return float(np.average(per_doc, weights=weights)) if weights.sum() > 0 else math.nan

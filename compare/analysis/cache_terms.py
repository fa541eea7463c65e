"""The provider-cache terms of the API view: cache writes, cache storage and cache expiry.

Split from compare/analysis/doc_costs.py (the one cost function, which calls these) so the rules
a 2026-shaped price sheet adds are stated in one place. A sheet without `cache_writes`, storage
or a chosen TTL (every sheet before that shape) makes each term here exactly nothing.

- Cache write: a long-context request that writes W of its computed prompt tokens to the cache
  pays them at the tier's input price x the chosen TTL's multiplier instead of the input price
  (compare/analysis/prices.py: api_cost). W is the row's measured `cache_write_tokens` where the
  provider reported it; else, for a request that computed its document (not warm), the context
  tokens it did not find cached (DERIVED, flagged). The cold term (the document prefilled from
  nothing) writes the whole document: its measured W when that request itself started from
  nothing, else the context tokens (DERIVED). Only long-context prompts (a document marked for
  caching) buy a write: RAG and router rows mark nothing, and the `created_cache_tokens` vLLM
  reports on them is its own free block cache, not a bill (router steps carry no write count).
- Storage: the cached document tokens x $ per 1M per hour x the hours it is kept (the
  workload's `cache_hold_hours`, else the sheet's), once per document.
- Expiry: questions about a document arrive as a Poisson process at `queries_per_doc_per_hour`;
  a cache entry lives `cache_ttl_minutes` after its last use (a hit refreshes it). The gap
  before a later question is then exponential, so it finds the cache expired with probability
  p = exp(-rate x TTL) and re-pays the cold prefill and the write. Per document,

      marginal = (1 - p) x later + p x cold
      one_time = (1 - p) x (cold - later) + storage

  so the first question still costs cold (+ storage) and p -> 1 (rare questions, short TTL)
  leaves nothing to amortise. A router's fallbacks arrive at its fallback share x the rate.
  No rate (cost and the report, unless told): p = 0.
  The self-hosted view has no TTL: its evictions are what the run measured, unless the
  workload states its KV cache (`evicted`: the cache model's p at the user's traffic,
  compare/analysis/traffic_cache.py), which then takes the place of expiry in the same rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from compare.analysis.prices import ApiPrices, api_cost

PREFIX_CACHED_ROLES = ("long_context",)  # prompts that start with the whole document


@dataclass(frozen=True)
class CacheUse:
    """How a workload uses a provider's cache (None: not stated). `recommend` takes them from
    the workload; `ragvslc cost` and the report state none unless told, i.e. no expiry and the
    sheet's hold hours."""

    queries_per_doc_per_hour: float | None = None
    hold_hours: float | None = None
    evicted: float | None = None  # self-hosted: P(a later question finds its document evicted), derived
    evicted_basis: str | None = None  # how `evicted` was derived, in words (traffic_cache.py)

    def __post_init__(self) -> None:
        rate, hours = self.queries_per_doc_per_hour, self.hold_hours
        if self.evicted is not None and not 0.0 <= self.evicted <= 1.0:
            raise ValueError(f"an eviction probability must be in [0, 1], got {self.evicted}")
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"queries per document per hour must be > 0, got {rate}")
        if hours is not None and not (hours >= 0 and math.isfinite(hours)):
            raise ValueError(f"cache hold hours must be >= 0, got {hours}")


NO_USE = CacheUse()


def expiry_probability(api: ApiPrices | None, use: CacheUse, share: float = 1.0) -> float:
    """P(a later question finds the document's cache expired) = exp(-rate x TTL) for Poisson
    arrivals at `use.queries_per_doc_per_hour` and the sheet's chosen TTL; 0 without either.
    `share`: the fraction of the questions that send the document (a router's fallbacks, a
    thinned Poisson process at share x rate); 1 for long context."""
    write = api.cache_write if api is not None else None
    rate = use.queries_per_doc_per_hour
    if write is None or rate is None:
        return 0.0
    return math.exp(-rate * share * write.ttl_minutes / 60.0)


def storage_usd(api: ApiPrices, tokens: pd.Series, use: CacheUse) -> pd.Series:
    """$ per document for keeping its cached tokens stored the hours the workload keeps them."""
    hours = api.cache_hold_hours if use.hold_hours is None else use.hold_hours
    return tokens * (api.cache_storage_usd_per_mtok_hour * hours / 1e6)


def write_columns(req: pd.DataFrame, api: ApiPrices | None) -> None:
    """Per request: the tokens it wrote (`written`), the document's write when prefilled from
    nothing (`cold_written`), and whether either was DERIVED (only said where a write is billed
    above the input price: at 1.0 the tokens cost the same either way)."""
    billed = api is not None and api.write_multiplier > 1.0
    prefix = req["role"].isin(PREFIX_CACHED_ROLES)
    reported = req["write"].notna() & prefix
    measured = req["write"].fillna(0.0)
    not_cached = (req["ctx"] - req["cached"]).clip(lower=0).astype(float)
    guess = prefix & ~req["warm"] & ~reported
    req["written"] = measured.where(reported, not_cached.where(guess, 0.0)).astype(int)
    own = reported & req["from_nothing"]
    doc = req["ctx"].clip(upper=req["prompt"]).astype(float)
    req["cold_written"] = measured.where(own, doc.where(prefix, 0.0)).astype(int)
    req["write_derived"] = billed & guess & (not_cached > 0)
    req["cold_write_derived"] = billed & prefix & ~own


def api_columns(req: pd.DataFrame, api: ApiPrices) -> None:
    """Per request in $: as measured (with its writes), from nothing (cold: the document written
    too), and with its document cached (warm: measured when warm, else nothing written)."""
    cols = req[["prompt", "cached", "output", "doc_cached", "warm", "written", "cold_written"]]
    measured, cold, warm = [], [], []
    for prompt, cached, out, doc_cached, is_warm, written, cold_written in cols.itertuples(index=False):
        measured.append(api_cost(api, prompt, cached, out, written))
        cold.append(api_cost(api, prompt, 0, out, cold_written))
        warm.append(measured[-1] if is_warm else api_cost(api, prompt, doc_cached, out))
    req["api_usd"], req["api_usd_cold"], req["api_usd_warm"] = measured, cold, warm

"""The caveats `ragvslc cost` prints beside each row (split from compare/analysis/cost.py, which
forms the numbers): what a cache term added, how a router's fallback was priced, what an
embeddings endpoint billed, which term was derived for how many documents, and, when the caller
priced evictions with the cache model (compare/analysis/traffic_cache.py), that p's basis.
"""

from __future__ import annotations

import math
from typing import Any

from compare.analysis.cache_terms import CacheUse
from compare.analysis.prices import ApiPrices, PriceSheet
from compare.core.types import CACHE_MARKER_TTL_MINUTES


def marker_note(p: dict[str, Any], api: ApiPrices) -> list[str]:
    """A run that marked its documents for one cache TTL, priced at another, says so."""
    marker = p.get("cache_marker")
    ttl = CACHE_MARKER_TTL_MINUTES.get(marker) if isinstance(marker, str) else None
    if ttl is None:
        return []
    write = api.cache_write
    if write is None:
        return [f"the run marked documents for caching ({marker}) but the sheet prices no cache write"]
    if not math.isclose(write.ttl_minutes, ttl):
        return [f"the run marked documents for a {ttl:g}-min cache ({marker}) but the sheet prices a "
                f"{write.ttl_minutes:g}-min TTL: set cache_ttl_minutes = {ttl:g}"]
    return []


def cache_notes(p: dict[str, Any], api: ApiPrices, use: CacheUse) -> list[str]:
    """What the API view's cache terms (write, storage hours, expiry) added, and how derived."""
    notes = marker_note(p, api)
    hours = api.cache_hold_hours if use.hold_hours is None else use.hold_hours
    if p["storage"]:
        notes.append(f"cache storage {hours:g} h per document included")
    write = api.cache_write
    if write is None or p["role"] != "long_context":
        return notes
    if write.input_multiplier > 1.0:
        notes.append(f"cache write at {write.input_multiplier:g}x input ({write.ttl_minutes:g}-min TTL) "
                     "on each document's cold prefill")
        notes += derived_docs(p, "docs_write_derived", "cache write",
                               "no cache_write_tokens reported: the document's context tokens")
        if p["writes_derived"]:
            notes.append(f"cache writes DERIVED for {int(p['writes_derived'])} requests in what the run "
                         "paid (the context tokens they did not find cached)")
    if p["expiry_p"] > 0:
        repay = "the cold prefill and the write" if write.input_multiplier > 1.0 else "the cold prefill"
        notes.append(f"cache TTL {write.ttl_minutes:g} min, questions at {use.queries_per_doc_per_hour:g} "
                     f"per document per hour (Poisson): p = {p['expiry_p']:.3g} of later questions find "
                     f"it expired and re-pay {repay}")
    return notes


def embed_note(sheet: PriceSheet) -> str:
    if sheet.embeddings is None:
        return ("embedding tokens billed by an embeddings endpoint NOT priced: the sheet has no "
                "[embeddings] usd_per_mtok")
    rate = sheet.embeddings.usd_per_mtok
    return f"embeddings endpoint tokens at ${rate:g}/1M included (index and questions)"


def router_notes(p: dict[str, Any]) -> list[str]:
    """How a router's long-context fallback was priced (doc_costs.py: per step, at its share)."""
    share = p["prefix_requests"] / p["n"] if p["n"] else 0.0
    notes = [f"priced per step: the RAG try per question, the long-context fallback for {share:.0%} of "
             "questions, its cold prefill on a document's first fallback (fallbacks taken as independent)"]
    notes += derived_docs(p, "docs_warm_derived", "fallback's later cost",
                           "no later fallback measured: the step with its document cached")
    notes += derived_docs(p, "docs_cold_derived", "fallback's cold cost",
                           "its document was already cached: cached tokens priced as computed")
    return notes


def derived_docs(p: dict[str, Any], key: str, what: str, how: str) -> list[str]:
    """One shape for 'this term was derived, not measured, for k of n documents' notes."""
    if not p[key]:
        return []
    return [f"{what} DERIVED for {int(p[key])}/{int(p['docs'])} docs ({how})"]


def eviction_note(p: dict[str, Any], use: CacheUse) -> list[str]:
    """The self-hosted view's eviction term, when the caller priced one (its basis in words)."""
    if use.evicted is None or p["role"] not in ("long_context", "router"):
        return []
    return [f"later questions find their document evicted with p = {use.evicted:.3g}: "
            f"{use.evicted_basis or 'DERIVED by the cache model'}"]

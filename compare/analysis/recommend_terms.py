"""What `recommend` adds at the user's traffic (issues 28 and 30), apart from the ranking's numbers
(compare/analysis/recommend.py): which rule says how often a later question finds its document
cached (the cache model, the TTL rule, or neither, said), the load sweep's busy share beside the
estimate, and each router's regret against the per-question oracle.

The cache rule, by price view:
- self-hosted, the workload stating its KV cache (`kv_cache_tokens`): the cache model at the
  workload's traffic (compare/analysis/traffic_cache.py), one p per workload length, DERIVED;
- API, the sheet choosing a cache TTL and the workload stating `queries_per_doc_per_hour`: the
  TTL rule p = exp(-rate x TTL) (compare/analysis/cache_terms.py); a KV cache size is the
  deployment's, not a provider's, so it does not enter the API view (said);
- otherwise p = 0: every later question finds the document as the runs did (said).
A workload that states its KV cache is ranked in the self-hosted view by default (when the sheet
has one): that is the deployment it describes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from compare.analysis import traffic_cache
from compare.analysis.bins import Bins
from compare.analysis.cache_terms import expiry_probability
from compare.analysis.load import Busy
from compare.analysis.prices import ChosenSheet, PriceSheet
from compare.analysis.regret import regret_table
from compare.analysis.workload import Workload

BUSY_TOLERANCE = 0.25  # estimate vs a load sweep's measurement: a larger gap is said loudly
REGRET_FIELDS = ("run_id", "strategy", "n", "n_priced", "quality", "oracle_quality", "quality_lost",
                 "lc_strategy", "usd_per_q", "lc_usd_per_q", "usd_saved_per_q", "usd_saved_share", "line")


def default_view(wl: Workload, sheet: PriceSheet) -> str:
    """The view to rank in: self-hosted when the workload states its KV cache and the sheet has
    that view, else the sheet's first (API if it has one)."""
    views = sheet.views()
    return "self_hosted" if wl.kv_cache_tokens is not None and "self_hosted" in views else views[0]


@dataclass(frozen=True)
class CacheRule:
    """Per workload length: P(a later long-context question finds its document gone), and the
    rule that gave it, in words (`basis`), with the cache model's details when it was used."""

    p: dict[str, float]
    basis: str
    model: traffic_cache.TrafficCache | None = None
    said: bool = False  # an assumption the ranking rests on (the model, a TTL, or a size not used)

    def mean_p(self, bins: Bins) -> float:
        """p over the workload's lengths, each its weight (one number for a run's decision line)."""
        total = sum(w for w, _ in bins.values())
        return sum(self.p[k] * w for k, (w, _) in bins.items()) / total if total else 0.0


def cache_rule(wl: Workload, sheet: PriceSheet, view: str, bins: Bins, ev: pd.DataFrame) -> CacheRule:
    """The module docstring's rule. `ev`: the evidence rows (long context's give the question and
    answer tokens the cache model replays)."""
    if view == "self_hosted" and wl.kv_cache_tokens is not None and wl.document_count is not None:
        lc = ev[(ev["role"] == "long_context") & ev["error"].isna() & ev["prompt_tokens"].notna()]
        asked = (lc["prompt_tokens"] - lc["context_tokens"].fillna(0)).mean()
        question = int(max(1.0, asked)) if len(lc) else 32
        output = int(max(1.0, lc["output_tokens"].fillna(0).mean())) if len(lc) else 32
        sizes = {k: (w, _sizes(k)) for k, (w, _) in bins.items()}
        model = traffic_cache.at_workload(sizes, wl.document_count, wl.kv_cache_tokens, wl.kv_block_size,
                                          wl.popularity_zipf, question, output, wl.questions_per_doc)
        return CacheRule({k: s.miss for k, s in model.by_length.items()}, model.line(), model, True)
    p = expiry_probability(sheet.api, wl.cache_use) if view == "api" else 0.0
    if p > 0 and sheet.api is not None and sheet.api.cache_write is not None:
        basis = (f"cache expiry (TTL rule, API view): questions arrive at {wl.queries_per_doc_per_hour:g} "
                 f"per document per hour (Poisson) and the cache lives "
                 f"{sheet.api.cache_write.ttl_minutes:g} min after its last use, so p = {p:.3g} of later "
                 "questions find it expired and are cold again (cost, latency and tokens of long "
                 "context include it)")
    elif view == "api":
        basis = ("cache (API view): no TTL rule applies (the sheet chooses no cache TTL or the workload "
                 "states no queries_per_doc_per_hour): every later question finds its document cached")
    else:
        basis = ("cache (self-hosted view): no kv_cache_tokens stated, so no evictions are modelled: later "
                 "questions find their document as the runs did")
    if view == "api" and wl.kv_cache_tokens is not None:
        basis += ("; the workload's kv_cache_tokens is the deployment's KV cache, not a provider's: it "
                  "prices the self-hosted view")
    return CacheRule(dict.fromkeys(bins, p), basis, None, p > 0 or wl.kv_cache_tokens is not None)


def _sizes(key: str) -> list[int]:
    """The document sizes a workload length key stands for: the length, or a range's ends and
    three sizes between (evenly spaced)."""
    if key.isdigit():
        return [int(key)]
    lo, hi = (int(x) for x in key.split("-"))
    return [round(lo + (hi - lo) * i / 4) for i in range(5)]


def busy_note(b: Busy | None, estimate: float, wl: Workload, notes: list[str]) -> float:
    """The load sweep's measured busy share beside the estimate (issue 33 item 4); a gap of more
    than 25 % of the measurement is said loudly: the estimate assumes an idle server."""
    if b is None or math.isnan(estimate):
        return math.nan
    scaled = f", {b.at_rate:.2f} scaled to {wl.requests_per_s:g} req/s" if b.rate != wl.requests_per_s else ""
    where = f"measured {b.share:.2f} at {b.rate:g} req/s (load run {b.run_id}, step {b.step}){scaled}"
    if abs(estimate - b.at_rate) > BUSY_TOLERANCE * b.at_rate:
        notes.append(f"UTILISATION DISAGREES: estimate {estimate:.2f} (rate x idle busy seconds) vs {where}; "
                     "trust the measurement")
    else:
        notes.append(f"utilisation {where}, estimate {estimate:.2f}")
    return b.at_rate


def router_regret(con: duckdb.DuckDBPyConnection, runs: Sequence[str], metric: str, sheet: ChosenSheet
                  ) -> tuple[list[dict[str, Any]], list[str]]:
    """Each router's regret against the per-question oracle (compare/analysis/regret.py, the API
    view of the chosen sheet), one line each with its n; nothing when no run holds a router."""
    regret = regret_table(con, runs, metric=metric, sheet=sheet)
    table = regret.table[regret.table["role"] == "router"]
    out = []
    for r in table.to_dict("records"):
        saved = ("no $ (no API prices)" if _nan(r["usd_saved_per_q"]) else
                 f"saves ${r['usd_saved_per_q']:.3g} per question ({r['usd_saved_share']:.0%}) against "
                 f"always {r['lc_strategy']} (n={r['n_priced']} priced, API view of {sheet.origin})")
        line = (f"regret (run {r['run_id']}): {r['strategy']} loses {r['quality_lost']:.3f} quality against "
                f"the per-question oracle ({r['quality']:.3f} vs {r['oracle_quality']:.3f}, n={r['n']} "
                f"questions every configuration answered, measured); {saved}")
        out.append({**{k: r.get(k) for k in REGRET_FIELDS if k != "line"}, "line": line})
    notes = regret.notes if out else []
    return out, notes


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))

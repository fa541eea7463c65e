"""The oracle's pick per question when it must pay for the caches it uses (issue 24 item 8).

The oracle (compare/analysis/oracle.py) takes, per question, the best answer among the base
pipelines and the cheapest among equally good ones. A long-context answer that found its
document cached is cheap only because an earlier long-context request paid the cold prefill; an
oracle that takes the warm answer while skipping the request that warmed the cache reaches a
bound no router can. So, per run and document:

- a long-context configuration the oracle uses on a document pays cold on its first pick there
  (in run order): its cached tokens cut to the template's (prompt - context) and, for
  cost_by = total_ms, its latency the configuration's cold latency on that document (the mean of
  its requests there that found at most the template cached; its own when there is none);
- later picks of that configuration on the document cost what was measured;
- which configurations to use on a document is chosen exactly (every subset, there are few):
  every question still gets an answer of the best quality there is (the oracle never trades
  quality for cost), and among those choices the cheapest in total, the cold premium included.

The picks carry those effective cached tokens and latency, so the oracle's token and latency
means are what it would have paid.
"""

from __future__ import annotations

from itertools import chain, combinations
from typing import Any

import numpy as np
import pandas as pd

_BASE = ("retrieval", "long_context")
_ORDER = ["quality", "cost", "pipeline", "params_hash"]


def _cold_values(lc: pd.DataFrame) -> pd.DataFrame:
    """Per long-context row: its cost, cached tokens and latency as if it had found only the
    template cached (the first pick of its configuration on its document)."""
    template = (lc["prompt_tokens"] - lc["context_tokens"].fillna(0)).clip(lower=0)
    cached = lc["cached_tokens"].fillna(0)
    cold_cached = np.minimum(cached, template)
    was_cold = cached <= template
    keys = [lc["pipeline"], lc["params_hash"], lc["doc_ids"]]
    cold_ms = lc["total_ms"].where(was_cold).groupby(keys).transform("mean").fillna(lc["total_ms"])
    return pd.DataFrame({"cold_cached": cold_cached, "cold_ms": cold_ms}, index=lc.index)


def _cost_of(row: pd.Series, cost_by: str, cold: bool) -> float:
    if not cold or row["role"] != "long_context":
        return float(row["cost"]) if pd.notna(row["cost"]) else np.inf
    if cost_by == "total_ms":
        return float(row["cold_ms"]) if pd.notna(row["cold_ms"]) else np.inf
    if cost_by == "prompt_tokens":
        return float(row["cost"]) if pd.notna(row["cost"]) else np.inf
    return float(row["prompt_tokens"] - row["cold_cached"])


def _picks(doc: pd.DataFrame, opened: tuple[Any, ...], cost_by: str) -> tuple[float, list[Any], set[Any]]:
    """(total cost, chosen row labels, cold-paying labels) on one document with these long-context
    configurations usable; inf when a question's best quality needs a configuration left out."""
    total, chosen, cold_rows, used = 0.0, [], set(), set()
    for _, q in doc.groupby("example_id", sort=False):
        best = q[q["quality"] == q["quality"].max()] if q["quality"].notna().any() else q
        usable = best[(best["role"] != "long_context") | best["config"].isin(opened)]
        if usable.empty:
            return np.inf, [], set()
        ranked = usable.assign(cost=usable["cost"].astype(float)).sort_values(
            _ORDER, ascending=[False, True, True, True], na_position="last")
        pick = ranked.iloc[0]
        chosen.append(pick.name)
        if pick["role"] == "long_context" and pick["config"] not in used:
            used.add(pick["config"])
            cold_rows.add(pick.name)
            total += _cost_of(pick, cost_by, cold=True)
        else:
            total += _cost_of(pick, cost_by, cold=False)
    return total, chosen, cold_rows


def oracle_choice(rows: pd.DataFrame, cost_by: str) -> pd.DataFrame:
    """The oracle's pick per (run, question) among the base rows, paying for the caches it uses
    (module docstring); cached_tokens and total_ms of a cold-paying pick are its effective ones."""
    base = rows[rows["role"].isin(_BASE)].copy()
    if base.empty:
        return base
    base["config"] = base["pipeline"] + "/" + base["params_hash"]
    lc = base["role"] == "long_context"
    base = base.join(_cold_values(base[lc]))
    # Questions in run order: by the first row stored for each.
    first = base.groupby(["run_id", "example_id"])["seq"].transform("min")
    base = base.assign(_first=first).sort_values(["run_id", "_first", "seq"], kind="stable")
    picked: list[Any] = []
    cold_paid: set[Any] = set()
    for _, doc in base.groupby(["run_id", "doc_ids"], sort=False):
        configs = sorted(set(doc.loc[doc["role"] == "long_context", "config"]))
        subsets = chain.from_iterable(combinations(configs, k) for k in range(len(configs) + 1))
        best = min((_picks(doc, s, cost_by) for s in subsets), key=lambda r: r[0])
        if not best[1]:  # nothing priced on this document: the measured choice, as before
            best = _picks(doc, tuple(configs), cost_by)
        picked += best[1]
        cold_paid |= best[2]
    out = base.loc[picked].copy()
    paying = out.index.isin(list(cold_paid))
    out.loc[paying, "cached_tokens"] = out.loc[paying, "cold_cached"]
    out.loc[paying, "total_ms"] = out.loc[paying, "cold_ms"]
    return out.drop(columns=["config", "cold_cached", "cold_ms", "_first"])

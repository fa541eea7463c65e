"""A router's regret against the per-question oracle: the quality it lost and the dollars it saved.

The oracle (compare/analysis/oracle.py) is the best any router between the run's own RAG and
long-context configurations could do, question by question. A router is worth its complexity
when it loses little quality against that ceiling while saving money against the simplest
policy that needs no router at all, always long context. So, per run and strategy (every router,
and always-RAG and always-LC as the trivial policies), on the questions every configuration
answered (the oracle's rule):

- `quality_lost` = oracle quality - strategy quality (a router can beat the oracle, whose picks
  are the base pipelines' answers: then negative);
- `usd_saved_per_q` = always-LC $ per question - strategy $ per question (the always-LC
  configuration of highest quality, as the routing section's ratios use), and `usd_saved_share`
  that saving over always-LC's $;
- `usd_over_oracle_per_q` = strategy $ - oracle $ (the oracle's picks priced with the caches it
  pays for, compare/analysis/oracle_cache.py).

Prices: the API view of the run's price sheet (prices.choose_sheet: a given file, else the one
stored with the run, else the shipped example), each HTTP request priced on its own (a router's
two-step row step by step, so the tier of each request is its own), through the one $-per-request
function (prices.api_cost). Chat requests only: index builds and embeddings are priced by the
cost section. A failed request has no known usage: it counts as quality 0 but is left out of
the $ means (`n_priced` says how many rows were priced). A sheet without [api] prices: $ columns
are empty and the notes say so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from compare.analysis.oracle import CostBy, oracle_frames, strategy_table
from compare.analysis.prices import ApiPrices, ChosenSheet, api_cost, choose_sheet

REGRET_COLUMNS = (
    "run_id", "strategy", "kind", "role", "n", "n_priced", "quality", "oracle_quality", "quality_lost",
    "lc_strategy", "lc_quality", "usd_per_q", "lc_usd_per_q", "oracle_usd_per_q", "usd_saved_per_q",
    "usd_saved_share", "usd_over_oracle_per_q", "share_long_context",
)


def _num(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def request_usd(row: pd.Series, api: ApiPrices) -> float | None:
    """$ of one stored row: each step of a multi-request row priced alone, else the row."""
    steps = row.get("steps")
    parts: list[dict[str, Any]] = json.loads(steps) if isinstance(steps, str) and steps else [dict(row)]
    total = 0.0
    for part in parts:
        prompt, out = _num(part.get("prompt_tokens")), _num(part.get("output_tokens"))
        if prompt is None or out is None or prompt < 0 or out < 0:
            return None  # no usage reported: never priced as if free
        cached = _num(part.get("cached_tokens")) or 0.0
        total += api_cost(api, int(prompt), int(cached), int(out))
    return total


def _priced(frame: pd.DataFrame, api: ApiPrices | None) -> pd.DataFrame:
    usd = [request_usd(r, api) if api is not None and r["error"] is None else None
           for _, r in frame.iterrows()]
    return frame.assign(usd=pd.Series(usd, index=frame.index, dtype=float))


@dataclass(frozen=True)
class Regret:
    table: pd.DataFrame  # REGRET_COLUMNS, routers first
    sheet: str  # where the prices came from
    notes: list[str] = field(default_factory=list)


def regret_table(
    con: duckdb.DuckDBPyConnection,
    run_ids: Sequence[str],
    *,
    metric: str | None = None,
    cost_by: CostBy = "computed_tokens",
    correct_at: float = 1.0,
    prices: Path | str | None = None,
    sheet: ChosenSheet | None = None,
) -> Regret:
    """Per run that measured both paths: each strategy's regret against the oracle (module
    docstring), every line with its n. `sheet`: the report's already chosen prices (wins over
    `prices`), so its regret and its cost section price alike."""
    runs = list(run_ids)
    chosen_sheet = sheet if sheet is not None else choose_sheet(con, runs, prices)
    api = chosen_sheet.sheet.api
    notes = [] if api is not None else [f"{chosen_sheet.origin}: no [api] prices, so no $ columns"]
    strategies = strategy_table(con, runs, metric=metric, cost_by=cost_by, correct_at=correct_at)
    rows, chosen = oracle_frames(con, runs, metric, cost_by, correct_at)
    if strategies.empty:
        return Regret(pd.DataFrame(columns=list(REGRET_COLUMNS)), chosen_sheet.origin, notes)
    rows = _priced(rows.assign(error=rows["error"].astype(object).where(rows["error"].notna(), None)), api)
    chosen = _priced(chosen.assign(error=chosen["error"].astype(object).where(chosen["error"].notna(), None)),
                     api)
    usd = rows.groupby(["run_id", "pipeline", "params_hash"])["usd"].agg(["mean", "count"])
    oracle_usd = chosen.groupby("run_id")["usd"].agg(["mean", "count"])
    out = []
    for run_id, group in strategies.groupby("run_id", sort=False):
        if not {"retrieval", "long_context"} <= set(group["role"]):
            notes.append(f"{run_id}: no regret (needs both a RAG and a long-context pipeline)")
            continue
        oracle = group[group["role"] == "oracle"].iloc[0]
        lc = group[group["role"] == "long_context"].sort_values(["quality", "strategy"],
                                                               ascending=[False, True]).iloc[0]
        lc_usd = usd.loc[(run_id, lc["pipeline"], lc["params_hash"]), "mean"]
        o_usd = oracle_usd.loc[run_id, "mean"] if run_id in oracle_usd.index else math.nan
        for _, s in group[group["role"] != "oracle"].iterrows():
            mean, priced = usd.loc[(run_id, s["pipeline"], s["params_hash"])]
            out.append({
                "run_id": run_id, "strategy": s["strategy"], "kind": s["kind"], "role": s["role"],
                "n": int(s["n"]), "n_priced": int(priced), "quality": s["quality"],
                "oracle_quality": oracle["quality"], "quality_lost": oracle["quality"] - s["quality"],
                "lc_strategy": lc["strategy"], "lc_quality": lc["quality"], "usd_per_q": mean,
                "lc_usd_per_q": lc_usd, "oracle_usd_per_q": o_usd, "usd_saved_per_q": lc_usd - mean,
                "usd_saved_share": (lc_usd - mean) / lc_usd if lc_usd and lc_usd > 0 else math.nan,
                "usd_over_oracle_per_q": mean - o_usd, "share_long_context": s["share_long_context"],
            })
    table = pd.DataFrame(out, columns=list(REGRET_COLUMNS))
    if not table.empty:
        order = table["role"].map({"router": 0, "retrieval": 1, "long_context": 2})
        table = table.assign(_o=order).sort_values(["run_id", "_o", "strategy"]).drop(columns="_o")
    return Regret(table.reset_index(drop=True), chosen_sheet.origin, notes)

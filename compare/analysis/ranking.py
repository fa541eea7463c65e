"""The ranking `recommend` makes and the words that explain it (split from
compare/analysis/recommend.py, which forms the numbers): both constraints met first, cheapest
first; then the floor only, the target only, neither (best quality first).
"""

from __future__ import annotations

import math
from typing import Any

from compare.analysis.workload import Workload


def rank_cost(row: dict[str, Any], in_usd: bool = True) -> float:
    """The cost the ranking compares: $ when every strategy has $, else computed prompt + output
    tokens for all of them."""
    if in_usd and row["usd_per_1k"] is not None and not math.isnan(row["usd_per_1k"]):
        return float(row["usd_per_1k"])
    return float(row["input_tokens_per_1k"] + row["output_tokens_per_1k"])


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Both constraints met first (cheapest first), then floor only, target only, neither
    (best quality first): the top row is the answer, the rest explain what it beat."""
    def key(r: dict[str, Any]) -> tuple[int, float, float]:
        group = 0 if r["meets_floor"] and r["meets_target"] else 1 if r["meets_floor"] else \
            2 if r["meets_target"] else 3
        return (group, r["_rank_cost"] if group == 0 else -r["quality"], r["_rank_cost"])
    ranked = sorted(rows, key=key)
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
        del r["_rank_cost"]
    return ranked


def explain(rows: list[dict[str, Any]], wl: Workload, in_usd: bool = True) -> tuple[str | None, list[str]]:
    unit = "$ per 1k queries" if in_usd else "tokens per 1k queries"
    lat, tgt = f"p95 {wl.latency.metric}", f"{wl.latency.p95_ms:,.0f} ms"
    best = rows[0]

    def money(r: dict[str, Any]) -> str:
        return f"{rank_cost(r, in_usd):.4g}"

    def why_not(r: dict[str, Any]) -> str:
        bits = []
        if not r["meets_floor"]:
            bits.append(f"quality {r['quality']:.2f} below the floor {wl.quality_floor:.2f}")
        if r["utilization"] >= 1:
            bits.append(f"cannot keep up with {wl.requests_per_s:g} req/s (utilisation "
                        f"{r['utilization']:.2f})")
        elif r["p95_ms"] > wl.latency.p95_ms:
            bits.append(f"{lat} {r['p95_ms']:,.0f} ms over the target {tgt}")
        return "; ".join(bits) or f"costs more ({money(r)} vs {money(best)} {unit})"

    if not (best["meets_floor"] and best["meets_target"]):
        return None, ["no strategy meets both the quality floor and the latency target"] + [
            f"{r['strategy']}: {why_not(r)}" for r in rows]
    reasons = [
        f"{best['strategy']} meets the floor (quality {best['quality']:.2f}, 95% CI "
        f"{best['quality_low']:.2f}-{best['quality_high']:.2f}, n={best['n']}) and the target "
        f"({lat} {best['p95_ms']:,.0f} ms <= {tgt}, utilisation {best['utilization']:.2f}) and is the "
        f"cheapest that does: {money(best)} {unit} at {wl.questions_per_doc} question(s) per document"]
    if best["quality_low"] < wl.quality_floor:
        reasons.append(f"caution: the interval's lower end {best['quality_low']:.2f} is below the floor; "
                       "measure more questions to be sure")
    reasons += [f"{r['strategy']}: {why_not(r)}" for r in rows[1:]]
    return str(best["strategy"]), reasons

"""The routing section's regret table (issue 30): each router against the per-question oracle.

Apart from sections.py for size; the numbers come from compare/analysis/regret.py. Shown only
when a run has a router: for the plain pipelines the routing table already says it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from compare.analysis.prices import ChosenSheet
from compare.analysis.regret import regret_table

COLUMNS = {
    "run_id": "run", "strategy": "strategy", "n": "n", "quality": "quality",
    "oracle_quality": "oracle quality", "quality_lost": "quality lost", "usd_per_q": "$ / question",
    "usd_saved_share": "saved vs always long context", "usd_over_oracle_per_q": "$ over the oracle",
}


def regret_rows(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str],
                sheet: ChosenSheet | None) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows for the table, notes); no rows when no run shown has a router."""
    regret = regret_table(con, run_ids, sheet=sheet)
    table = regret.table
    if table.empty or not (table["role"] == "router").any():
        return [], []
    notes = [f"Regret: what each strategy lost against the per-question oracle (quality) and saved "
             f"against always long context ($ per question, each request priced alone; prices: "
             f"{regret.sheet}). n: questions every configuration answered.", *regret.notes]
    return table[list(COLUMNS)].to_dict("records"), notes

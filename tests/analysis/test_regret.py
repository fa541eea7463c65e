"""A router's regret against the per-question oracle, worked by hand on a four-question store.

Prices (the sheet below): fresh input $1 per 1M tokens, output free, and a tier that bills a
whole request above 1100 prompt tokens at $2. Every prompt is computed (nothing cached).

        long context       RAG k=1          kind router
  q1    right, 1000 tok    right, 200       rag: right, 200
  q2    right, 1000        wrong, 200       long context: right, 1000
  q3    right, 1000        wrong, 200       two requests (200 + 1000 = 1200): wrong
  q4    wrong, 1000        wrong, 200       failed (quality 0, no usage: not priced)

Oracle: q1 RAG (right and cheaper), q2 LC, q3 LC, q4 RAG (none right: the cheapest) ->
quality 3/4, $ per question (200 + 1000 + 1000 + 200) / 4 = 600e-6.
Router: quality 2/4 -> lost 0.25. Its $ over its 3 priced rows: q3 priced step by step
(200 + 1000 = $1200e-6; the summed 1200 tokens would have been billed at the $2 tier, 2400e-6):
(200 + 1000 + 1200) / 3 = 800e-6 -> saves 200e-6 per question against always-LC (1000e-6), a
20% saving, and pays 200e-6 more than the oracle.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from compare.analysis.prices import ChosenSheet, load_price_sheet
from compare.analysis.regret import regret_table
from compare.core.protocols import Role
from compare.core.types import Completion, Example, Prediction, Step
from compare.report.regret_section import regret_rows
from compare.run.runner import params_hash
from compare.store.db import Store
from pipelines.routers import combine
from tests.fixtures.store import store_fixtures

NOW = datetime(2026, 1, 1)
SHEET = """name = "hand"
date = 2026-01-01
source = "a test"
note = "round numbers"
[api]
input_usd_per_mtok = 1.0
cached_input_usd_per_mtok = 0.1
output_usd_per_mtok = 0.0
local_usd_per_hour = 0.0
[[api.tiers]]
above_prompt_tokens = 1100
input_usd_per_mtok = 2.0
cached_input_usd_per_mtok = 0.2
output_usd_per_mtok = 0.0
"""


def _c(prompt: int) -> Completion:
    return Completion("x", prompt, 0, 2, ttft_s=0.1, e2e_s=0.2, itl_s=(0.1,))


def _pred(prompt: int, route: str | None = None) -> Prediction:
    return Prediction("x", _c(prompt), context_tokens=prompt - 50, route=route)


FAILED = Prediction("", None, 0, route="rag", error="boom")
TWO_STEPS = Prediction("x", combine(_c(200), _c(1000)), context_tokens=1100, route="long_context",
                       steps=(Step("rag", _c(200), 150), Step("long_context", _c(1000), 950)))
ROWS: dict[str, tuple[Role, dict[str, Any], dict[str, tuple[Prediction, float | None]]]] = {
    "long_context": ("long_context", {"kind": "long_context"},
                     {q: (_pred(1000), float(q != "q4")) for q in ("q1", "q2", "q3", "q4")}),
    "rag": ("retrieval", {"kind": "rag", "top_k": 1},
            {q: (_pred(200), float(q == "q1")) for q in ("q1", "q2", "q3", "q4")}),
    "kind_router": ("router", {"kind": "kind_router"},
                    {"q1": (_pred(200, "rag"), 1.0), "q2": (_pred(1000, "long_context"), 1.0),
                     "q3": (TWO_STEPS, 0.0), "q4": (FAILED, None)}),
}


def _fill(db: Path) -> None:
    with Store(db) as s:
        s.start_run("r", corpus="hand", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        s.add_examples("r", [Example(q, (f"d{q}",), "q?", ("x",)) for q in ("q1", "q2", "q3", "q4")])
        seq = 0
        for pipe, (role, params, preds) in ROWS.items():
            for q, (pred, value) in preds.items():
                s.add_prediction("r", q, pipe, params_hash(params), params, pred, seq=seq, resumed=False,
                                 started_at=NOW, scores={"contains": value}, role=role, label=pipe)
                seq += 1
    (db.parent / "sheet.toml").write_text(SHEET)


db, con = store_fixtures(_fill, "regret")


def test_regret_worked_by_hand(con: Any, db: Path) -> None:
    got = regret_table(con, ["r"], metric="contains", prices=db.parent / "sheet.toml")
    t = got.table.set_index("kind")
    assert list(t.index) == ["kind_router", "rag", "long_context"]  # routers first
    assert set(t["n"]) == {4} and t.loc["kind_router", "n_priced"] == 3
    r = t.loc["kind_router"]
    assert (r["quality"], r["oracle_quality"], r["quality_lost"]) == pytest.approx((0.5, 0.75, 0.25))
    assert r["usd_per_q"] == pytest.approx(800e-6)  # q3 priced per request, not at the summed tier
    assert (r["lc_usd_per_q"], r["oracle_usd_per_q"]) == pytest.approx((1000e-6, 600e-6))
    assert (r["usd_saved_per_q"], r["usd_saved_share"]) == pytest.approx((200e-6, 0.2))
    assert r["usd_over_oracle_per_q"] == pytest.approx(200e-6)
    assert r["lc_strategy"] == "long_context" and r["share_long_context"] == pytest.approx(0.5)
    rag, lc = t.loc["rag"], t.loc["long_context"]
    assert (rag["quality_lost"], rag["usd_saved_per_q"]) == pytest.approx((0.5, 800e-6))
    assert (lc["quality_lost"], lc["usd_saved_per_q"]) == pytest.approx((0.0, 0.0))
    assert got.sheet.startswith("given on the command line") and got.notes == []


def test_a_run_without_both_paths_says_so(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "one.duckdb"
    with Store(path) as s:
        s.start_run("solo", corpus="hand", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        s.add_examples("solo", [Example("q1", ("d",), "q?", ("x",))])
        s.add_prediction("solo", "q1", "rag", "h", {"kind": "rag"}, _pred(200), seq=0, resumed=False,
                         started_at=NOW, scores={"contains": 1.0}, role="retrieval")
    with duckdb.connect(str(path), read_only=True) as c:
        got = regret_table(c, ["solo"], metric="contains")
    assert got.table.empty and got.notes == ["solo: no regret (needs both a RAG and a long-context pipeline)"]


def test_the_report_shows_the_regret_of_each_router(con: Any, db: Path) -> None:
    """The routing section's table (compare/report/regret_section.py) carries regret_table's numbers
    under the report's own prices."""
    sheet = ChosenSheet(load_price_sheet(db.parent / "sheet.toml"), "given")
    rows, notes = regret_rows(con, ["r"], sheet)
    router = next(r for r in rows if r["strategy"] == "kind_router")
    assert (router["n"], router["quality_lost"], router["usd_saved_share"]) == pytest.approx((4, 0.25, 0.2))
    assert notes and "oracle" in notes[0] and "prices: given" in notes[0]

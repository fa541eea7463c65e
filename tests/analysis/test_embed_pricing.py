"""Embedding tokens an endpoint billed are priced (issue 15 item 5), against values worked out by
hand, on a real DuckDB filled through the real Store API.

Rates (tests/fixtures/cost.py): API $1 fresh / $0.10 cached / $4 output per 1M, local $1e-4/s,
self-hosted $1e-3/s; the embeddings endpoint $0.50 per 1M tokens. One document, three RAG
questions: prompt 330, 10 output, retrieval 0.05 s, index build 0.2 s.

  "endpoint" each question embedded through the endpoint: 12 tokens = 6e-6 $; the index's
             5,000 chunk tokens = 2,500e-6 $ once.
             API:   marginal 370e-6 + 0.05 * 1e-4 + 6e-6 = 381e-6; one-time 0.2 * 1e-4 + 2,500e-6 = 2,520e-6
             self:  marginal 1.5 s busy * 1e-3 + 0.05 * 1e-3 + 6e-6 = 1,556e-6;
                    one-time 0.2 * 1e-3 + 2,500e-6 = 2,700e-6
  "local"    the same rows embedded in-process (no embed_tokens on the rows; the index's
             5,000 tokens counted but with no endpoint model): nothing billed.
             API:   marginal 375e-6, one-time 20e-6
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from compare.analysis.cost import cost_table
from compare.analysis.prices import EmbedPrices, PriceSheet
from compare.core.types import Completion, Example, Prediction
from compare.store.db import Store
from tests.fixtures.cost import RAG, RAG_LABEL, SHEET
from tests.fixtures.store import store_fixtures

PRICED = SHEET.model_copy(update={"embeddings": EmbedPrices(usd_per_mtok=0.5, model="embed-small")})


def _fill(db: Path) -> None:
    with Store(db) as s:
        for run, tokens, model in (("endpoint", 12, "embed-small"), ("local", None, None)):
            s.start_run(run, corpus="jsonl", model="tiny", base_url=None, concurrency=1, spec={},
                        corpus_params={}, server={})
            exs = [Example(f"q{i}", ("d1",), f"question {i}?", ("answer",)) for i in (1, 2, 3)]
            s.add_examples(run, exs, {"d1": 1000})
            name, h, params = RAG
            for i in (1, 2, 3):
                done = Completion("answer", 330, 0, 10, 0.5, 1.5, ())
                pred = Prediction("answer", done, 300, retrieval_s=0.05, embed_tokens=tokens)
                s.add_prediction(run, f"q{i}", name, h, params, pred, seq=i, resumed=False,
                                 started_at=datetime(2026, 1, 1), scores={"contains": 1.0})
            built = {"build_s": 0.2, "n_chunks": 5, "bytes": 100, "cache_hit": False,
                     "embed_tokens": 5000, "embed_model": model, "embed_s": 0.1}
            s.add_index_stats(run, name, h, {"d1": built})
            s.finish_run(run, "done")


db, con = store_fixtures(_fill, "embed-pricing")


def _row(con: duckdb.DuckDBPyConnection, run: str, view: str, sheet: PriceSheet = PRICED) -> dict[str, Any]:
    rows = cost_table(con, [run], sheet, (1, 10))
    [row] = [r for r in rows if r["label"] == RAG_LABEL and r["view"] == view]
    return row


def test_endpoint_embedding_tokens_are_billed_once_per_index_and_per_question(
    con: duckdb.DuckDBPyConnection,
) -> None:
    api, hosted = _row(con, "endpoint", "api"), _row(con, "endpoint", "self_hosted")
    assert api["marginal_usd_per_query"] == pytest.approx(381e-6)
    assert api["one_time_usd_per_doc"] == pytest.approx(2520e-6)
    assert hosted["marginal_usd_per_query"] == pytest.approx(1556e-6)
    assert hosted["one_time_usd_per_doc"] == pytest.approx(2700e-6)
    assert api["usd_per_query_q10"] == pytest.approx(381e-6 + 252e-6)
    assert "embeddings endpoint tokens at $0.5/1M included" in api["caveats"]


def test_in_process_embedding_bills_no_tokens(con: duckdb.DuckDBPyConnection) -> None:
    api = _row(con, "local", "api")
    assert api["marginal_usd_per_query"] == pytest.approx(375e-6)
    assert api["one_time_usd_per_doc"] == pytest.approx(20e-6)
    assert "embedding" not in api["caveats"]


def test_a_sheet_without_embedding_prices_says_the_tokens_are_not_priced(
    con: duckdb.DuckDBPyConnection,
) -> None:
    api = _row(con, "endpoint", "api", SHEET)
    assert api["marginal_usd_per_query"] == pytest.approx(375e-6)
    assert api["one_time_usd_per_doc"] == pytest.approx(20e-6)
    assert "NOT priced" in api["caveats"]

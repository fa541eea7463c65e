"""The rows `rescore` reads and the one column it back-fills, beside Store (issue 26 item 5): the
SQL lives in the store layer, so compare/run/rescore.py scores and never spells a query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from compare.core.types import Prediction
from compare.store.db import Store
from compare.store.rows import spans_from_json


@dataclass(frozen=True)
class StoredAnswer:
    """One stored prediction as a metric sees it (no completion: timing is not rescored)."""

    key: tuple[str, str, str, str]  # run_id, example_id, pipeline, params_hash
    prediction: Prediction


def stored_answers(store: Store, run_ids: Sequence[str] | None) -> list[StoredAnswer]:
    """Every prediction of `run_ids` (all runs when None) whose question is stored."""
    where = "" if not run_ids else f"WHERE p.run_id IN ({', '.join('?' * len(run_ids))})"
    rows = store.con.execute(
        f"""
        SELECT p.run_id, p.example_id, p.pipeline, p.params_hash, p.answer, p.error,
               p.context_tokens, p.retrieved
        FROM predictions p JOIN examples e USING (run_id, example_id) {where}
        """,
        list(run_ids or []),
    ).fetchall()
    return [StoredAnswer((run_id, ex_id, pipe, h), Prediction(
        answer=answer, completion=None, context_tokens=ctx, retrieved=spans_from_json(retrieved),
        error=error)) for run_id, ex_id, pipe, h, answer, error, ctx, retrieved in rows]


def fill_primary_metrics(store: Store, primaries: Mapping[tuple[str, str], str]) -> None:
    """Questions stored before corpora declared a primary metric get the one the headline used;
    a declared one is left as it is."""
    for (run_id, ex_id), name in primaries.items():
        store.con.execute("UPDATE examples SET primary_metric = ? WHERE run_id = ? AND example_id = ? "
                          "AND primary_metric IS NULL", [name, run_id, ex_id])

"""Recompute scores from stored predictions, without calling the model.

Metrics improve (a better answer extractor, a new metric); the expensive part of a run, the
model's replies, does not need to be paid again for that.
"""

from __future__ import annotations

from collections.abc import Sequence

from compare.analysis.judgements import JUDGE_METRIC
from compare.core import metrics as metric_registry
from compare.core.types import Example, Prediction
from compare.run import judge
from compare.store.db import Store
from compare.store.migrations import redact_stored_secrets
from compare.store.rows import spans_from_json


def rescore(store: Store, run_ids: Sequence[str] | None, metric_names: Sequence[str]) -> int:
    """Replace the named metrics' rows for every stored prediction; returns rows rescored.
    Judge scores are restored from the stored verdicts (never by asking the judge again); a
    secret an older ragvslc stored with a run (a header's value) is taken out first, noted."""
    with store.transaction():
        redact_stored_secrets(store.con, run_ids)
    metrics = metric_registry.resolve([m for m in metric_names if m != JUDGE_METRIC])
    where = "" if not run_ids else f"WHERE p.run_id IN ({', '.join('?' * len(run_ids))})"
    rows = store.con.execute(
        f"""
        SELECT p.run_id, p.example_id, p.pipeline, p.params_hash, p.answer, p.error,
               p.context_tokens, p.retrieved
        FROM predictions p JOIN examples e USING (run_id, example_id) {where}
        """,
        list(run_ids or []),
    ).fetchall()
    primaries: dict[tuple[str, str], str] = {}
    examples: dict[str, dict[str, Example]] = {}  # each run's questions, read once
    for run_id, ex_id, pipe, h, answer, error, ctx, retrieved in rows:
        if run_id not in examples:
            examples[run_id] = store.examples(run_id)
        ex = examples[run_id][ex_id]
        primaries[(run_id, ex_id)] = metric_registry.primary_metric(ex)
        pred = Prediction(
            answer=answer, completion=None, context_tokens=ctx, retrieved=spans_from_json(retrieved),
            error=error,
        )
        if metrics:
            store.replace_scores(
                (run_id, ex_id, pipe, h), metric_registry.score(metrics, ex, pred), only=list(metrics)
            )
    # Examples stored before corpora declared a primary metric get the one the headline used.
    for (run_id, ex_id), name in primaries.items():
        store.con.execute("UPDATE examples SET primary_metric = ? WHERE run_id = ? AND example_id = ? "
                          "AND primary_metric IS NULL", [name, run_id, ex_id])
    judge.restore_scores(store, run_ids)
    return len(rows)

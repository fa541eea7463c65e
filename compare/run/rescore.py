"""Recompute scores from stored predictions, without calling the model.

Metrics improve (a better answer extractor, a new metric); the expensive part of a run, the
model's replies, does not need to be paid again for that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from compare.analysis.judgements import JUDGE_METRIC
from compare.core import metrics as metric_registry
from compare.core.types import Example, Prediction, Span
from compare.run import judge
from compare.store.db import Store


def _spans(raw: str) -> tuple[Span, ...]:
    return tuple(Span(s["doc_id"], float(s["start"]), float(s["end"])) for s in json.loads(raw))


def rescore(store: Store, run_ids: Sequence[str] | None, metric_names: Sequence[str]) -> int:
    """Replace the named metrics' rows for every stored prediction; returns rows rescored.
    Judge scores are restored from the stored verdicts (never by asking the judge again)."""
    metrics = metric_registry.resolve([m for m in metric_names if m != JUDGE_METRIC])
    where = "" if not run_ids else f"WHERE p.run_id IN ({', '.join('?' * len(run_ids))})"
    rows = store.con.execute(
        f"""
        SELECT p.run_id, p.example_id, p.pipeline, p.params_hash, p.answer, p.error,
               p.context_tokens, p.retrieved, e.doc_ids, e.question, e.answers, e.evidence, e.tags
        FROM predictions p JOIN examples e USING (run_id, example_id) {where}
        """,
        list(run_ids or []),
    ).fetchall()
    primaries: dict[tuple[str, str], str] = {}
    for run_id, ex_id, pipe, h, answer, error, ctx, retrieved, doc_ids, q, answers, ev, tags in rows:
        ex = Example(
            id=ex_id, doc_ids=tuple(json.loads(doc_ids)), question=q,
            answers=tuple(json.loads(answers)), evidence=_spans(ev), tags=json.loads(tags),
        )
        primaries[(run_id, ex_id)] = metric_registry.primary_metric(ex)
        pred = Prediction(
            answer=answer, completion=None, context_tokens=ctx, retrieved=_spans(retrieved), error=error
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

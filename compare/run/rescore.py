"""Recompute scores from stored predictions, without calling the model.

Metrics improve (a better answer extractor, a new metric); the expensive part of a run, the
model's replies, does not need to be paid again for that.
"""

from __future__ import annotations

from collections.abc import Sequence

from compare.analysis.judgements import JUDGE_METRIC
from compare.core import metrics as metric_registry
from compare.core.types import Example
from compare.run import judge
from compare.store.db import Store
from compare.store.migrations import redact_stored_secrets
from compare.store.rescore_rows import fill_primary_metrics, stored_answers


def rescore(store: Store, run_ids: Sequence[str] | None, metric_names: Sequence[str]) -> int:
    """Replace the named metrics' rows for every stored prediction; returns rows rescored.
    Judge scores are restored from the stored verdicts (never by asking the judge again); a
    secret an older ragvslc stored with a run (a header's value) is taken out first, noted."""
    with store.transaction():
        redact_stored_secrets(store.con, run_ids)
    metrics = metric_registry.resolve([m for m in metric_names if m != JUDGE_METRIC])
    rows = stored_answers(store, run_ids)
    primaries: dict[tuple[str, str], str] = {}
    examples: dict[str, dict[str, Example]] = {}  # each run's questions, read once
    for row in rows:
        run_id, ex_id = row.key[:2]
        if run_id not in examples:
            examples[run_id] = store.examples(run_id)
        ex = examples[run_id][ex_id]
        primaries[(run_id, ex_id)] = metric_registry.primary_metric(ex)
        if metrics:
            scores = metric_registry.score(metrics, ex, row.prediction)
            store.replace_scores(row.key, scores, only=list(metrics))
    fill_primary_metrics(store, primaries)
    judge.restore_scores(store, run_ids)
    return len(rows)

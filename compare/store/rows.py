"""A stored row's columns, built from the engine's types: what the `predictions` and `examples`
tables hold for a prediction or a question (Store writes them; tests build them too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from compare.core.metrics import primary_metric
from compare.core.protocols import Role
from compare.core.types import Example, Prediction, Span

PredictionKey = tuple[str, str, str]  # (example_id, pipeline, params_hash)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def spans_json(spans: Sequence[Span]) -> str:
    return json.dumps([asdict(s) for s in spans])


def spans_from_json(raw: str) -> tuple[Span, ...]:
    """Spans as stored (numbers unconverted, so a stored example hashes as it was asked)."""
    return tuple(Span(s["doc_id"], s["start"], s["end"]) for s in json.loads(raw))


def example_from_row(ex_id: str, doc_ids: str, question: str, answers: str, evidence: str,
                     tags: str) -> Example:
    """An `examples` row back as the question it was (the inverse of add_examples' columns)."""
    return Example(id=ex_id, doc_ids=tuple(json.loads(doc_ids)), question=question,
                   answers=tuple(json.loads(answers)), evidence=spans_from_json(evidence),
                   tags=json.loads(tags))


def gold_columns(ex: Example) -> dict[str, Any]:
    """What a question is scored against: stored when it is first asked, replaced when a
    corrected corpus refreshes it (compare/run/refresh.py)."""
    return {"answers": json.dumps(list(ex.answers)), "evidence": spans_json(ex.evidence),
            "tags": json.dumps(dict(ex.tags)), "primary_metric": primary_metric(ex)}


@dataclass(frozen=True)
class RowMeta:
    """Where a prediction row sits in its run: everything the runner knows about the request
    beyond the pipeline's own answer."""

    run_id: str
    params: Mapping[str, Any]
    role: Role | None
    seq: int
    resumed: bool
    started_at: datetime
    attempts: int = 1
    replica: str | None = None
    session: int | None = None  # the run session (configuration) that produced the row
    label: str | None = None  # the pipeline's own short label ("RAG k=4")


def prediction_row(key: PredictionKey, pred: Prediction, meta: RowMeta) -> dict[str, Any]:
    """A prediction as the `predictions` table's columns (times in ms)."""
    example_id, pipeline, params_hash = key
    c = pred.completion
    e2e_ms = c.e2e_s * 1e3 if c else None
    # A multi-step row's tokens are summed over its requests, so its TPOT is the answering
    # request's own (a decode speed), not summed time over summed tokens.
    tpot = pred.steps[-1].completion.tpot_s if pred.steps else (c.tpot_s if c else None)
    return {
        "run_id": meta.run_id, "example_id": example_id, "pipeline": pipeline, "params_hash": params_hash,
        "params": json.dumps(meta.params, sort_keys=True, default=str), "role": meta.role,
        "label": meta.label,
        "answer": pred.answer, "error": pred.error, "context_tokens": pred.context_tokens,
        "truncated_tokens": pred.truncated_tokens,
        "prompt_tokens": c.prompt_tokens if c else None, "cached_tokens": c.cached_tokens if c else None,
        "cache_write_tokens": c.cache_write_tokens if c else None, "embed_tokens": pred.embed_tokens,
        "output_tokens": c.output_tokens if c else None, "ttft_ms": c.ttft_s * 1e3 if c else None,
        "e2e_ms": e2e_ms, "tpot_ms": tpot * 1e3 if tpot is not None else None,
        "itl_ms": [x * 1e3 for x in c.itl_s] if c else None, "retrieval_ms": pred.retrieval_s * 1e3,
        "total_ms": (pred.retrieval_s * 1e3 + e2e_ms) if e2e_ms is not None else None,
        "finish_reason": c.finish_reason if c else None, "retrieved": spans_json(pred.retrieved),
        "route": pred.route, "seq": meta.seq, "resumed": meta.resumed, "started_at": meta.started_at,
        "finished_at": now(), "attempts": meta.attempts, "replica": meta.replica, "session": meta.session,
        "steps": json.dumps([st.as_dict() for st in pred.steps]) if pred.steps else None,
        **NO_LOAD_TIMING,  # a load run stamps them right after (compare/run/load.py)
    }


# The load-timing columns of a row not sent by a load run (every column is written by name).
NO_LOAD_TIMING: dict[str, Any] = {"load_step": None, "scheduled_ms": None, "sent_ms": None, "queue_ms": None}


def load_timing(step: str, scheduled_s: float, sent_s: float) -> dict[str, Any]:
    """A load run's request timing as `predictions` columns (ms from the step's start): when it
    was due, when it went out, and the wait between (a concurrency slot, or generator lag; a
    timer that fires a hair early makes it slightly negative, kept as measured)."""
    return {"load_step": step, "scheduled_ms": scheduled_s * 1e3, "sent_ms": sent_s * 1e3,
            "queue_ms": (sent_s - scheduled_s) * 1e3}

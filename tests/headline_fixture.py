"""Hand-built questions, predictions and stores for the headline-metric and judge tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from compare.core.metrics import METRICS, score
from compare.core.types import Completion, Example, Prediction
from compare.store.db import Store
from corpora.leval import load_leval

NOW = datetime(2026, 1, 1)


def pred(text: str, prompt: int = 100, cached: int = 0, total_ms: float = 500.0) -> Prediction:
    e2e = (total_ms - 10) / 1e3
    comp = Completion(text, prompt, cached, 4, ttft_s=e2e / 2, e2e_s=e2e, itl_s=(e2e / 6,) * 3,
                      finish_reason="stop")
    return Prediction(text, comp, context_tokens=prompt - 20, retrieval_s=0.01)


FAILED = Prediction("", None, 0, error="context_overflow: too long")


def tpo(gold: str) -> Example:
    return next(e for e in load_leval("tpo", max_docs=1).examples if e.answers == (gold,))


def store_rows(db: Path, rows: dict[str, list[tuple[Example, Prediction]]]) -> None:
    """One run "r"; per pipeline, (example, prediction) pairs scored by every metric."""
    configs: dict[str, dict[str, Any]] = {"long_context": {"kind": "long_context"},
                                          "rag": {"kind": "rag", "top_k": 2}}
    with Store(db) as s:
        s.start_run("r", corpus="hand", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        s.add_examples("r", list({ex.id: ex for pairs in rows.values() for ex, _ in pairs}.values()))
        seq = 0
        for pipe, pairs in rows.items():
            for ex, pred in pairs:
                s.add_prediction("r", ex.id, pipe, pipe[:6], configs[pipe], pred, seq=seq, resumed=False,
                                 started_at=NOW, scores=score(METRICS, ex, pred))
                seq += 1

"""The claim a load run leads with (compare/analysis/load_verdict.py), worked by hand."""

from __future__ import annotations

from typing import Any

import pytest

from compare.analysis.load_verdict import load_verdicts, slo_words


def _row(pipeline: str, rate: float, good: int, sent: int = 6, status: str = "done",
         note: str | None = None) -> dict[str, Any]:
    steady = status == "done"
    return {"pipeline": pipeline, "params_hash": f"h-{pipeline}", "step": f"rate={rate:g}", "rate": rate,
            "concurrency": None, "status": status, "steady": steady, "note": note, "sent": sent,
            "good": good, "goodput_rps": good / 12.0 if steady else None, "quality": 0.5}


def test_each_rate_stands_alone_and_a_winner_needs_fishers_test() -> None:
    rows = [_row("rag", 2.0, 2), _row("rag", 0.5, 6), _row("rag", 1.0, 4),
            _row("long_context", 0.5, 0), _row("long_context", 1.0, 3),
            _row("long_context", 2.0, 1, sent=3, status="saturated", note="backlog 33 > 32")]
    low, mid, high = load_verdicts(rows, {"h-rag": "RAG k=4", "h-long_context": "long context"})
    # 6/6 vs 0/6: Fisher's two-sided p = 2 / C(12, 6) = 2/924
    assert (low.step, low.winner) == ("0.5 requests/s", "RAG k=4")
    assert low.p == pytest.approx(2 / 924)
    assert [a.label for a in low.steady] == ["RAG k=4", "long context"]
    assert low.steady[0].interval.n == 6 and low.steady[1].interval.hi < 0.4  # Wilson 0/6: [0, 0.39]
    assert "6/6 [0.61, 1.00]" in low.text and "n = 6" in low.text
    # 4/6 vs 3/6 is no claim
    assert mid.winner is None and mid.p == pytest.approx(1.0) and "no winner named" in mid.text
    # the saturated step is named, never compared
    assert high.winner == "RAG k=4" and high.p is None
    assert high.not_steady == ["long context (saturated: backlog 33 > 32)"]
    assert "only one that kept up" in high.text


def test_nobody_is_named_when_the_only_steady_pipeline_met_no_slo() -> None:
    (v,) = load_verdicts([_row("rag", 1.0, 0), _row("long_context", 1.0, 0, status="incomplete")])
    assert v.winner is None and v.not_steady == ["long_context (incomplete)"]


def test_slo_words_say_what_the_verdict_was_judged_against() -> None:
    assert slo_words({"ttft": 2000.0, "e2e": 8000.0}) == "TTFT <= 2000 ms, E2E <= 8000 ms"
    assert slo_words({}).startswith("none given")

"""What a load step measured, read back from a store filled through the real Store API
(compare/analysis/load.py): percentiles, SLO attainment and goodput, the hit rate from /metrics
deltas, quality against the idle run, and a saturated step never counted as steady."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from compare.analysis.load import step_metrics
from compare.core.types import Completion, Example, Prediction
from compare.store.db import Store
from compare.store.rows import load_timing, now
from tests.fixtures.store import store_fixtures

RUN, IDLE = "load-test", "run-idle"
H = "abc123"


def _completion(ttft_s: float, e2e_s: float, out: int = 5) -> Completion:
    gaps = (e2e_s - ttft_s) / (out - 1)
    return Completion(text="x", prompt_tokens=100, cached_tokens=40, output_tokens=out, ttft_s=ttft_s,
                      e2e_s=e2e_s, itl_s=tuple([gaps] * (out - 1)), finish_reason="stop")


def _start(store: Store, run_id: str) -> None:
    store.start_run(run_id, corpus="c", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})


def _fill(path: Path) -> None:
    with Store(path) as store:
        _start(store, IDLE)
        store.add_examples(IDLE, [Example("q1", ("d",), "?", ("a",)), Example("q2", ("d",), "?", ("a",))])
        for q in ("q1", "q2"):  # the idle run answered both questions right
            store.add_prediction(IDLE, q, "rag", H, {}, Prediction("a", _completion(0.1, 0.3), 10), seq=0,
                                 resumed=False, started_at=now(), scores={"headline": 1.0})
        _start(store, RUN)
        for step, status, deltas in (("rate=1", "done", {"vllm:prefix_cache_queries": 1000.0,
                                                         "vllm:prefix_cache_hits": 250.0}),
                                     ("rate=4", "saturated", {})):
            asked = ["q1", "q2", "q1", "q2", "q1"]
            store.add_examples(RUN, [Example(f"{q}@{step}#{i}", ("d",), "?", ("a",),
                                             tags={"load_question": q, "load_step": step})
                                     for i, q in enumerate(asked)])
            # User-visible TTFT = retrieval 50 ms + ttft: 150, 250, 350, 450 ms; the fifth failed.
            for i, ttft in enumerate((0.1, 0.2, 0.3, 0.4)):
                pred = Prediction("a", _completion(ttft, ttft + 0.2), 10, retrieval_s=0.05)
                store.add_prediction(RUN, f"{asked[i]}@{step}#{i}", "rag", H, {}, pred, seq=i, resumed=False,
                                     started_at=now(), scores={"headline": 0.0 if i == 1 else 1.0})
            store.add_prediction(RUN, f"q1@{step}#4", "rag", H, {}, Prediction("", None, 0, error="boom"),
                                 seq=4, resumed=False, started_at=now(), scores={"headline": None})
            for i in range(5):
                cols = load_timing(step, i * 1.0, i * 1.0 + 0.002 * i)
                sets = ", ".join(f"{c} = ?" for c in cols)
                store.con.execute(f"UPDATE predictions SET {sets} WHERE run_id = ? AND example_id = ?",
                                  [*cols.values(), RUN, f"{asked[i]}@{step}#{i}"])
            store.insert("load_steps", [{
                "run_id": RUN, "pipeline": "rag", "params_hash": H, "step": step, "rate": float(step[5:]),
                "concurrency": None, "requests": 5, "status": status, "note": None, "sessions": 1,
                "sent": 5, "duration_s": 10.0, "started_at": now(), "finished_at": now(),
                "server_deltas": json.dumps(deltas), "load": "{}", "idle_run_id": IDLE}])


db, con = store_fixtures(_fill, "load_metrics")


def test_percentiles_slos_goodput_and_hit_rate_of_a_steady_step(con: duckdb.DuckDBPyConnection) -> None:
    steady = step_metrics(con, RUN, {"ttft": 250.0})[0]
    assert (steady["step"], steady["status"], steady["steady"]) == ("rate=1", "done", True)
    assert (steady["sent"], steady["answered"], steady["errors"]) == (5, 4, 1)
    assert steady["ttft_p50_ms"] == pytest.approx(300.0)  # RAG's retrieval is part of the wait
    assert steady["e2e_p50_ms"] == pytest.approx(500.0)
    assert steady["itl_p50_ms"] == pytest.approx(50.0) and steady["tpot_p50_ms"] == pytest.approx(50.0)
    assert steady["good"] == 2  # 150 and 250 ms meet the TTFT SLO; the failed request misses it
    assert steady["slo_attainment"] == pytest.approx(2 / 5)
    assert steady["goodput_rps"] == pytest.approx(0.2) and steady["achieved_rps"] == pytest.approx(0.4)
    assert steady["output_tps"] == pytest.approx(20 / 10.0)
    assert steady["hit_rate"] == pytest.approx(0.25) and steady["row_hit_rate"] == pytest.approx(0.4)
    assert steady["queue_max_ms"] == pytest.approx(8.0)
    # Quality under load (a failed request scores 0) against the same questions in the idle run.
    assert steady["quality"] == pytest.approx(3 / 5) and steady["quality_idle"] == pytest.approx(1.0)


def test_every_slo_given_must_be_met(con: duckdb.DuckDBPyConnection) -> None:
    both = step_metrics(con, RUN, {"ttft": 250.0, "e2e": 400.0})[0]
    assert both["good"] == 1  # only the first request is within both
    assert step_metrics(con, RUN, {"tpot": 40.0})[0]["good"] == 0  # every decode took 50 ms a token
    assert step_metrics(con, RUN)[0]["good"] == 4  # no SLO: every answer is good


def test_a_saturated_step_is_flagged_and_never_counted_as_steady(con: duckdb.DuckDBPyConnection) -> None:
    sat = step_metrics(con, RUN, {"ttft": 250.0})[1]
    assert (sat["step"], sat["status"], sat["steady"]) == ("rate=4", "saturated", False)
    assert sat["goodput_rps"] is None and sat["achieved_rps"] is None and sat["slo_attainment"] is None
    assert sat["ttft_p50_ms"] == pytest.approx(300.0)  # what did answer is still shown
    assert sat["hit_rate"] is None  # no /metrics deltas: unknown, not zero


def test_a_negative_slo_is_refused(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="positive milliseconds"):
        step_metrics(con, RUN, {"ttft": -1.0})


def _pooled_run(path: Path, args: list[str]) -> None:
    """A long-context step on a server whose recorded command line bounded the KV pool: document
    d's context is 256 tokens (2 blocks of 128), each prompt 300 tokens, no output; sent in the
    order d/q1, d/q2, e/q1, d/q1 (by sent time, not by seq)."""
    with Store(path) as store:
        store.start_run(RUN, corpus="c", model="m", base_url=None, concurrency=1, spec={}, corpus_params={},
                        server={"managed": True, "args": args})
        asked = [("d", "q1"), ("d", "q2"), ("e", "q1"), ("d", "q1")]
        store.add_examples(RUN, [Example(f"{q}@rate=1#{i}", (doc,), "?", ("a",),
                                         tags={"load_question": f"{doc}/{q}", "load_step": "rate=1"})
                                 for i, (doc, q) in enumerate(asked)])
        for i, (_doc, q) in enumerate(asked):
            done = Completion(text="a", prompt_tokens=300, cached_tokens=0, output_tokens=0, ttft_s=0.1,
                              e2e_s=0.1, itl_s=(), finish_reason="stop")
            store.add_prediction(RUN, f"{q}@rate=1#{i}", "long_context", H, {}, Prediction("a", done, 256),
                                 seq=3 - i, resumed=False, started_at=now(), scores={"headline": 1.0})
            cols = load_timing("rate=1", float(i), float(i))
            sets = ", ".join(f"{c} = ?" for c in cols)
            store.con.execute(f"UPDATE predictions SET {sets} WHERE run_id = ? AND example_id = ?",
                              [*cols.values(), RUN, f"{q}@rate=1#{i}"])
        store.insert("load_steps", [{
            "run_id": RUN, "pipeline": "long_context", "params_hash": H, "step": "rate=1", "rate": 1.0,
            "concurrency": None, "requests": 4, "status": "done", "note": None, "sessions": 1, "sent": 4,
            "duration_s": 4.0, "started_at": now(), "finished_at": now(), "server_deltas": "{}", "load": "{}",
            "idle_run_id": IDLE}])


def test_the_cache_models_hit_rate_is_derived_when_the_pool_was_recorded(tmp_path: Path) -> None:
    """Pool of 4 blocks (3 usable, one is vLLM's null block): d/q1 cold; d/q2 reuses d's 2 blocks
    (256 tokens); e/q1 needs 3 blocks and evicts d; d/q1 is cold again: 256 / 1200. With 8
    blocks d survives e: 512 / 1200. Without a recorded pool there is nothing to derive from."""
    for blocks, want in ((4, 256 / 1200), (8, 512 / 1200)):
        path = tmp_path / f"b{blocks}.duckdb"
        _pooled_run(path, ["--model", "m", "--num-gpu-blocks-override", str(blocks)])
        with duckdb.connect(str(path), read_only=True) as c:
            row = step_metrics(c, RUN)[0]
        assert row["derived_hit_rate"] == pytest.approx(want)
        assert "derived, not measured" in row["derived_hit_rate_basis"]
        assert f"{blocks} KV blocks of 128 tokens" in row["derived_hit_rate_basis"]
    _pooled_run(tmp_path / "none.duckdb", ["--model", "m"])
    with duckdb.connect(str(tmp_path / "none.duckdb"), read_only=True) as c:
        row = step_metrics(c, RUN)[0]
    assert row["derived_hit_rate"] is None and row["derived_hit_rate_basis"] is None

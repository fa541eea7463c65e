"""`recommend` on a DuckDB built by a real small run, plus the routing section on real rows.

The fixture database holds three runs over the same needle documents (depths <= 0.3, so no
document shares half its prefix with another needle document and the first run is cold):
- A: long context and RAG through `compare.run.execute.execute_async`, as the CLI runs them;
- B: long context alone on the same documents right after: its requests are warm (prefix cache);
- C: long context, RAG and Self-Route in one run through the runner (for the routing section).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cli.recommend import recommend_command
from compare.analysis.recommend import Recommendation, recommend, wilson
from compare.analysis.workload import Workload, WorkloadError, load_workload

ROOT = Path(__file__).resolve().parents[2]


def specs(seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    corpus = {"kind": "needle", "lengths": [400, 1200], "depths": [0.1, 0.3], "seed": seed}
    both = [{"kind": "long_context"}, {"kind": "rag", "chunk_size": 120, "top_k": 2}]
    # B is warm because it follows A on the same server: the runs share the prefix cache (the
    # default isolates each run's documents, which would make B cold by construction).
    shared = {"cache_isolation": "shared"}
    return ({"corpus": corpus, "pipelines": both, **shared},
            {"corpus": corpus, "pipelines": both[:1], **shared})


# pure parts ------------------------------------------------------------------------------------
def test_wilson_interval_matches_the_textbook_values() -> None:
    lo, hi = wilson(0.5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson(1.0, 4)
    assert (round(lo, 4), round(hi, 4)) == (0.5101, 1.0)
    assert wilson(0.3, 0) == (0.0, 1.0)


def test_example_workloads_validate_and_typos_are_named(tmp_path: Path) -> None:
    files = sorted((ROOT / "workloads").glob("*.toml"))
    assert len(files) >= 3
    for f in files:
        wl = load_workload(f)
        assert wl.price_sheet is None or wl.price_sheet.is_file(), f
    bad = tmp_path / "bad.toml"
    bad.write_text('questions_per_doc = 3\nrequests_per_s = 1\nquality_flor = 0.5\n'
                   '[documents]\ntokens = [1000]\n[latency]\np95_ms = 100\n')
    with pytest.raises(WorkloadError, match="quality_flor") as err:
        load_workload(bad)
    assert "quality_floor" in str(err.value)  # the missing required field is named too
    with pytest.raises(ValueError, match="either"):
        Workload.model_validate({"questions_per_doc": 1, "requests_per_s": 1, "quality_floor": 0.5,
                                 "latency": {"p95_ms": 1}, "documents": {"tokens": [1], "min_tokens": 1}})


# the real fixture database ---------------------------------------------------------------------
async def build_db(server_url: str, db: Path, seed: int) -> dict[str, str]:
    """Runs A, B, C (module docstring) into one DuckDB file; returns their run ids.

    A fresh seed per build: a server that has seen an earlier build (RAGVSLC_TEST_BASE_URL)
    would otherwise serve run A's documents from its prefix cache, and A would not be cold."""
    from compare.core.protocols import Pipeline
    from compare.run.execute import build_corpus, execute_async
    from compare.run.runner import run
    from compare.run.spec import validate_spec
    from compare.serving.client import HttpBackend
    from compare.serving.weights import DEFAULT_MODEL
    from compare.store.db import Store
    from pipelines.long_context import LongContextPipeline
    from pipelines.rag import RagPipeline
    from pipelines.routers import SelfRouteSpec, build_router

    ids = {}
    spec_a, spec_b = specs(seed)
    with Store(db) as store:
        for name, spec in (("A", spec_a), ("B", spec_b)):
            s = validate_spec(spec)
            await execute_async(s, store, server_url, {"managed": False})
            ids[name] = s.run_id()
        s = validate_spec(spec_a)
        async with HttpBackend(server_url, DEFAULT_MODEL, timeout_s=300) as backend:
            corpus = await build_corpus(s, backend, None)
            pipes: list[Pipeline] = [LongContextPipeline(), RagPipeline(chunk_size=120, top_k=2),
                     build_router(SelfRouteSpec(rag={"chunk_size": 120, "top_k": 2}))]
            await run(run_id="route-C", corpus=corpus, pipelines=pipes, backend=backend, store=store,
                      run_meta={"model": DEFAULT_MODEL, "base_url": server_url, "spec": {},
                                "corpus_params": dict(corpus.params), "server": {}},
                      metric_names=["contains", "evidence_recall"])
        ids["C"] = "route-C"
    return ids


@pytest.fixture(scope="module")
async def real_db(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    db = tmp_path_factory.mktemp("recommend") / "results.duckdb"
    return db, await build_db(server_url, db, seed=random.randrange(1_000_000))


def workload(**kw: Any) -> Workload:
    base: dict[str, Any] = {
        "name": "t", "documents": {"tokens": [1200]}, "questions_per_doc": 1, "requests_per_s": 0.001,
        "latency": {"metric": "ttft", "p95_ms": 1e7}, "quality_floor": 0.0,
    }
    return Workload.model_validate(base | kw)


def by_kind(rec: Recommendation) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in rec.rows}


@pytest.mark.slow
def test_more_questions_per_document_moves_the_choice_to_long_context(real_db: Any) -> None:
    db, ids = real_db
    runs = [ids["A"], ids["B"]]
    recs = {q: recommend(db, workload(questions_per_doc=q), runs) for q in (1, 2, 10, 50)}
    for rec in recs.values():
        assert rec.coverage == "covered" and rec.run_ids == sorted(runs) and not rec.assumptions
    lc_tokens = [by_kind(recs[q])["long_context"]["input_tokens_per_1k"] for q in (1, 2, 10, 50)]
    assert lc_tokens == sorted(lc_tokens, reverse=True) and lc_tokens[0] > 5 * lc_tokens[-1]
    rag_tokens = {by_kind(recs[q])["rag"]["input_tokens_per_1k"] for q in (1, 2, 10, 50)}
    assert len(rag_tokens) == 1  # RAG pays the same per question whatever q is
    assert recs[1].rows[0]["kind"] == "rag" and recs[2].rows[0]["kind"] == "rag"
    assert recs[50].rows[0]["kind"] == "long_context"
    assert recs[50].winner == recs[50].rows[0]["strategy"] and "cheapest" in recs[50].reasons[0]


@pytest.mark.slow
def test_a_tighter_latency_target_moves_the_choice_to_the_faster_strategy(
    real_db: Any, tmp_path: Path
) -> None:
    db, ids = real_db
    runs = [ids["A"], ids["B"]]
    # A provider that bills no cached tokens: at 10 questions per document long context then pays
    # ~1/10 of a cold prompt per question plus the question's own ~60 computed tokens, below RAG's
    # ~270-token prompt. (At $0.10 per cached 1M, its ~1200 cached tokens make it dearer than RAG
    # until ~20 questions per document.)
    sheet = tmp_path / "free-cache.toml"
    sheet.write_text((ROOT / "prices" / "example-api.toml").read_text().replace(
        "cached_input_usd_per_mtok = 0.10", "cached_input_usd_per_mtok = 0.0", 1))
    loose = recommend(db, workload(questions_per_doc=10, price_sheet=sheet), runs)
    assert loose.rows[0]["kind"] == "long_context"  # cheaper at 10 questions per document
    lc, rag = by_kind(loose)["long_context"], by_kind(loose)["rag"]
    # 1 request in 10 is cold, so long context's p95 TTFT is a cold prefill of the whole document.
    assert lc["p95_ms"] > rag["p95_ms"]
    target = (lc["p95_ms"] + rag["p95_ms"]) / 2
    tight = recommend(db, workload(questions_per_doc=10, latency={"metric": "ttft", "p95_ms": target},
                                   price_sheet=sheet), runs)
    assert tight.rows[0]["kind"] == "rag" and tight.winner == rag["strategy"]
    assert not by_kind(tight)["long_context"]["meets_target"]
    assert any("over the target" in r for r in tight.reasons)
    # A request rate the measured service time cannot sustain fails the target whatever the p95.
    flooded = recommend(db, workload(questions_per_doc=10, requests_per_s=100.0), runs)
    assert flooded.winner is None and all(r["utilization"] > 1 for r in flooded.rows)


@pytest.mark.slow
def test_without_warm_requests_the_cache_is_an_assumption_and_said(real_db: Any) -> None:
    db, ids = real_db
    measured = recommend(db, workload(questions_per_doc=10), [ids["A"], ids["B"]])
    assumed = recommend(db, workload(questions_per_doc=10), [ids["A"]])
    assert assumed.coverage == "covered" and assumed.run_ids == [ids["A"]]
    assert len(assumed.assumptions) == 1 and "ASSUMPTION" in assumed.assumptions[0]
    assert assumed.assumptions[0].startswith("Long context")  # named by its label (issue 29)
    # Assumed warm requests still make a tenth of the cold prefill per query at 10 questions.
    cold_only = by_kind(recommend(db, workload(), [ids["A"]]))["long_context"]
    assert by_kind(assumed)["long_context"]["input_tokens_per_1k"] < cold_only["input_tokens_per_1k"] / 3
    assert measured.assumptions == [] and "ASSUMPTION" in by_kind(assumed)["long_context"]["notes"]


@pytest.mark.slow
def test_price_sheets_add_dollars(real_db: Any) -> None:
    db, ids = real_db
    runs = [ids["A"], ids["B"]]
    for sheet in ("example-api.toml", "cpu-2core.toml"):
        path = ROOT / "prices" / sheet
        usd = {q: by_kind(recommend(db, workload(questions_per_doc=q, price_sheet=path), runs))
               for q in (1, 50)}
        for q in (1, 50):
            assert all(r["usd_per_1k"] > 0 for r in usd[q].values()), sheet
        lc50, lc1 = usd[50]["long_context"]["usd_per_1k"], usd[1]["long_context"]["usd_per_1k"]
        if sheet == "example-api.toml":  # priced by tokens: the cold prefill amortises by >3x
            assert lc50 < lc1 / 3, sheet
        else:  # priced by measured busy seconds (load-dependent): amortising never costs more
            assert lc50 <= lc1, sheet


@pytest.mark.slow
def test_uncovered_workloads_are_said_not_extrapolated(real_db: Any, tmp_path: Path, capsys: Any) -> None:
    db, ids = real_db
    far = recommend(db, workload(documents={"tokens": [100_000]}))
    assert far.coverage == "none" and far.winner is None and not far.rows
    assert "within 25% of 100000 tokens (nearest measured: " in far.coverage_notes[0]
    other = recommend(db, workload(model="some-other-model"))
    assert other.coverage == "none" and "some-other-model" in other.coverage_notes[0]
    half = recommend(db, workload(documents={"tokens": [1200, 100_000]}), [ids["A"], ids["B"]])
    assert half.coverage == "partial" and half.rows and "100000" in half.coverage_notes[0]
    ranged = recommend(db, workload(documents={"min_tokens": 400, "max_tokens": 1200}), [ids["A"]])
    assert ranged.coverage == "covered" and set(ranged.lengths_used) == {"400-1200"}
    # The command: exit 3 and the reason on screen when the evidence does not cover the workload.
    wl_file = tmp_path / "far.toml"
    wl_file.write_text('questions_per_doc = 3\nrequests_per_s = 0.1\nquality_floor = 0.5\n'
                       '[documents]\ntokens = [100000]\n[latency]\np95_ms = 5000\n')
    assert recommend_command(db, wl_file) == 3
    err = capsys.readouterr().err
    assert "evidence NONE" in err and "100000" in err
    ok_file = tmp_path / "ok.toml"
    ok_file.write_text('questions_per_doc = 3\nrequests_per_s = 0.01\nquality_floor = 0.0\n'
                       'corpus = "needle"\n'
                       '[documents]\ntokens = [400, 1200]\n[latency]\np95_ms = 1e9\n')
    assert recommend_command(db, ok_file, [ids["A"]]) == 0
    out = capsys.readouterr().out
    assert "recommendation:" in out and ids["A"] in out
    assert recommend_command(db, tmp_path / "missing.toml") == 2


@pytest.mark.slow
def test_routing_section_on_a_real_run(real_db: Any) -> None:
    from compare.analysis.oracle import routing_section

    db, ids = real_db
    with duckdb.connect(str(db), read_only=True) as con:
        sec = routing_section(con, [ids["C"]])
    s = sec.strategies.set_index("kind")
    assert set(s.index) == {"oracle", "long_context", "rag", "self_route"}
    assert set(s["n"]) == {4}
    assert s.loc["oracle", "quality"] >= max(s.loc["long_context", "quality"], s.loc["rag", "quality"])
    assert s.loc["self_route", "prompt_tokens_vs_lc"] > 0
    label = s.loc["self_route", "strategy"]  # strategies are named by their labels (issue 29)
    shares = sec.routes[sec.routes["strategy"] == label].set_index("route")["share"]
    assert shares.sum() == pytest.approx(1.0)
    print("\n" + sec.strategies.to_string() + "\n" + sec.routes.to_string())


# issue 33 items 1-2: distinct questions, shared and borrowed bins (a hand-built store) -----------
def _held_out(db: Path) -> None:
    """Three documents of 15.0k, 15.6k and 19.5k tokens, four RAG questions each; right answers:
    A all four, B two, C one (the issue's shape: 12 questions)."""
    from datetime import datetime

    from compare.core.types import Completion, Example, Prediction
    from compare.store.db import Store
    from tests.fixtures.cost import RAG

    right = {"A": [1, 1, 1, 1], "B": [1, 1, 0, 0], "C": [1, 0, 0, 0]}
    with Store(db) as s:
        s.start_run("held", corpus="held-out", model="tiny", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        exs = [Example(f"{d}-q{i}", (d,), f"question {i} on {d}?", ("a",)) for d in right for i in range(4)]
        s.add_examples("held", exs, {"A": 15_000, "B": 15_600, "C": 19_500})
        for seq, ex in enumerate(exs):
            done = Completion("a", 330, 0, 10, 0.5, 1.5, ())
            score = float(right[ex.doc_ids[0]][int(ex.id[-1])])
            s.add_prediction("held", ex.id, *RAG, Prediction("a", done, 300), seq=seq, resumed=False,
                             started_at=datetime(2026, 1, 1), scores={"contains": score})
        s.finish_run("held", "done")


def test_a_question_in_two_bins_is_counted_once(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    _held_out(db)
    rec = recommend(db, workload(documents={"tokens": [15000, 20000]}, quality_metric="contains"))
    (row,) = rec.rows
    # 15000 (11,250-18,750) holds A and B, 20000 (15,000-25,000) all three: A's and B's questions
    # serve both bins, 1/16 + 1/24 = 5/48 each, C's 1/24 = 2/48. n = 12 distinct questions (was 20).
    assert row["n"] == 12
    assert row["quality"] == pytest.approx((4 * 5 + 2 * 5 + 1 * 2) / 48)  # 32/48
    # Wilson at the Kish size of those 12 weights: 48^2 / (8 x 25 + 4 x 4) = 10.667 (was 19.2)
    n_eff = 48**2 / (8 * 25 + 4 * 4)
    assert (row["quality_low"], row["quality_high"]) == pytest.approx(wilson(32 / 48, n_eff))
    assert (row["quality_low"], row["quality_high"]) == pytest.approx((0.3760, 0.8691), abs=1e-4)
    assert not any("same" in a or "borrowed" in a for a in rec.assumptions)


def test_bins_sharing_their_documents_and_borrowed_evidence_are_said(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    _held_out(db)
    # 15300 (11,475-19,125) and 12500 (9,375-15,625) both hold A and B only; both documents lie
    # nearer 15300 than 12500, so 12500 has no document of its own.
    rec = recommend(db, workload(documents={"tokens": [15300, 12500]}, quality_metric="contains"))
    assert "15300 and 12500 tokens are measured by the same 2 document(s)" in rec.assumptions
    assert any(a.startswith("12500 tokens: no document of its own; its evidence is borrowed from 15300")
               for a in rec.assumptions)
    (row,) = rec.rows
    assert "evidence for 12500 tokens borrowed from 15300" in row["notes"] and row["n"] == 8


# issue 33 item 4: the estimate beside a load sweep's measurement ---------------------------------
def _with_a_load_step(db: Path, rate: float, sent_ms: list[float]) -> None:
    """A load run of the same RAG configuration: one steady step at `rate`, 10 s long, whose
    requests went out at `sent_ms` (each 1.5 s in the system, as in `_held_out`)."""
    import json
    from datetime import datetime

    from compare.core.types import Completion, Example, Prediction
    from compare.store.db import Store
    from tests.fixtures.cost import RAG

    with Store(db) as s:
        s.start_run("load-1", corpus="held-out", model="tiny", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        exs = [Example(f"L{i}", ("A",), "q?", ("a",)) for i in range(len(sent_ms))]
        s.add_examples("load-1", exs, {"A": 15_000})
        done = Completion("a", 330, 0, 10, 0.5, 1.5, ())
        for seq, ex in enumerate(exs):
            s.add_prediction("load-1", ex.id, *RAG, Prediction("a", done, 300), seq=seq, resumed=False,
                             started_at=datetime(2026, 1, 2), scores={"contains": 1.0})
        for ex, sent in zip(exs, sent_ms, strict=True):
            s.con.execute("UPDATE predictions SET load_step = ?, scheduled_ms = ?, sent_ms = ?, queue_ms = 0 "
                          "WHERE run_id = 'load-1' AND example_id = ?", [f"rate={rate:g}", sent, sent, ex.id])
        s.insert("load_steps", [{
            "run_id": "load-1", "pipeline": RAG[0], "params_hash": RAG[1], "step": f"rate={rate:g}",
            "rate": rate, "concurrency": None, "requests": len(sent_ms), "status": "done", "note": None,
            "sessions": 1, "sent": len(sent_ms), "duration_s": 10.0, "started_at": datetime(2026, 1, 2),
            "finished_at": datetime(2026, 1, 2), "server_deltas": "{}", "load": json.dumps({}),
            "idle_run_id": "held"}])
        s.finish_run("load-1", "done")


def test_the_estimate_is_shown_with_a_load_sweeps_measurement_and_a_gap_is_loud(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    _held_out(db)
    wl = workload(documents={"tokens": [15000, 20000]}, quality_metric="contains", requests_per_s=0.4)
    (row,) = recommend(db, wl, ["held"]).rows
    assert row["utilization"] == pytest.approx(0.4 * 1.5)  # rate x idle busy seconds (1.5 s each)
    assert row["utilization_measured"] != row["utilization_measured"]  # NaN: no sweep in the file
    # Four requests at 1 req/s, 1.5 s each in the system, out at 0, 1.0, 2.0, 2.5 s: they overlap
    # (a batch), busy [0, 4.0] s of the step's 10 s = 0.40 at 1 req/s, scaled to 0.4 req/s: 0.16.
    # The estimate 0.60 is 275 % above it: said loudly.
    _with_a_load_step(db, 1.0, [0.0, 1000.0, 2000.0, 2500.0])
    rec = recommend(db, wl, ["held"])
    (row,) = rec.rows
    assert row["utilization_measured"] == pytest.approx(0.16)
    assert "UTILISATION DISAGREES: estimate 0.60" in row["notes"]
    assert "measured 0.40 at 1 req/s (load run load-1, step rate=1), 0.16 scaled to 0.4 req/s" in row["notes"]
    assert any(a.startswith("RAG") and "UTILISATION DISAGREES" in a for a in rec.assumptions)
    # At 0.4 req/s itself with no overlap (out at 0, 2, 4, 6 s: 6 s busy of 10 = 0.60 = the estimate):
    # agreement is shown quietly.
    db2 = tmp_path / "held2.duckdb"
    _held_out(db2)
    _with_a_load_step(db2, 0.4, [0.0, 2000.0, 4000.0, 6000.0])
    (row,) = recommend(db2, wl, ["held"]).rows
    assert row["utilization_measured"] == pytest.approx(0.6)
    assert "utilisation measured 0.60 at 0.4 req/s" in row["notes"] and "DISAGREES" not in row["notes"]

"""Routers on the real server (Self-Route fallback, length rule) and the oracle SQL.

The retrieval miss is built, not hoped for: a paragraph that repeats the question's words
without the value sits at the top of the document, so MiniLM ranks it above the needle at
top_k=1 (checked on the prediction's retrieved spans before anything else is asserted).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from compare.analysis.oracle import routing_section, strategy_table
from compare.core.types import Completion, Corpus, Document, Example, Prediction, Span
from compare.run.runner import params_hash, run
from compare.store.db import Store
from pipelines.long_context import LongContextPipeline
from pipelines.routers import (
    UNANSWERABLE_INSTRUCTION,
    LengthRulePipeline,
    LengthRuleSpec,
    SelfRoutePipeline,
    SelfRouteSpec,
    build_router,
    combine,
    is_unanswerable,
    self_route_messages,
)

BOOK = Path(os.environ.get("RAGVSLC_DATA", "/work/shared/data")) / "books" / "les_miserables.txt"
NEEDLE = "The special magic number for Lisbon is 4827163."
QUESTION = "What is the special magic number for Lisbon?"
# Every content word of the question, and no value: the retriever's favourite, the answer's absence.
DECOY = (
    "Everybody in Lisbon talked about the special magic number for Lisbon. "
    "What the special magic number for Lisbon is was the question of every evening. "
)


# pure functions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    ["unanswerable", "Unanswerable.", '"UNANSWERABLE"', "The question is unanswerable.",
     "This cannot be answered from the context.", "It can't be answered.",
     "The answer is not in the context.",
     "The context does not mention it.", "Not mentioned in the text.", "No information.", "Unknown", "",
     "I don't know."],
)
def test_refusals_are_detected(reply: str) -> None:
    assert is_unanswerable(reply)


@pytest.mark.parametrize("reply", ["4827163", "No", "The bishop", "Lisbon is 4827163.", "It is known as 42."])
def test_answers_are_not_refusals(reply: str) -> None:
    assert not is_unanswerable(reply)


def test_self_route_prompt_is_the_shared_template_plus_one_instruction() -> None:
    from pipelines.prompts import build_messages

    plain, routed = build_messages("ctx", "Q?"), self_route_messages("ctx", "Q?")
    assert routed[0] == plain[0]
    expected = plain[1]["content"].replace("Question: ", f"Question: {UNANSWERABLE_INSTRUCTION}\n")
    assert routed[1]["content"] == expected
    assert '"unanswerable"' in UNANSWERABLE_INSTRUCTION


def test_combined_completion_sums_tokens_and_chains_time() -> None:
    a = Completion("unanswerable", 300, 20, 4, ttft_s=0.5, e2e_s=0.8, itl_s=(0.1, 0.1, 0.1))
    b = Completion("4827163", 1100, None, 6, ttft_s=7.0, e2e_s=7.5, itl_s=(0.1,) * 5)
    c = combine(a, b)
    assert (c.text, c.prompt_tokens, c.cached_tokens, c.output_tokens) == ("4827163", 1400, 20, 10)
    assert c.ttft_s == pytest.approx(7.8) and c.e2e_s == pytest.approx(8.3)
    assert c.e2e_s - c.ttft_s == pytest.approx(sum(c.itl_s))


def test_router_specs_are_strict_and_record_every_knob() -> None:
    with pytest.raises(ValueError, match="extra"):
        SelfRouteSpec.model_validate({"kind": "self_route", "top_k": 2})
    with pytest.raises(ValueError, match=r"rag\n.*topk: Extra inputs"):  # inner tables are strict too
        SelfRouteSpec.model_validate({"kind": "self_route", "rag": {"topk": 2}})
    with pytest.raises(ValueError, match="chunk_overlap"):
        LengthRuleSpec(rag={"chunk_size": 50, "chunk_overlap": 50})
    with pytest.raises(ValueError, match="truncation"):
        LengthRuleSpec(long_context={"truncation": "sideways"})
    # Inner defaults are written out, so the run id sees every knob of both paths.
    assert SelfRouteSpec().model_dump()["rag"]["top_k"] == 4
    spec = SelfRouteSpec(rag={"top_k": 1, "chunk_size": 60, "chunk_overlap": 0}, score_threshold=0.2)
    params = build_router(spec).params()
    assert params["kind"] == "self_route" and params["score_threshold"] == 0.2
    assert params["rag"]["top_k"] == 1 and params["long_context"]["truncation"] == "error"  # type: ignore[index]
    rule = build_router(LengthRuleSpec(max_doc_tokens=700, long_context={"truncation": "head"}))
    assert rule.params()["max_doc_tokens"] == 700 and rule.name == "length_rule"
    assert rule.params()["long_context"]["truncation"] == "head"  # type: ignore[index]
    assert params_hash(params) != params_hash(build_router(SelfRouteSpec(rag={"top_k": 1})).params())


# oracle SQL on a hand-built store ---------------------------------------------------------------
# (prompt_tokens, total_ms, contains) per example; None = failed request; SR also has a route.
LC_ROWS = {"e1": (1000, 5000, 1), "e2": (1000, 4000, 1), "e3": (1000, 300, 1), "e4": None,
           "e5": (1000, 3000, 0), "e6": (1000, 2000, 1)}
RAG_ROWS = {"e1": (200, 510, 1), "e2": (200, 610, 0), "e3": (200, 400, 1), "e4": (300, 800, 1),
            "e5": (250, 400, 0), "e6": (200, 300, None)}  # e6: metric not applicable
SR_ROWS = {"e1": (220, 520, 1, "rag"), "e2": (1220, 4600, 1, "long_context"), "e3": (220, 410, 1, "rag"),
           "e4": (320, 810, 1, "rag"), "e5": (270, 420, 0, "rag")}
NOW = datetime(2026, 1, 1)


def _pred(tokens: int, total_ms: int, route: str | None = None) -> Prediction:
    # 10 ms of retrieval for everyone keeps total_ms = retrieval + e2e exact.
    e2e = (total_ms - 10) / 1e3
    comp = Completion("x", tokens, 0, 2, ttft_s=e2e / 2, e2e_s=e2e, itl_s=(e2e / 2,))
    return Prediction("x", comp, context_tokens=tokens - 20, retrieval_s=0.01, route=route)


@pytest.fixture
def hand_db(tmp_path: Path) -> Path:
    db = tmp_path / "oracle.duckdb"
    examples = [Example(e, (e,), "q?", ("x",)) for e in LC_ROWS]
    configs: dict[str, dict[str, Any]] = {
        "long_context": {"kind": "long_context"}, "rag": {"kind": "rag", "top_k": 1},
        "self_route": {"kind": "self_route"}}
    with Store(db) as s:
        s.start_run("r1", corpus="hand", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        s.add_examples("r1", examples)
        seq = 0
        for pipe, rows in (("long_context", LC_ROWS), ("rag", RAG_ROWS), ("self_route", SR_ROWS)):
            for ex_id, row in rows.items():
                if row is None:
                    pred = Prediction("", None, 0, error="boom")
                    scores: dict[str, float | None] = {"contains": None}
                else:
                    pred = _pred(row[0], row[1], row[3] if len(row) > 3 else None)  # type: ignore[misc]
                    scores = {"contains": None if row[2] is None else float(row[2])}
                s.add_prediction("r1", ex_id, pipe, params_hash(configs[pipe]), configs[pipe], pred,
                                 seq=seq, resumed=False, started_at=NOW, scores=scores)
                seq += 1
    return db


def test_oracle_picks_the_cheapest_correct_answer(hand_db: Path) -> None:
    with duckdb.connect(str(hand_db), read_only=True) as con:
        t = strategy_table(con, ["r1"]).set_index("kind")
        by_ms = strategy_table(con, ["r1"], cost_by="total_ms").set_index("kind")
    # Common questions: e1..e5 (e6 lacks a self-route row and a RAG score).
    assert set(t["n"]) == {5}
    o = t.loc["oracle"]
    # e1 RAG, e2 LC (only it is right), e3 RAG (cheaper in tokens), e4 RAG (LC failed), e5 none right: RAG.
    assert (o["quality"], o["prompt_tokens_mean"], o["share_long_context"]) == (0.8, 390.0, 0.2)
    assert o["total_ms_mean"] == pytest.approx(1222.0)
    # By latency, e3's warm long-context answer (300 ms) beats RAG's 400 ms.
    o2 = by_ms.loc["oracle"]
    assert (o2["quality"], o2["prompt_tokens_mean"], o2["share_long_context"]) == (0.8, 550.0, 0.4)
    assert o2["total_ms_mean"] == pytest.approx(1202.0)
    lc, rag, sr = t.loc["long_context"], t.loc["rag"], t.loc["self_route"]
    assert (lc["quality"], lc["errors"], lc["prompt_tokens_mean"]) == (0.6, 1, 1000.0)
    assert lc["total_ms_mean"] == 3075.0
    assert (rag["quality"], rag["prompt_tokens_mean"], rag["total_ms_mean"]) == (0.6, 230.0, 544.0)
    assert (sr["quality"], sr["prompt_tokens_mean"], sr["share_long_context"]) == (0.8, 450.0, 0.2)
    assert sr["total_ms_mean"] == pytest.approx(1352.0)
    assert t.loc["oracle", "strategy"] == "oracle" and rag["strategy"].startswith("RAG k=1")


def test_routing_section_compares_routers_to_both_baselines_and_the_oracle(hand_db: Path) -> None:
    with duckdb.connect(str(hand_db), read_only=True) as con:
        sec = routing_section(con, ["r1"])
    s = sec.strategies.set_index("kind")
    assert s.loc["self_route", "prompt_tokens_vs_lc"] == pytest.approx(0.45)
    assert s.loc["rag", "prompt_tokens_vs_lc"] == pytest.approx(0.23)
    assert s.loc["self_route", "quality_vs_oracle"] == pytest.approx(0.0)
    assert s.loc["long_context", "quality_vs_oracle"] == pytest.approx(-0.2)
    routes = {(r.strategy, r.route): (r.n, r.share) for r in sec.routes.itertuples()}
    assert routes == {("oracle", "long_context"): (1, 0.2), ("oracle", "rag"): (4, 0.8),
                      ("self_route", "long_context"): (1, 0.2), ("self_route", "rag"): (4, 0.8)}
    assert sec.notes == []


def test_routing_section_says_why_a_run_is_left_out(tmp_path: Path) -> None:
    db = tmp_path / "one.duckdb"
    with Store(db) as s:
        s.start_run("solo", corpus="c", model="m", base_url=None, concurrency=1, spec={},
                    corpus_params={}, server={})
        s.add_examples("solo", [Example("e", ("e",), "q", ("x",))])
        s.add_prediction("solo", "e", "rag", "h", {"kind": "rag"}, _pred(100, 200), seq=0, resumed=False,
                         started_at=NOW, scores={"contains": 1.0})
    with duckdb.connect(str(db), read_only=True) as con:
        sec = routing_section(con)
    assert sec.strategies.empty and "needs both" in sec.notes[0]


# routers on the real server ---------------------------------------------------------------------
def _prose(n_chars: int) -> str:
    text = BOOK.read_text(encoding="utf-8-sig")[200_000 : 200_000 + n_chars]
    return text[: text.rfind(". ") + 1]


def _needle_doc(doc_id: str, decoy: bool) -> tuple[Document, Example]:
    prose = _prose(4000)
    cut = prose.index(". ", len(prose) // 3) + 2
    text = (DECOY if decoy else "") + prose[:cut] + NEEDLE + " " + prose[cut:]
    start = text.index(NEEDLE)
    ev = Span(doc_id, start, start + len(NEEDLE))
    return Document(doc_id, text), Example(doc_id, (doc_id,), QUESTION, ("4827163",), (ev,))


@pytest.mark.slow
@pytest.mark.skipif(not BOOK.is_file(), reason=f"book not found: {BOOK}")
async def test_self_route_falls_back_when_retrieval_misses(server_url: str, tmp_path: Path) -> None:
    from compare.serving.client import HttpBackend
    from compare.serving.weights import DEFAULT_MODEL

    missed_doc, missed = _needle_doc("decoy", decoy=True)
    found_doc, found = _needle_doc("plain", decoy=False)
    docs = {"decoy": missed_doc, "plain": found_doc}
    one_chunk = {"chunk_size": 100, "chunk_overlap": 0, "top_k": 1}
    router = build_router(SelfRouteSpec(rag=one_chunk))
    assert isinstance(router, SelfRoutePipeline)
    corpus = Corpus("needle-decoy", docs, [missed, found])
    db = tmp_path / "route.duckdb"
    async with HttpBackend(server_url, DEFAULT_MODEL, timeout_s=300) as backend:
        with Store(db) as store:
            await run(run_id="route", corpus=corpus, pipelines=[router], backend=backend, store=store,
                      run_meta={"model": DEFAULT_MODEL, "base_url": server_url, "spec": {},
                                "corpus_params": {}, "server": {}},
                      metric_names=["contains", "evidence_recall"])
        # The same miss through the threshold: never asks RAG, goes straight to the document.
        strict = build_router(SelfRouteSpec(rag=one_chunk, score_threshold=1.0))
        await strict.prepare(docs, backend)
        direct = await strict.answer(found, backend)
        doc_tokens = await backend.tokenize(missed_doc.text)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT p.example_id, p.route, p.answer, p.prompt_tokens, p.context_tokens, p.output_tokens, "
            "p.ttft_ms, p.e2e_ms, p.retrieved, s.value FROM predictions p JOIN scores s "
            "USING (run_id, example_id, pipeline, params_hash) WHERE s.metric = 'contains'").fetchall()}
        recall = dict(con.execute("SELECT example_id, value FROM scores WHERE metric = 'evidence_recall'")
                      .fetchall())
        n_index = con.execute("SELECT count(*) FROM index_stats WHERE pipeline = 'self_route'").fetchone()
        steps = dict(con.execute("SELECT example_id, steps FROM predictions").fetchall())
        tpot = con.execute("SELECT tpot_ms FROM predictions WHERE example_id = 'decoy'").fetchone()
    # Precondition: the retriever missed the needle in the decoy document and found it in the plain one.
    assert recall == {"decoy": 0.0, "plain": 1.0}
    route, answer, prompt, ctx, out, ttft, e2e, _, contains = rows["decoy"]
    assert route == "long_context" and "4827163" in answer and contains == 1.0
    # Both requests are paid: the prompt holds the RAG prompt plus the whole document.
    assert prompt > ctx > doc_tokens and out >= 2 and e2e > ttft > 0
    # ... and each request is kept on its own: the row's sums are exactly the two steps'.
    first, second = json.loads(steps["decoy"])
    assert (first["route"], second["route"]) == ("rag", "long_context")
    assert first["prompt_tokens"] + second["prompt_tokens"] == prompt
    assert first["output_tokens"] + second["output_tokens"] == out
    assert first["e2e_ms"] + second["e2e_ms"] == pytest.approx(e2e)
    assert second["context_tokens"] > doc_tokens - 5 and first["context_tokens"] < 300
    # The row's TPOT is the answering request's decode speed (None if it gave one token).
    assert (tpot[0] is None) == (second["tpot_ms"] is None)
    if tpot[0] is not None:
        assert tpot[0] == pytest.approx(second["tpot_ms"])
    assert steps["plain"] is None  # one request, no steps
    route, answer, prompt, ctx, *_ , contains = rows["plain"]
    assert route == "rag" and contains == 1.0 and prompt < 300
    assert n_index == (2,)
    assert direct.route == "long_context" and "4827163" in direct.answer and direct.retrieval_s > 0
    assert direct.completion is not None and direct.completion.prompt_tokens > 900


@pytest.mark.slow
@pytest.mark.skipif(not BOOK.is_file(), reason=f"book not found: {BOOK}")
async def test_length_rule_routes_short_documents_to_long_context(backend: object) -> None:
    from compare.serving.client import HttpBackend
    from pipelines.rag import RagPipeline

    assert isinstance(backend, HttpBackend)
    short = Document("short", _prose(1500) + " " + NEEDLE)
    long = Document("long", _prose(4000) + " " + NEEDLE)
    n_short, n_long = await backend.tokenize(short.text), await backend.tokenize(long.text)
    assert n_short < 500 < n_long
    rule = LengthRulePipeline(RagPipeline(chunk_size=80, chunk_overlap=0, top_k=2), LongContextPipeline(),
                              max_doc_tokens=500)
    await rule.prepare({"short": short, "long": long}, backend)
    assert set(rule.index_stats) == {"long"}  # short documents are never indexed
    preds = {d: await rule.answer(Example(d, (d,), QUESTION, ("4827163",)), backend)
             for d in ("short", "long")}
    assert preds["short"].route == "long_context" and preds["short"].context_tokens == n_short
    assert preds["short"].retrieval_s == 0.0
    assert preds["long"].route == "rag" and preds["long"].retrieved and preds["long"].context_tokens < n_long
    assert rule.params()["max_doc_tokens"] == 500 and "rag" in rule.params()

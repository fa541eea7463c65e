"""The retrieval probe of compare/run/context_need.py (issue 30 item 1): the smallest top-k at which
RAG's answer is right, stored per corpus, reused, its requests kept apart with their cost.

Real RAG (chunking, the embedded MiniLM, FAISS) over a small real-prose document; the fake is
below it only: a model that answers right exactly when its prompt holds what the answer needs
(the needle sentence; all three umbrella sentences), so the k at which it turns right is the k at
which retrieval brought that in.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pytest

from compare.analysis.strata import run_strata
from compare.core.types import Completion, Corpus, Document, Example, Message, Span
from compare.run.context_need import PROBE_KIND, probe, smallest_correct
from compare.run.spec import RagSpec
from compare.store.db import Store

FILLER = [
    "The harbour was quiet in the early morning and the boats rocked slowly on the grey water.",
    "A baker on the corner opened his shutters and the smell of bread drifted down the lane.",
    "Children ran along the sea wall, shouting at the gulls that circled above the fish market.",
    "The old clock on the church tower had stopped years ago and nobody had thought to mend it.",
    "Farmers came in from the hills with carts of cabbages, onions and sacks of dark potatoes.",
    "By noon the square was crowded with traders arguing over the price of wool and salted cod.",
    "In the afternoon a light rain fell and the cobblestones shone like polished pewter.",
    "The schoolmaster walked home slowly, reading a letter that had come from the capital.",
]
NEEDLE = "The secret vault code of the lighthouse keeper is 4417."
UMBRELLA = "A woman hurried past carrying a red umbrella."


class PromptBackend:
    """Answers right only when the prompt holds the evidence; counts words as tokens."""

    model = "fake"

    def __init__(self) -> None:
        self.asked = 0

    async def complete(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0,
                       seed: int = 0) -> Completion:
        self.asked += 1
        prompt = " ".join(str(m["content"]) for m in messages)
        if "What is the secret vault code" in prompt:
            reply = "4417" if NEEDLE in prompt else "I do not know"
        else:
            reply = "3" if prompt.count(UMBRELLA) >= 3 else "1"
        return Completion(reply, len(prompt.split()), 0, 2, ttft_s=0.01, e2e_s=0.02, itl_s=())

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Message] | None = None) -> int:
        return len((text or " ".join(str(m["content"]) for m in messages or ())).split())

    async def max_model_len(self) -> int:
        return 4096


def _corpus() -> Corpus:
    parts = [*FILLER[:2], UMBRELLA, *FILLER[2:4], NEEDLE, *FILLER[4:6], UMBRELLA, *FILLER[6:], UMBRELLA,
             *FILLER[:3]]
    text = " ".join(parts)
    start = text.index(NEEDLE)
    doc = Document("d", text)
    tags = {"doc_tokens": float(len(text.split()))}
    return Corpus("hand", {"d": doc}, [
        Example("needle", ("d",), "What is the secret vault code of the lighthouse keeper?", ("4417",), (),
                tags),
        Example("count", ("d",), "How many times is a red umbrella mentioned?", ("3",), (), tags),
        Example("spans", ("d",), "What is the secret vault code of the lighthouse keeper?", ("4417",),
                (Span("d", start, start + len(NEEDLE)),), tags),
    ])


RAG = RagSpec(chunk_size=24, chunk_overlap=0, max_tokens=8)


def test_smallest_correct() -> None:
    assert smallest_correct({1: False, 2: True, 4: True}, [4, 2, 1]) == 2
    assert smallest_correct({1: False, 2: False}, [1, 2]) is None
    assert smallest_correct({}, []) is None


def test_probe_measures_stores_and_reuses(tmp_path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    corpus, backend, db = _corpus(), PromptBackend(), tmp_path / "n.duckdb"
    with Store(db) as store:
        res = asyncio.run(probe(corpus, RAG, [1, 2], backend, store, model="fake"))
    rows = {r["example_id"]: r for r in res.rows}
    # the needle's chunk is retrieved first: right at k = 1 (one request); the count needs three
    # chunks, so it is right at no k tried: whole (two requests); the spans question is not asked
    assert (rows["needle"]["context_need"], rows["needle"]["stratum"], rows["needle"]["source"]) == (
        1.0, "local", "probe")
    assert (rows["count"]["context_need"], rows["count"]["stratum"], rows["count"]["requests"]) == (
        None, "whole", 2)
    assert (rows["spans"]["source"], rows["spans"]["stratum"], rows["spans"]["requests"]) == (
        "spans", "local", 0)
    assert res.requests == backend.asked == 3 and res.prompt_tokens > 0
    with duckdb.connect(str(db), read_only=True) as con:
        reqs = con.execute("SELECT example_id, k, kind, correct, prompt_tokens FROM context_probe_requests "
                           "ORDER BY example_id, k").fetchall()
        assert [(e, k, kind, c) for e, k, kind, c, _ in reqs] == [
            ("count", 1, PROBE_KIND, 0.0), ("count", 2, PROBE_KIND, 0.0), ("needle", 1, PROBE_KIND, 1.0)]
        assert sum(r[4] for r in reqs) == res.prompt_tokens  # each question's row sums its requests
        assert con.execute("SELECT count(*) FROM predictions").fetchone() == (0,)  # never compared
        stored = con.execute("SELECT example_id, ks, chunk_tokens, model FROM context_need "
                             "ORDER BY 1").fetchall()
        assert stored[0] == ("count", json.dumps([1, 2]), 24, "fake")
    with Store(db) as store:  # the same corpus again: nothing asked, the same answer
        again = asyncio.run(probe(corpus, RAG, [1, 2], backend, store, model="fake"))
        # a run of the same corpus (its content hash) reads the probe's measurement
        store.start_run("r", corpus="hand", model="fake", base_url=None, concurrency=1, spec={},
                        corpus_params={"content_sha256": corpus.content_sha256()}, server={})
        store.add_examples("r", corpus.examples)
    assert (again.requests, again.reused, backend.asked) == (0, 2, 3)
    assert [r["context_need"] for r in again.rows] == [1.0, None, 1.0]
    with duckdb.connect(str(db), read_only=True) as con:
        st = run_strata(con, "r").set_index("example_id")
    assert st.loc["needle", "source"] == "probe" and st.loc["needle", "stratum"] == "local"
    assert (st.loc["count", "source"], st.loc["count", "stratum"]) == ("probe", "whole")
    assert st.loc["spans", "source"] == "spans"


def test_bad_ks_is_one_line_error(tmp_path: Path) -> None:
    with Store(tmp_path / "n.duckdb") as store, pytest.raises(ValueError, match="ks must be whole numbers"):
        asyncio.run(probe(_corpus(), RAG, [0, 2], PromptBackend(), store, model="fake"))

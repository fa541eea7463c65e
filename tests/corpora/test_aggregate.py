"""The aggregation corpus: exact golds from the planted copies, spans on the planted text,
distractors that never count, the same corpus for the same seed, and the count metric.

Lengths here are counted in words (a counter below the builder, so the test needs no model);
the real tokenizer is exercised by the slow end-to-end test in tests/pipelines/test_kind_router.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import ValidationError

from compare.core.metrics import METRICS, count_match, primary_metric
from compare.core.types import Example, Prediction
from compare.run.spec import RunSpec
from corpora.aggregate import AggregateCorpusSpec, build_aggregate_corpus, mentions


async def words(text: str) -> int:
    return len(text.split())


async def test_golds_spans_and_distractors_are_exact() -> None:
    corpus = await build_aggregate_corpus(words, length=1500, counts=(2, 4, 8), distractors=4, seed=3)
    assert sorted(corpus.documents) == ["aggregate-2", "aggregate-4", "aggregate-8"]
    assert len(corpus.examples) == 12
    for ex in corpus.examples:
        n = int(ex.tags["n_facts"])
        doc = corpus.documents[ex.doc_ids[0]].text
        thing = str(ex.tags["target"])
        kind = ex.tags["task"]
        if kind == "aggregate-local":  # the control: one distractor, its colour
            (span,) = json.loads(str(ex.tags["evidence_spans"]))
            sentence = doc[span[0]:span[1]]
            assert ex.tags["stratum"] == "local" and f"a {ex.answers[0]} {thing.split()[1]}" in sentence
            place = ex.question.split("near the ")[1].split("?")[0]
            assert ex.answers[0] != thing.split()[0] and place in sentence
            continue
        assert ex.tags["stratum"] == "aggregation"
        assert 1400 <= await words(doc) <= 1500 == ex.tags["target_tokens"]
        spans = json.loads(str(ex.tags["evidence_spans"]))
        assert len(spans) == len(ex.evidence) == n
        assert [[e.start, e.end] for e in ex.evidence] == spans
        # every span is one planted sentence naming the target; the text names it nowhere else
        for start, end in spans:
            assert f"a {thing}" in doc[start:end] and doc[start:end].endswith(".")
        assert len(mentions(doc, thing)) == n
        colour, obj = thing.split()
        near = re.findall(rf"\b(\w+) {obj}\b|\b{colour} (\w+)\b", doc)
        assert sum(1 for a, b in near if (a or colour, b or obj) != (colour, obj)) >= 2  # decoys exist
        if kind == "aggregate-count":
            assert ex.answers == (str(n),) and primary_metric(ex) == "count_match"
            continue
        choices = json.loads(str(ex.tags["choices"]))
        places = {choices[letter] for letter in ex.answers[0]}
        gold_places = {p for p in choices.values() if any(p in doc[s:e] for s, e in spans)}
        if kind == "aggregate-list":
            assert len(choices) == n + 4 and places == gold_places and len(ex.answers[0]) == n
            assert primary_metric(ex) == "choice_set_match"
        else:  # first: the place of the earliest planted copy
            (place,) = places
            first = min(spans)
            assert place in doc[first[0]:first[1]] and primary_metric(ex) == "choice_accuracy"


async def test_same_seed_same_corpus_other_seed_other_plants() -> None:
    a = await build_aggregate_corpus(words, length=800, counts=(2, 4), seed=11)
    b = await build_aggregate_corpus(words, length=800, counts=(2, 4), seed=11)
    c = await build_aggregate_corpus(words, length=800, counts=(2, 4), seed=12)
    assert a.content_sha256() == b.content_sha256() != c.content_sha256()
    assert a.params["seed"] == 11 and a.params["length"] == 800 and a.params["counts"] == [2, 4]


async def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="counts must be between"):
        await build_aggregate_corpus(words, counts=(0, 2))
    with pytest.raises(ValidationError):
        AggregateCorpusSpec(counts=[13])
    spec = RunSpec.model_validate({"corpus": {"kind": "aggregate", "counts": [2, 8], "seed": 5},
                                   "pipelines": [{"kind": "long_context"}]})
    assert isinstance(spec.corpus, AggregateCorpusSpec) and spec.corpus.counts == [2, 8]


def _count(answer: str) -> float | None:
    ex = Example("c", ("d",), "How many?", ("4",), tags={"answer_format": "count"})
    return METRICS["count_match"](ex, Prediction(answer, None, 0))


def test_count_metric_reads_the_first_number() -> None:
    ok = Prediction("x", None, 0)
    assert ok.ok
    assert _count("4") == _count("It is mentioned four times.") == _count("4 times (once per chapter)") == 1.0
    assert _count("3 of the 4 mentions") == 0.0  # contains would credit this
    assert _count("I cannot tell.") == 0.0
    assert count_match(Example("c", ("d",), "q", ("4",)), ok) is None  # not a count question


# the real server: the corpus through long context, RAG and the kind router ----------------------
@pytest.mark.slow
async def test_a_real_run_through_both_paths_and_the_kind_router(backend: Any, tmp_path: Path) -> None:
    """Three short requests (one count question on a ~400-token slice): every row is stored and
    scored by the count metric, the router took long context, and RAG retrieved real spans."""
    from compare.run.runner import run
    from compare.store.db import Store
    from pipelines.kind_router import KindRouterPipeline
    from pipelines.long_context import LongContextPipeline
    from pipelines.rag import RagPipeline

    corpus = await build_aggregate_corpus(backend.tokenize, length=400, counts=(2,), questions=("count",),
                                          distractors=2, seed=1)
    (ex,) = corpus.examples
    assert float(ex.tags["doc_tokens"]) <= 400 and ex.answers == ("2",)

    def rag() -> RagPipeline:
        return RagPipeline(chunk_size=64, chunk_overlap=0, top_k=1)

    pipes: list[Any] = [LongContextPipeline(), rag(), KindRouterPipeline(rag(), LongContextPipeline())]
    db = tmp_path / "agg.duckdb"
    with Store(db) as store:
        await run(run_id="agg", corpus=corpus, pipelines=pipes, backend=backend, store=store,
                  run_meta={"model": backend.model, "base_url": None, "spec": {}, "corpus_params": {},
                            "server": {}},
                  metric_names=["count_match", "evidence_recall"])
    with duckdb.connect(str(db), read_only=True) as con:
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT p.pipeline, p.error, p.route, p.prompt_tokens, s.value FROM predictions p JOIN scores s "
            "USING (run_id, example_id, pipeline, params_hash) WHERE s.metric = 'count_match'").fetchall()}
        recall = con.execute("SELECT value FROM scores WHERE metric = 'evidence_recall' AND pipeline = 'rag'"
                             ).fetchone()
        (raw,) = con.execute("SELECT tags FROM examples").fetchall()[0]
        tags = json.loads(raw)
    assert set(rows) == {"long_context", "rag", "kind_router"}
    assert all(err is None and value in (0.0, 1.0) for err, _, _, value in rows.values())
    assert rows["kind_router"][1] == "long_context"  # "how many times": aggregation -> the whole text
    assert rows["rag"][2] < rows["long_context"][2]
    assert recall is not None and recall[0] in (0.0, 0.5, 1.0)  # two planted copies, one chunk
    assert tags["stratum"] == "aggregation" and len(json.loads(tags["evidence_spans"])) == 2

"""Retrieval-only evaluation: evidence recall@k and MRR from span overlap, real MiniLM + FAISS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from compare.core.metrics import METRICS, evidence_mrr, evidence_recall, resolve
from compare.core.types import Corpus, Document, Example, Prediction, Span
from compare.run.retrieval_eval import evaluate_retrieval_async, format_rows, label
from corpora.needle import build_needle_corpus
from pipelines.embedder import embedder_tokenizer, load_embedder
from pipelines.rag import RagPipeline
from tests.fixtures.book import BOOK, NEEDLE, QUESTION, with_needle, words

pytestmark = [
    pytest.mark.skipif(not BOOK.is_file(), reason=f"book not found: {BOOK}"),
    pytest.mark.usefixtures("no_network"),  # the module-wide socket guard of tests/conftest.py
]


def pred(*spans: Span) -> Prediction:
    return Prediction(answer="", completion=None, context_tokens=0, retrieved=spans)


def test_mrr_and_recall_come_from_span_overlap_in_rank_order() -> None:
    ex = Example("q", ("d",), "?", ("a",), evidence=(Span("d", 100, 140),))
    miss, hit, other_doc = Span("d", 0, 90), Span("d", 120, 300), Span("e", 100, 140)
    assert evidence_mrr(ex, pred(hit, miss)) == 1.0
    assert evidence_mrr(ex, pred(miss, other_doc, hit)) == pytest.approx(1 / 3)
    assert evidence_mrr(ex, pred(miss, other_doc)) == 0.0
    assert evidence_recall(ex, pred(miss, hit)) == 1.0
    assert evidence_mrr(ex, pred()) is None  # a long-context row retrieves nothing
    assert evidence_mrr(Example("n", ("d",), "?", ("a",)), pred(hit)) is None
    two = Example("q2", ("d",), "?", ("a",), evidence=(Span("d", 0, 10), Span("d", 500, 510)))
    assert evidence_recall(two, pred(Span("d", 5, 20))) == 0.5
    assert evidence_mrr(two, pred(Span("d", 20, 90), Span("d", 505, 600))) == 0.5  # any span counts
    assert "evidence_mrr" in METRICS and resolve(["evidence_mrr", "evidence_recall"])


@pytest.fixture(scope="module")
def needle_docs() -> Corpus:
    """Two documents with a needle each (its exact span is the evidence), one without evidence."""
    text = BOOK.read_text(encoding="utf-8-sig")[200_000:260_000]
    docs, examples = {}, []
    for i, (at, city, value) in enumerate([(0.2, "Lisbon", "4827163"), (0.7, "Oslo", "5550123")]):
        needle = NEEDLE.replace("Lisbon", city).replace("4827163", value)
        body, pos = with_needle(words(text[i * 20_000 :], 2500), at)
        body = body.replace(NEEDLE, needle)
        docs[f"d{i}"] = Document(f"d{i}", body)
        examples.append(Example(f"q{i}", (f"d{i}",), QUESTION.replace("Lisbon", city), (value,),
                                evidence=(Span(f"d{i}", pos, pos + len(needle)),)))
    examples.append(Example("free", ("d0",), "Who is the bishop?", ("Myriel",)))
    return Corpus("needles", docs, examples)


async def test_recall_and_mrr_across_k_and_budgets(needle_docs: Corpus, tmp_path: Path) -> None:
    configs = [RagPipeline(chunk_size=128, chunk_overlap=16, cache_dir=tmp_path),
               RagPipeline(chunk_size=128, chunk_overlap=16, splitter="token", index="hnsw",
                           budget_tokens=400, cache_dir=tmp_path)]
    rows = await evaluate_retrieval_async(needle_docs, configs, [8, 1, 2, 64], budgets=[150])
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_config.setdefault(r["config"], []).append(r)
    assert list(by_config) == [label(c) for c in configs]
    for config, config_rows in by_config.items():
        ks = [r for r in config_rows if r["k"] is not None]
        assert [r["k"] for r in ks] == [1, 2, 8, 64]
        recall = [r["recall"] for r in ks]
        assert recall == sorted(recall) and recall[-1] == 1.0
        # The magic-number needle is the top chunk: MRR 1 from k = 1 on.
        assert [r["mrr"] for r in ks] == [1.0] * 4, config
        assert all(r["n_examples"] == 2 and r["n_without_evidence"] == 1 for r in config_rows)
        assert all(r["build_s"] > 0 and r["n_chunks"] > 10 and r["query_ms"] > 0 for r in config_rows)
        assert ks[0]["mean_chunks"] == 1 and ks[-1]["mean_chunks"] < 64  # k beyond the chunk count
        budgets = [r for r in config_rows if r["k"] is None]
        for r in budgets:
            assert r["max_context_tokens"] <= r["budget_tokens"] and r["counter"] == "embedder"
    assert [r["budget_tokens"] for r in by_config[label(configs[0])] if r["k"] is None] == [150]
    assert [r["budget_tokens"] for r in by_config[label(configs[1])] if r["k"] is None] == [150, 400]
    assert by_config[label(configs[1])][0]["index_built"] == [
        {"kind": "hnsw", "m": 32, "ef_construction": 40, "ef_search": 64}
    ]
    table = format_rows(rows)
    assert all(name in table for name in by_config) and len(table.splitlines()) == len(rows) + 1

    again = await evaluate_retrieval_async(needle_docs, [RagPipeline(chunk_size=128, chunk_overlap=16,
                                                                     cache_dir=tmp_path)], [1])
    assert again[0]["cache_hit"] and again[0]["build_s"] == pytest.approx(rows[0]["build_s"])


async def test_same_label_variants_stay_apart_and_bad_ks_fail(needle_docs: Corpus, tmp_path: Path) -> None:
    twins = [RagPipeline(chunk_size=128, cache_dir=tmp_path),
             RagPipeline(chunk_size=128, embed_batch_size=8, cache_dir=tmp_path)]
    rows = await evaluate_retrieval_async(needle_docs, twins, [1])
    assert len({r["config"] for r in rows}) == 2 and len({r["params_hash"] for r in rows}) == 2
    with pytest.raises(ValueError):
        await evaluate_retrieval_async(needle_docs, twins, [0, 2])


@pytest.mark.slow  # needs the converted model's tokenizer (as tests/corpora/test_needle.py)
async def test_needle_corpus_recall_is_monotone_and_complete(hf_tokenizer: Any, tmp_path: Path) -> None:
    async def count(text: str) -> int:
        return len(hf_tokenizer(text, add_special_tokens=False).input_ids)

    counter: Callable[[str], Awaitable[int]] = count
    corpus = await build_needle_corpus(counter, lengths=(600, 1500), depths=(0.1, 0.5, 0.9))
    configs = [RagPipeline(chunk_size=100, chunk_overlap=10, cache_dir=tmp_path),
               RagPipeline(chunk_size=200, chunk_overlap=20, index="ivf", scope="corpus",
                           cache_dir=tmp_path)]
    rows = await evaluate_retrieval_async(corpus, configs, [1, 2, 4, 8, 128], budgets=[256],
                                          count=counter)
    tok = embedder_tokenizer(load_embedder())
    assert max(len(tok(d.text)) for d in corpus.documents.values()) // 100 < 128  # k=128 is "all"
    for config in {r["config"] for r in rows}:
        ks = [r for r in rows if r["config"] == config and r["k"] is not None]
        recall, mrr = [r["recall"] for r in ks], [r["mrr"] for r in ks]
        assert recall == sorted(recall) and mrr == sorted(mrr)
        assert ks[0]["recall"] == ks[0]["mrr"]  # one evidence span: both are "hit at rank 1"
        if "document" in config:
            assert recall[-1] == 1.0  # every chunk of the needle's own document retrieved
        assert ks[0]["n_examples"] == 6
        (budget,) = [r for r in rows if r["config"] == config and r["k"] is None]
        assert budget["counter"] == "server" and budget["max_context_tokens"] <= 256


def test_an_evaluation_is_stored_with_its_run_id_and_shown_only_with_that_run(tmp_path: Path) -> None:
    """Two evaluations (of two specs) in one file: each report shows its own, not every one."""
    import duckdb

    from compare.report import data as report_data
    from compare.run.retrieval_run import Evaluation, store_rows

    db = tmp_path / "r.duckdb"
    row = {"config": "fixed-200/0 flat document", "params_hash": "h", "k": 1, "recall": 0.5, "mrr": 0.5,
           "n_examples": 2}
    ids = [store_rows(db, Evaluation([{**row, "recall": r}], "needle", {"lengths": [n]}, f"run-{n}"))
           for n, r in ((300, 0.5), (600, 1.0))]
    assert len(set(ids)) == 2
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT eval_id, run_id FROM retrieval_eval ORDER BY run_id").fetchall() == [
            (ids[0], "run-300"), (ids[1], "run-600")]
        shown = report_data.retrieval_eval(con, ["run-600"])
    recall = shown[shown["metric"] == "recall"]
    assert list(recall["value"]) == [1.0] and set(recall["run_id"]) == {"run-600"}

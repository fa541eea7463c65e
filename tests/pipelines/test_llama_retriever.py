"""A llama-index retriever as a RAG pipeline: real llama-index VectorStoreIndex (in-memory and
FaissVectorStore), real MiniLM vectors, real book text, the real vLLM server and a real DuckDB.

The offline tests use a backend on a closed port, to pin that building and retrieving never
reach the server and that a failure is an error row; the slow ones answer through vLLM.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import duckdb
import llama_index.core
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from compare.core.metrics import evidence_recall
from compare.core.registry import build_pipeline
from compare.core.types import Document, Example, Span
from compare.run.execute import build_corpus
from compare.run.runner import run
from compare.run.spec import SpecError, validate_spec
from compare.serving.client import HttpBackend
from compare.store.db import Store
from pipelines.llama_retriever import (
    LlamaRetrieverPipeline,
    LlamaRetrieverSpec,
    minilm_retriever,
    node_span,
    node_text,
    to_llama_documents,
)
from pipelines.prompts import build_messages, join_passages
from tests.fixtures.book import BOOK, NEEDLE, QUESTION, with_needle

pytestmark = [
    pytest.mark.skipif(not BOOK.is_file(), reason=f"book not found: {BOOK}"),
    pytest.mark.usefixtures("no_network"),  # loopback only: the server, never a hub or a CDN
]

FACTORY = "pipelines.llama_retriever:minilm_retriever"
OPTIONS: dict[str, Any] = {"top_k": 2, "chunk_size": 120, "chunk_overlap": 10, "vector_store": "faiss"}


@pytest.fixture(scope="module")
def docs() -> dict[str, Document]:
    """Two passages of the book; the needle is in the first only."""
    text = BOOK.read_text(encoding="utf-8-sig")
    planted, _ = with_needle(text[200_000:212_000], 0.5)
    return {"book": Document("book", planted), "other": Document("other", text[300_000:312_000])}


def needle_example(doc: Document) -> Example:
    pos = doc.text.index(NEEDLE)
    return Example("q", (doc.id,), QUESTION, ("4827163",), evidence=(Span(doc.id, pos, pos + len(NEEDLE)),))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nowhere() -> HttpBackend:
    return HttpBackend(f"http://127.0.0.1:{closed_port()}", "unused", timeout_s=5)


@pytest.fixture(scope="module")
def every_node(docs: dict[str, Document]) -> Callable[[str], BaseRetriever]:
    """A retriever of every node of both documents (top_k above the node count) over a vector
    store ("faiss" or llama-index's in-memory "simple"), each built once for the module."""
    built: dict[str, BaseRetriever] = {}

    def over(store: str) -> BaseRetriever:
        if store not in built:
            built[store] = minilm_retriever(to_llama_documents(docs.values()),
                                            **{**OPTIONS, "top_k": 1000, "vector_store": store})
        return built[store]

    return over


@pytest.fixture(scope="module")
def faiss_retriever(every_node: Callable[[str], BaseRetriever]) -> BaseRetriever:
    return every_node("faiss")


@pytest.mark.parametrize("store", ["faiss", "simple"])
def test_spans_are_exact_slices_of_the_document(
    docs: dict[str, Document], every_node: Callable[[str], BaseRetriever], store: str
) -> None:
    hits = every_node(store).retrieve(QUESTION)
    assert len(hits) > 20
    spans = [(h, node_span(h)) for h in hits]
    placed = [(h, s) for h, s in spans if s is not None]
    assert len(placed) >= 0.8 * len(hits)  # llama-index places most nodes with doc.text.find
    for hit, span in placed:
        assert docs[span.doc_id].text[int(span.start) : int(span.end)] == node_text(hit)
    assert {s.doc_id for _, s in placed} == set(docs)  # each span names the document it came from
    # The ranking is by MiniLM cosine: the needle's node is first.
    assert NEEDLE in node_text(hits[0]) and hits[0].score is not None and hits[0].score > 0.5
    # The chunker counted MiniLM word pieces, never llama-index's tiktoken (which downloads).
    assert llama_index.core.global_tokenizer is None


async def test_document_scope_keeps_the_examples_own_nodes(
    docs: dict[str, Document], faiss_retriever: BaseRetriever
) -> None:
    example = Example("q", ("other",), QUESTION, ("x",))
    scoped = LlamaRetrieverPipeline(retriever=faiss_retriever)
    corpus = LlamaRetrieverPipeline(retriever=faiss_retriever, scope="corpus")
    own, own_s = await scoped.retrieve(example)
    every, _ = await corpus.retrieve(example)
    assert own and own_s > 0 and len(own) < len(every)
    assert {s.doc_id for s in scoped.spans(own)} == {"other"}  # the needle's document is out of scope
    assert {s.doc_id for s in corpus.spans(every)} == {"book", "other"}
    assert node_text(every[0]).count(NEEDLE) == 1 and all(NEEDLE not in node_text(h) for h in own)


def test_params_name_the_retriever_and_the_library(faiss_retriever: BaseRetriever) -> None:
    ready = LlamaRetrieverPipeline(retriever=faiss_retriever, max_tokens=8,
                                   retriever_params={"store": "faiss"}).params()
    assert ready["kind"] == "llama_retriever" and ready["factory"] is None and ready["max_tokens"] == 8
    assert ready["retriever"] == ("llama_index.core.indices.vector_store.retrievers.retriever."
                                  "VectorIndexRetriever")
    assert ready["retriever_params"] == {"similarity_top_k": 1000, "store": "faiss"}
    assert ready["llama_index"] == llama_index.core.__version__ == "0.12.42"
    made = LlamaRetrieverPipeline(factory=FACTORY, options=OPTIONS).params()
    assert (made["factory"], made["options"], made["scope"]) == (FACTORY, OPTIONS, "document")
    json.dumps(made)  # hashed into the resume key and stored as JSON
    with pytest.raises(ValueError, match="either a factory"):
        LlamaRetrieverPipeline()
    with pytest.raises(ValueError, match="either a factory"):
        LlamaRetrieverPipeline(factory=FACTORY, retriever=faiss_retriever)


class FailingRetriever(BaseRetriever):
    """A retriever whose search backend is down (a remote vector store gone away)."""

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        raise ConnectionError("vector store unreachable")


async def test_failures_are_error_rows(docs: dict[str, Document], faiss_retriever: BaseRetriever) -> None:
    example = needle_example(docs["book"])
    async with nowhere() as backend:
        broken = await LlamaRetrieverPipeline(retriever=FailingRetriever()).answer(example, backend)
        unprepared = await LlamaRetrieverPipeline(factory=FACTORY).answer(example, backend)
        server_down = await LlamaRetrieverPipeline(retriever=faiss_retriever).answer(example, backend)
    assert broken.error == "retriever failed: ConnectionError: vector store unreachable"
    assert unprepared.error is not None and "prepare first" in unprepared.error
    # Retrieval worked, the request did not: the row keeps what was retrieved.
    assert server_down.error and server_down.completion is None and server_down.retrieved
    assert server_down.retrieved[0].doc_id == "book" and server_down.retrieval_s > 0


async def test_a_factory_must_return_a_retriever(docs: dict[str, Document]) -> None:
    pipe = LlamaRetrieverPipeline(factory="builtins:len")  # callable on the documents, no retriever
    async with nowhere() as backend:
        with pytest.raises(TypeError, match=r"factory 'builtins:len' gave int, not a llama-index"):
            await pipe.prepare(docs, backend)


@pytest.mark.parametrize("ref, says", [
    ("no_such_package_xyz.retrievers:make", "cannot import 'no_such_package_xyz.retrievers'"),
    ("pipelines.llama_retriever:no_such_factory", "has no 'no_such_factory'"),
    ("pipelines.llama_retriever", "must look like 'package.module:function'"),
])
def test_a_bad_factory_is_a_spec_error_naming_the_field(ref: str, says: str) -> None:
    spec = {"pipelines": [{"kind": "llama_retriever", "factory": ref}]}
    with pytest.raises(SpecError) as err:
        validate_spec(spec, source="my.toml")
    message = str(err.value)
    assert message.startswith("my.toml: invalid run spec: pipelines.0.llama_retriever.factory: ")
    assert says in message


@pytest.mark.slow
async def test_the_needle_is_retrieved_and_answered(docs: dict[str, Document], backend: HttpBackend) -> None:
    pipe = LlamaRetrieverPipeline(factory=FACTORY, options=OPTIONS)
    await pipe.prepare(docs, backend)
    example = needle_example(docs["book"])
    pred = await pipe.answer(example, backend)
    assert pred.ok, pred.error
    assert evidence_recall(example, pred) == 1.0
    assert [s.doc_id for s in pred.retrieved] == ["book", "book"]  # top 2, document scope
    texts = [docs["book"].text[int(s.start) : int(s.end)] for s in pred.retrieved]
    assert NEEDLE in texts[0]
    # The shared template over the nodes' texts, exactly: the server counts the same prompt.
    messages = build_messages(join_passages(texts), example.question)
    assert pred.completion is not None
    assert pred.completion.prompt_tokens == await backend.tokenize(messages=messages)
    assert pred.context_tokens == await backend.tokenize(join_passages(texts))
    assert 0 < pred.retrieval_s < 10 and "4827163" in pred.answer
    (stats,) = pipe.index_stats.values()
    assert stats["build_s"] > 0


@pytest.mark.slow
async def test_a_toml_spec_runs_end_to_end_into_duckdb(backend: HttpBackend, tmp_path: Path) -> None:
    spec = validate_spec({
        "corpus": {"kind": "needle", "lengths": [400], "depths": [0.2, 0.8], "seed": 3},
        "pipelines": [{"kind": "llama_retriever", "factory": FACTORY, "options": OPTIONS, "max_tokens": 16}],
    })
    assert isinstance(spec.pipelines[0], LlamaRetrieverSpec)
    corpus = await build_corpus(spec, backend, None)
    pipelines = [build_pipeline(p) for p in spec.pipelines]
    db = tmp_path / "llama.duckdb"
    with Store(db) as store:
        res = await run(
            run_id=spec.run_id(), corpus=corpus, pipelines=pipelines, backend=backend, store=store,
            run_meta={"model": backend.model, "base_url": backend.base_url, "server": {},
                      "spec": spec.model_dump(mode="json"), "corpus_params": dict(corpus.params)},
            metric_names=spec.metrics,
        )
    assert (res.done, res.errors) == (2, 0)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT pipeline, role, json_extract_string(params, '$.kind'), "
            "json_extract_string(params, '$.factory'), context_tokens, retrieval_ms, error "
            "FROM predictions WHERE run_id = ?", [spec.run_id()]).fetchall()
        recall = con.execute("SELECT list(value) FROM scores WHERE metric = 'evidence_recall'").fetchone()
        builds = con.execute("SELECT pipeline, doc_id, build_s FROM index_stats").fetchall()
    assert len(rows) == 2
    for pipeline, role, kind, factory, ctx, retrieval_ms, error in rows:
        assert (pipeline, role, kind, factory, error) == ("llama_retriever", "retrieval", "llama_retriever",
                                                          FACTORY, None)
        assert ctx > 0 and retrieval_ms > 0
    assert recall == ([1.0, 1.0],)  # both needles retrieved
    assert [(p, d) for p, d, _ in builds] == [("llama_retriever", "(corpus)")] and builds[0][2] > 0

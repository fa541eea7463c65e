"""RAG embeddings through an OpenAI-compatible `/v1/embeddings` endpoint (issue 15 item 5).

The endpoint is tests/fixtures/embeddings_server.py: a small server that computes vectors with
the REAL MiniLM model and demands a bearer key (a fake below the client under test). Around it
everything is real: the chunker, FAISS, the index cache, DuckDB, and in the slow test the
shared vLLM answering from what was retrieved.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import duckdb

from compare.core.registry import build_pipeline
from compare.core.types import Document, Example
from compare.run.runner import params_hash
from compare.serving.client import HttpBackend
from compare.store.db import Store
from pipelines.embed_endpoint import EmbedAuthError, EmbedEndpointError, EndpointEmbedder, api_url
from pipelines.embedder import DEFAULT_EMBEDDER, embed_texts, embedded_tokens, load_embedder
from pipelines.index import build_index, cache_key
from pipelines.rag import RagPipeline
from pipelines.rag_spec import RagSpec
from tests.fixtures.book import BOOK, NEEDLE, QUESTION, with_needle, words
from tests.fixtures.embeddings_server import MODEL, EmbeddingsServer

pytestmark = [
    pytest.mark.skipif(not BOOK.is_file(), reason=f"book not found: {BOOK}"),
    pytest.mark.usefixtures("no_network"),  # loopback only: the fixture server and vLLM
]

KEY_ENV = "RAGVSLC_TEST_EMBED_KEY"
KEY = "sk-embed-test-5f3a"


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer(KEY) as s:
        yield s


@pytest.fixture
def srv(server: EmbeddingsServer, monkeypatch: pytest.MonkeyPatch) -> EmbeddingsServer:
    """The module's server with fresh counters, its key in the environment."""
    server.reset()
    monkeypatch.setenv(KEY_ENV, KEY)
    return server


@pytest.fixture(scope="module")
def book() -> str:
    return BOOK.read_text(encoding="utf-8-sig")[200_000:260_000]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embed-cache")


def endpoint(srv: EmbeddingsServer, base: str | None = None, **kw: object) -> EndpointEmbedder:
    return EndpointEmbedder(base or srv.root, MODEL, api_key_env=KEY_ENV, backoff_s=0.01, **kw)  # type: ignore[arg-type]


def via_endpoint(srv: EmbeddingsServer, cache: Path, **kw: object) -> RagPipeline:
    return RagPipeline(embed_base_url=srv.root, embedder=MODEL, embed_api_key_env=KEY_ENV, cache_dir=cache,
                       **kw)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask() -> Example:
    return Example("q", ("book",), QUESTION, ("4827163",))


def test_endpoint_vectors_equal_the_local_normalised_ones(srv: EmbeddingsServer, book: str) -> None:
    texts = [book[i : i + 600] for i in range(0, 6000, 600)] + [NEEDLE, "word " * 400]
    srv.scale = 3.0  # an endpoint that does not normalise: the client does
    got = endpoint(srv).embed(texts, batch_size=5)
    model = load_embedder()
    local = embed_texts(model, texts)
    assert got.vectors.shape == local.shape and got.vectors.dtype == np.float32
    assert float((got.vectors * local).sum(axis=1).min()) > 0.9999
    assert np.allclose(np.linalg.norm(got.vectors, axis=1), 1.0, atol=1e-5)
    assert srv.batches == [5, 5, 2] and (got.requests, got.retries) == (3, 0)  # in order, batched
    # usage as the server's model saw the texts (truncated at 256) = the local count
    assert got.tokens == srv.tokens == embedded_tokens(model, texts)
    assert dict(srv.hits) == {"/v1/embeddings": 3}  # a bare host:port means /v1 under it


def test_the_base_url_is_used_verbatim_unless_bare(srv: EmbeddingsServer) -> None:
    assert api_url("http://h:8000") == api_url("http://h:8000/") == "http://h:8000/v1"
    assert api_url("https://p.example/v1beta/openai/") == "https://p.example/v1beta/openai"
    endpoint(srv, f"{srv.root}/api/openai/").embed(["one", "two"], batch_size=8)
    assert dict(srv.hits) == {"/api/openai/embeddings": 1}


def test_a_missing_or_wrong_key_is_a_clear_error(srv: EmbeddingsServer, monkeypatch: pytest.MonkeyPatch,
                                                 cache: Path) -> None:
    monkeypatch.delenv("RAGVSLC_TEST_NO_SUCH_KEY", raising=False)
    spec = RagSpec(embed_base_url=srv.root, embedder=MODEL, embed_api_key_env="RAGVSLC_TEST_NO_SUCH_KEY")
    with pytest.raises(ValueError, match="RAGVSLC_TEST_NO_SUCH_KEY is not set"):
        build_pipeline(spec)  # when the run builds its pipelines: before any index or request
    with pytest.raises(ValueError, match="not the key itself"):
        RagPipeline(embed_base_url=srv.root, embed_api_key_env=KEY)
    with pytest.raises(ValueError, match="embed_base_url only"):
        RagPipeline(embed_tokenizer=DEFAULT_EMBEDDER)

    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(EmbedAuthError) as refused:
        endpoint(srv).embed(["text"], batch_size=1)
    message = str(refused.value)
    assert KEY_ENV in message and "sk-wrong" not in message and KEY not in message
    assert sum(srv.hits.values()) == 1  # a refused key is not retried


def test_a_503_is_retried_and_a_dead_endpoint_fails_after_bounded_retries(srv: EmbeddingsServer) -> None:
    srv.fail_next = 1
    got = endpoint(srv).embed(["alpha", "beta", "gamma"], batch_size=2)
    assert (got.requests, got.retries, srv.batches) == (2, 1, [2, 1])
    assert srv.hits["/v1/embeddings"] == 3  # 503, then both batches

    srv.reset()
    srv.fail_always = True
    with pytest.raises(EmbedEndpointError, match=r"after 4 attempts: HTTP 503: overloaded"):
        endpoint(srv).embed(["alpha"], batch_size=1)
    assert srv.hits["/v1/embeddings"] == 4
    with pytest.raises(EmbedEndpointError, match="after 2 attempts: ConnectError"):
        EndpointEmbedder(f"http://127.0.0.1:{closed_port()}", MODEL, retries=1, backoff_s=0.01).embed(
            ["alpha"], batch_size=1)


async def test_rag_through_the_endpoint_retrieves_what_local_rag_does(
    srv: EmbeddingsServer, book: str, cache: Path, tmp_path: Path
) -> None:
    text, pos = with_needle(words(book, 3000), at=0.6)
    docs = {"book": Document("book", text), "empty": Document("empty", "")}
    local = RagPipeline(top_k=5, cache_dir=cache)
    local.build(docs)
    remote = via_endpoint(srv, cache, top_k=5, embed_batch_size=16)
    remote.build(docs)
    built = remote.index_stats["book"]
    # never the local entry, though both were built over the same chunks in the same cache
    assert built["key"] != local.index_stats["book"]["key"] and not built["embed_cached"]
    assert built["n_chunks"] == local.index_stats["book"]["n_chunks"] > 16
    assert max(srv.batches) == 16 and built["embed_requests"] == len(srv.batches)
    assert (built["embed_model"], local.index_stats["book"]["embed_model"]) == (MODEL, None)
    # the endpoint's usage and the local tokenizer's count agree on the same chunks
    assert built["embed_tokens"] == srv.tokens == local.index_stats["book"]["embed_tokens"] > 0
    assert remote.index_stats["empty"]["n_chunks"] == 0

    by_local, by_endpoint = await local.select(ask()), await remote.select(ask())
    assert by_endpoint.ranked == by_local.ranked and NEEDLE in by_endpoint.ranked[0].text
    assert by_endpoint.ranked[0].start_char <= pos < by_endpoint.ranked[0].end_char
    assert np.allclose(by_endpoint.scores, by_local.scores, atol=1e-4)
    assert remote.endpoint is not None and remote.endpoint.query_usage["requests"] == 1
    assert remote.endpoint.query_usage["tokens"] > 0 and remote.endpoint.query_usage["seconds"] > 0

    # the same model at another address is the same cache entry: only the question is sent
    srv.reset()
    again = RagPipeline(embed_base_url=f"{srv.root}/v1", embedder=MODEL, embed_api_key_env=KEY_ENV,
                        top_k=5, cache_dir=cache)
    again.build(docs)
    assert again.index_stats["book"]["cache_hit"] and sum(srv.hits.values()) == 0
    assert again.index_stats["book"]["embed_tokens"] == built["embed_tokens"]  # a hit is still priced

    with Store(tmp_path / "r.duckdb") as store:
        store.add_index_stats("run", "rag", params_hash(remote.params()), remote.index_stats)
        store.add_index_stats("run", "rag", params_hash(local.params()), local.index_stats)
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT embed_model, embed_tokens, embed_s > 0 FROM index_stats "
                           "WHERE doc_id = 'book' ORDER BY embed_model NULLS LAST").fetchall()
    assert rows == [(MODEL, built["embed_tokens"], True), (None, built["embed_tokens"], True)]


def test_the_endpoint_is_recorded_and_the_default_spec_dump_is_unchanged(srv: EmbeddingsServer) -> None:
    local = RagPipeline()
    remote = RagPipeline(embed_base_url=srv.root, embedder=MODEL, embed_api_key_env=KEY_ENV)
    assert remote.params() == {
        **local.params(), "embedder": MODEL, "embed_base_url": f"{srv.root}/v1",
        "embed_api_key_env": KEY_ENV, "embed_tokenizer": DEFAULT_EMBEDDER,
    }
    assert KEY not in json.dumps(remote.params())
    assert params_hash(remote.params()) != params_hash(local.params())
    # new fields at their defaults are left out of the dump, so every existing run id stays
    assert set(RagSpec().model_dump()) == set(RagSpec.model_fields) - {
        "timeline_chunking", "embed_base_url", "embed_api_key_env", "embed_tokenizer", "embed_headers"}
    dumped = RagSpec(embed_base_url=srv.root, embedder=MODEL, embed_api_key_env=KEY_ENV).model_dump()
    assert (dumped["embed_base_url"], dumped["embed_api_key_env"]) == (srv.root, KEY_ENV)
    assert "embed_tokenizer" not in dumped and KEY not in json.dumps(dumped)
    ep = endpoint(srv)
    assert cache_key([Document("d", "x")], 200, 20, ep) == cache_key(
        [Document("d", "x")], 200, 20, endpoint(srv, "https://elsewhere.example/v1"))
    assert cache_key([Document("d", "x")], 200, 20, ep) != cache_key([Document("d", "x")], 200, 20, MODEL)


async def test_a_failing_endpoint_is_an_error_row_not_an_exception(
    srv: EmbeddingsServer, book: str, cache: Path
) -> None:
    rag = via_endpoint(srv, cache, top_k=2)
    rag.build({"book": Document("book", words(book, 600))})
    srv.fail_always = True
    rag.endpoint.retries = 1  # type: ignore[union-attr]
    async with HttpBackend(f"http://127.0.0.1:{closed_port()}", "unused", timeout_s=5) as backend:
        pred = await rag.answer(ask(), backend)
    assert pred.error and "embeddings request" in pred.error and "503" in pred.error
    assert pred.completion is None and pred.retrieved == () and pred.retrieval_s > 0

    srv.reset()
    srv.fail_always = True
    with pytest.raises(EmbedEndpointError):  # an index that cannot be embedded stops prepare
        build_index([Document("other", words(book, 300))], chunk_size=100, chunk_overlap=0,
                    embedder=endpoint(srv, retries=0), cache_dir=cache)


@pytest.mark.slow
async def test_rag_with_endpoint_embeddings_answers_through_vllm(
    srv: EmbeddingsServer, backend: HttpBackend, book: str, cache: Path
) -> None:
    text, _ = with_needle(words(book, 1200), at=0.4)
    docs = {"book": Document("book", text)}
    local, remote = RagPipeline(top_k=2, max_tokens=16, cache_dir=cache), via_endpoint(
        srv, cache, top_k=2, max_tokens=16)
    await local.prepare(docs, backend)
    await remote.prepare(docs, backend)
    by_local, by_endpoint = await local.answer(ask(), backend), await remote.answer(ask(), backend)
    assert by_endpoint.ok, by_endpoint.error
    assert by_endpoint.retrieved == by_local.retrieved  # same chunks, so the same prompt
    assert by_endpoint.context_tokens == by_local.context_tokens
    assert "4827163" in by_endpoint.answer and 0 < by_endpoint.retrieval_s < 10
    assert remote.endpoint is not None and remote.endpoint.query_usage["requests"] == 1
    # the question's billed tokens ride on its row; in-process embedding bills none
    assert by_endpoint.embed_tokens == remote.endpoint.query_usage["tokens"] > 0
    assert by_local.embed_tokens is None

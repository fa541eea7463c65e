"""A RAG index build reports its embedding progress per batch (real MiniLM, real FAISS), and
the CLI's console turns that into lines for logs; the pipeline layer itself prints nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from cli import console
from compare.core.types import Document
from corpora.books import load_book
from pipelines.embedder import embed_progress, embed_texts, load_embedder
from pipelines.index import build_index

DATA = Path(os.environ.get("RAGVSLC_DATA", "/work/shared/data"))
pytestmark = pytest.mark.skipif(not (DATA / "books" / "les_miserables.txt").is_file(), reason="no book")


def _doc() -> Document:
    return Document("book-part", load_book("les_miserables", DATA)[20_000:25_000])


def test_build_reports_every_batch_then_a_cache_hit_reports_nothing(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    kw = {"chunk_size": 48, "chunk_overlap": 0, "batch_size": 4, "cache_dir": tmp_path}
    _, stats = build_index([_doc()], progress=lambda *a: calls.append(a), **kw)  # type: ignore[arg-type]
    n = stats.n_chunks
    assert n > 12 and not stats.cache_hit
    # (what, 0, n) first, then one call per batch of 4, the last one at n.
    want = [("book-part", 0, n), *(("book-part", min(i, n), n) for i in range(4, n + 4, 4))]
    assert calls == want
    calls.clear()
    _, again = build_index([_doc()], progress=lambda *a: calls.append(a), **kw)  # type: ignore[arg-type]
    assert again.cache_hit and calls == []


def test_embed_progress_reaches_a_build_in_a_worker_thread(tmp_path: Path) -> None:
    """The runner builds indexes through asyncio.to_thread: the callback set around it, in the
    CLI, must still hear about the batches."""
    calls: list[tuple[str, int, int]] = []
    docs = [Document("a", _doc().text[:1500]), Document("b", _doc().text[1500:3000])]

    async def build() -> None:
        await asyncio.to_thread(build_index, docs, chunk_size=64, chunk_overlap=0, cache_dir=tmp_path)

    with embed_progress(lambda *a: calls.append(a)):
        asyncio.run(build())
    assert calls and calls[0][:2] == ("2 documents", 0) and calls[-1][1] == calls[-1][2] > 0
    calls.clear()
    asyncio.run(build())  # outside the block: nobody is told (and it is a cache hit anyway)
    build_index(docs, chunk_size=48, chunk_overlap=0, cache_dir=tmp_path)  # new params: embeds
    assert calls == []


def test_batched_embedding_equals_one_encode_call() -> None:
    model = load_embedder()
    text = _doc().text
    texts = [text[i : i + 50 + (i * 7) % 300] for i in range(0, 3000, 150)]  # uneven lengths
    seen: list[tuple[int, int]] = []
    ours = embed_texts(model, texts, batch_size=6, progress=lambda d, t: seen.append((d, t)))
    whole = model.encode(texts, batch_size=6, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, whole, atol=1e-6)
    assert seen == [(min(i, len(texts)), len(texts)) for i in range(6, len(texts) + 6, 6)]
    assert embed_texts(model, []).shape == (0, whole.shape[1])


def test_console_logs_a_line_for_a_build_that_takes_a_while(tmp_path: Path) -> None:
    with console.console.capture() as cap, console._embedding_lines(every_s=0.0, quiet_s=0.0):
        build_index([_doc()], chunk_size=48, chunk_overlap=0, batch_size=4, cache_dir=tmp_path)
    lines = cap.get().splitlines()
    assert lines and all(line.startswith("embedding book-part: ") for line in lines)
    done, total = lines[-1].split(": ")[1].split(" chunks")[0].split("/")
    assert done == total and int(total) > 12

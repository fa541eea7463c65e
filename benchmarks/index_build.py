"""(c) RAG index build: `build_index` vs calling the embedder's `encode` on the same chunks, and
a rerun that finds the index in its cache.

The baseline for the build is the least any RAG system must do (embed every chunk); what
build_index adds (chunking with exact spans, bookkeeping, FAISS, writing the cache) should be
small next to it. The cached rerun is compared with the cold build: a rerun of the same spec
must not embed again. Each repetition uses a fresh temporary cache directory.
(benchmarks/bench_rag_index.py, from the RAG issue, also sweeps batch sizes and threads.)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, median, ratio_row
from compare.core.types import Document
from corpora.books import data_dir, load_book
from pipelines.chunking import chunk_document
from pipelines.embedder import embed_texts, embedder_tokenizer, load_embedder
from pipelines.index import build_index


def time_builds(
    doc: Document, chunks: list[str], model: Any, repeats: int, note: bool = False
) -> tuple[list[float], list[float], list[float]]:
    """Seconds per repetition of (cold build, cached rerun, raw encode), each cold build in a
    fresh cache directory: one measurement shared by both index benchmarks."""
    cold: list[float] = []
    cached: list[float] = []
    direct: list[float] = []
    for i in range(repeats):
        if note:
            print(f"  (c) repetition {i + 1}/{repeats}: {len(chunks)} chunks ...", flush=True)
        t0 = time.perf_counter()
        embed_texts(model, chunks, batch_size=32)
        direct.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            _, first = build_index([doc], chunk_size=200, chunk_overlap=20, cache_dir=Path(tmp))
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, again = build_index([doc], chunk_size=200, chunk_overlap=20, cache_dir=Path(tmp))
            cached.append(time.perf_counter() - t0)
            assert not first.cache_hit and again.cache_hit
    return cold, cached, direct


def bench_index(*, chars: int, repeats: int) -> tuple[list[Row], dict[str, Any]]:
    text = load_book("les_miserables", data_dir())
    doc = Document("lm", text[200_000 : 200_000 + chars])
    model = load_embedder()
    chunks = [c.text for c in chunk_document(doc, 200, 20, embedder_tokenizer(model))]
    embed_texts(model, chunks[:8])  # the first call pays lazy initialisation: not a build cost
    cold, cached, direct = time_builds(doc, chunks, model, repeats, note=True)
    details = {"chars": chars, "chunks": len(chunks), "cold_s": cold, "cached_s": cached, "encode_s": direct}
    rows = [
        ratio_row("c_index", "index build throughput", "raw encode of the same chunks",
                  len(chunks) / median(direct), len(chunks) / median(cold), "chunks/s",
                  higher_is_better=True, goal=0.9, goal_text=">= 0.9x", details=details),
        ratio_row("c_index", "cached rerun speed", "cold build", 1 / median(cold), 1 / median(cached),
                  "builds/s", higher_is_better=True, goal=20, goal_text=">= 20x"),
    ]
    return rows, details

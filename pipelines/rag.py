"""RAG: chunk -> embed -> FAISS -> top-k -> (relevance or document order) -> the shared prompt.

Only the context differs from the long-context pipeline (same template, same generation cap),
so a quality or latency gap between the two is the retrieval's doing. Retrieval is scoped to
the example's own documents: searching the whole corpus would let a question about one book be
answered from another, which neither a user's deployment nor long context would do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from compare.backend import Backend, BackendError
from compare.types import Document, Example, Prediction
from pipelines.index import (
    DEFAULT_EMBEDDER,
    Chunk,
    DocIndex,
    build_index,
    embed_texts,
    load_embedder,
)
from pipelines.prompts import build_messages, join_passages

Order = Literal["relevance", "document"]


class RagPipeline:
    """Answer from the top-k chunks of the example's documents."""

    name = "rag"

    def __init__(
        self,
        *,
        chunk_size: int = 200,
        chunk_overlap: int = 20,
        top_k: int = 4,
        order: Order = "relevance",
        embedder: str = DEFAULT_EMBEDDER,
        max_tokens: int = 32,
        cache_dir: Path | None = None,
    ) -> None:
        if chunk_size <= 0 or not 0 <= chunk_overlap < chunk_size:
            raise ValueError(f"need 0 <= chunk_overlap < chunk_size, got {chunk_overlap}, {chunk_size}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if order not in ("relevance", "document"):
            raise ValueError(f"order must be 'relevance' or 'document', got {order!r}")
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.top_k = top_k
        self.order: Order = order
        self.embedder = embedder
        self.max_tokens = max_tokens
        self.cache_dir = cache_dir
        self._indexes: dict[str, DocIndex] = {}
        self.index_stats: dict[str, dict[str, Any]] = {}

    def params(self) -> dict[str, object]:
        return {
            "kind": "rag",
            "chunk_size": self.chunk_size,
            "chunk_overlap": self.chunk_overlap,
            "top_k": self.top_k,
            "order": self.order,
            "embedder": self.embedder,
            "max_tokens": self.max_tokens,
        }

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        """Build (or load from cache) one index per document, off the event loop."""
        # Load the embedder now even if every index is cached: otherwise the first question's
        # retrieval_s would include seconds of model loading.
        await asyncio.to_thread(load_embedder, self.embedder)
        for doc_id, doc in documents.items():
            if doc_id in self._indexes:
                continue
            index, stats = await asyncio.to_thread(
                build_index,
                [doc],
                chunk_size=self.chunk_size,
                chunk_overlap=self.chunk_overlap,
                embedder=self.embedder,
                cache_dir=self.cache_dir,
            )
            self._indexes[doc_id] = index
            self.index_stats[doc_id] = asdict(stats)

    def _search(self, question: str, doc_ids: tuple[str, ...]) -> list[tuple[Chunk, float]]:
        """Top-k over the example's documents: each searched on its own, then merged by score."""
        query = embed_texts(load_embedder(self.embedder), [question])[0]
        hits = [hit for d in doc_ids for hit in self._indexes[d].search(query, self.top_k)]
        # Ties broken by document position so that the selection is deterministic.
        hits.sort(key=lambda h: (-h[1], doc_ids.index(h[0].doc_id), h[0].start_char))
        return hits[: self.top_k]

    def retrieve(self, example: Example) -> list[Chunk]:
        """The chunks that go into the prompt, in prompt order (sync: call it from a thread)."""
        chunks = [c for c, _ in self._search(example.question, example.doc_ids)]
        if self.order == "document":
            # OP-RAG: the same selection, laid out in the order the text reads.
            chunks.sort(key=lambda c: (example.doc_ids.index(c.doc_id), c.start_char))
        return chunks

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        missing = [d for d in example.doc_ids if d not in self._indexes]
        if missing:
            return Prediction(
                answer="", completion=None, context_tokens=0, error=f"not indexed (prepare first): {missing}"
            )
        t0 = time.perf_counter()
        chunks = await asyncio.to_thread(self.retrieve, example)
        retrieval_s = time.perf_counter() - t0
        retrieved = tuple(c.span() for c in chunks)
        context = join_passages([c.text for c in chunks])
        try:
            context_tokens = await backend.tokenize(context)
            completion = await backend.complete(
                build_messages(context, example.question), max_tokens=self.max_tokens
            )
        except BackendError as exc:
            return Prediction(
                answer="",
                completion=None,
                context_tokens=0,
                retrieved=retrieved,
                retrieval_s=retrieval_s,
                error=str(exc),
            )
        return Prediction(
            answer=completion.text.strip(),
            completion=completion,
            context_tokens=context_tokens,
            retrieved=retrieved,
            retrieval_s=retrieval_s,
        )

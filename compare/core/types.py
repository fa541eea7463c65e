"""Core value types shared by corpora, pipelines, the runner and the store.

They are frozen so that a value that was scored is the value that was stored: nothing
downstream can quietly edit an answer or a timing after the fact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Modality = Literal["text", "video"]
# An explicit cache breakpoint a long-context prompt may carry for providers that cache only
# marked prefixes (pipelines/prompts.py sends it), and the cache lifetime each one buys (the cost
# model checks it against the price sheet's TTL).
CacheMarker = Literal["none", "ephemeral-5m", "ephemeral-1h"]
CACHE_MARKER_TTL_MINUTES: dict[str, float] = {"ephemeral-5m": 5.0, "ephemeral-1h": 60.0}
# One chat message: {"role": ..., "content": a string, or text parts (a cache marker rides on one)}.
Message = Mapping[str, Any]
# Counts the tokens of a text with the served model's tokenizer (the server's /tokenize).
TokenCounter = Callable[[str], Awaitable[int]]
CORPUS_INDEX = "(corpus)"  # the doc_id of a whole-corpus RAG index in `index_stats`


@dataclass(frozen=True)
class Span:
    """Where an answer lives: character offsets for text, seconds for video."""

    doc_id: str
    start: float
    end: float

    def overlaps(self, other: Span) -> bool:
        return self.doc_id == other.doc_id and self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    modality: Modality = "text"
    media_path: Path | None = None


@dataclass(frozen=True)
class Example:
    id: str
    doc_ids: tuple[str, ...]
    question: str
    answers: tuple[str, ...]
    evidence: tuple[Span, ...] = ()
    tags: Mapping[str, str | float] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """One streamed request, timed the way vLLM's serving benchmark times it."""

    text: str
    prompt_tokens: int
    cached_tokens: int | None
    output_tokens: int
    ttft_s: float
    e2e_s: float
    itl_s: tuple[float, ...]
    finish_reason: str | None = None
    cache_write_tokens: int | None = None  # written to a provider's prompt cache (where reported)
    served_by: str | None = None  # the response's system_fingerprint (a replica behind a router names itself)

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; undefined for a single token."""
        if self.output_tokens <= 1:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class Step:
    """One request of a multi-request answer (a router's RAG try, then its long-context
    fallback): kept apart so each step's own speed survives the summed row."""

    route: str
    completion: Completion
    context_tokens: int

    def as_dict(self) -> dict[str, object]:
        c = self.completion
        tpot = c.tpot_s
        return {
            "route": self.route, "context_tokens": self.context_tokens,
            "prompt_tokens": c.prompt_tokens, "cached_tokens": c.cached_tokens,
            "cache_write_tokens": c.cache_write_tokens,
            "output_tokens": c.output_tokens, "ttft_ms": c.ttft_s * 1e3, "e2e_ms": c.e2e_s * 1e3,
            "tpot_ms": tpot * 1e3 if tpot is not None else None, "finish_reason": c.finish_reason,
        }


@dataclass(frozen=True)
class Prediction:
    answer: str
    completion: Completion | None
    context_tokens: int
    retrieved: tuple[Span, ...] = ()
    retrieval_s: float = 0.0
    route: str | None = None
    error: str | None = None
    truncated_tokens: int = 0
    steps: tuple[Step, ...] = ()  # only when the answer took more than one request
    embed_tokens: int | None = None  # the question's embedding billed by an endpoint; None: none

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Corpus:
    """A built corpus. Builders are functions whose arguments are their configuration."""

    name: str
    documents: Mapping[str, Document]
    examples: Sequence[Example]
    params: Mapping[str, object] = field(default_factory=dict)

    def content_sha256(self) -> str:
        """A hash of what the run asks: every document's text and every question with its
        answers, evidence and tags. Two builds that hash alike asked the same questions."""
        h = hashlib.sha256()
        for doc_id in sorted(self.documents):
            h.update(f"{doc_id}\0{self.documents[doc_id].text}\0".encode())
        for ex in self.examples:
            ev = [(s.doc_id, s.start, s.end) for s in ex.evidence]
            h.update(json.dumps([ex.id, ex.doc_ids, ex.question, ex.answers, ev, dict(ex.tags)],
                                sort_keys=True, default=str).encode())
        return h.hexdigest()

    def __post_init__(self) -> None:
        for ex in self.examples:
            missing = [d for d in ex.doc_ids if d not in self.documents]
            if missing:
                raise ValueError(f"example {ex.id!r} refers to unknown documents {missing}")

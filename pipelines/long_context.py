"""Long context: the whole document(s) in the prompt, budgeted with the server's tokenizer.

A prompt that does not fit the window is never cut silently: by default it becomes an error
row; truncation is an explicit policy that is part of the pipeline's params and each cut is
recorded as `truncated_tokens` on the prediction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import PositiveInt

from compare.core.config import Grown
from compare.core.errors import BackendError
from compare.core.protocols import Backend, Plan, Role
from compare.core.registry import register_pipeline
from compare.core.types import CacheMarker, Document, Example, Prediction
from pipelines.prompts import build_messages, marked_messages

Truncation = Literal["error", "head", "tail", "middle"]


def cut(text: str, keep: float, policy: Truncation) -> str:
    """Keep a fraction of the characters: the start (head), the end (tail), or both ends."""
    n = int(len(text) * keep)
    if policy == "head":
        return text[:n]
    if policy == "tail":
        return text[len(text) - n :]
    half = n // 2
    return text[:half] + "\n[...]\n" + text[len(text) - (n - half) :]


class LongContextSpec(Grown):
    """Long context's configuration: the constructor's input, its params, its label."""

    kind: Literal["long_context"] = "long_context"
    truncation: Literal["error", "head", "tail", "middle"] = "error"
    max_tokens: PositiveInt = 32
    # A cache breakpoint after the document for providers that cache only marked prefixes
    # (pipelines/prompts.py); its TTL should match the price sheet's cache_ttl_minutes.
    cache_marker: CacheMarker = "none"

    NEW_DEFAULTS: ClassVar[dict[str, object]] = {"cache_marker": "none"}

    def label(self) -> str:
        """"Long context", with what differs from the default: how it cuts, its cache marker."""
        extra = [f"{self.truncation}-cut" if self.truncation != "error" else "",
                 f"cache marker {self.cache_marker}" if self.cache_marker != "none" else ""]
        return ", ".join(["Long context", *(e for e in extra if e)])

    def plan(self) -> Plan:
        return Plan(None, self.max_tokens)  # the whole document(s)


@register_pipeline(LongContextSpec)
class LongContextPipeline:
    """Answer from the full text of the example's documents."""

    name = "long_context"
    role: ClassVar[Role] = "long_context"

    def __init__(self, spec: LongContextSpec | None = None, /, **knobs: Any) -> None:
        """Built from its spec; keywords are the spec's fields, validated by it."""
        if spec is None or knobs:
            base = spec.model_dump() if spec is not None else {}
            spec = LongContextSpec.model_validate({**base, **knobs})
        self.spec = spec
        self.truncation: Truncation = spec.truncation
        self.max_tokens = spec.max_tokens
        self.cache_marker: CacheMarker = spec.cache_marker
        self._docs: Mapping[str, Document] = {}
        # A document's token count, measured once (its later questions reuse it): the count
        # is a server round trip over the whole text, paid on the request's critical path but,
        # like every /tokenize call (the rule RAG follows too: RagPipeline.timed_select),
        # outside the measured time: TTFT and E2E are the completion request's own.
        self._context_tokens: dict[tuple[str, ...], int] = {}

    @classmethod
    def from_spec(cls, spec: LongContextSpec) -> LongContextPipeline:
        return cls(spec)

    def label(self) -> str:
        return self.spec.label()

    def plan(self) -> Plan:
        return self.spec.plan()

    def params(self) -> dict[str, object]:
        """The spec's dump: a knob added later is left out at its default (Grown), so old
        params hashes stay as they were."""
        return dict(self.spec.model_dump(mode="json"))

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        self._docs = documents
        self._context_tokens.clear()

    async def _count_context(self, example: Example, context: str, backend: Backend) -> int:
        n = self._context_tokens.get(example.doc_ids)
        if n is None:
            n = self._context_tokens[example.doc_ids] = await backend.tokenize(context)
        return n

    def context_for(self, example: Example) -> str:
        return "\n\n".join(self._docs[d].text for d in example.doc_ids)

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        context = self.context_for(example)
        try:
            messages = build_messages(context, example.question)
            context_tokens, window, prompt_tokens = await asyncio.gather(
                self._count_context(example, context, backend), backend.max_model_len(),
                backend.tokenize(messages=messages),
            )
            budget = window - self.max_tokens
            truncated = 0
            if prompt_tokens > budget:
                if self.truncation == "error":
                    return Prediction(
                        answer="",
                        completion=None,
                        context_tokens=context_tokens,
                        error=(
                            f"context_overflow: prompt is {prompt_tokens} tokens + {self.max_tokens} "
                            f"to generate > window {window}; choose a truncation policy to cut it"
                        ),
                    )
                context, kept = await self._fit(context, example.question, budget, backend)
                truncated = context_tokens - kept
                context_tokens = kept
                messages = build_messages(context, example.question)
            # Counted as plain text above (a marker is metadata, not tokens); sent marked.
            sent = marked_messages(context, example.question, self.cache_marker)
            completion = await backend.complete(sent, max_tokens=self.max_tokens)
        except BackendError as exc:
            return Prediction(answer="", completion=None, context_tokens=0, error=str(exc))
        return Prediction(
            answer=completion.text.strip(),
            completion=completion,
            context_tokens=context_tokens,
            truncated_tokens=truncated,
        )

    async def _fit(
        self, context: str, question: str, budget: int, backend: Backend
    ) -> tuple[str, int]:
        """Largest cut of the context whose full prompt fits the budget (binary search)."""
        lo, hi = 0.0, 1.0
        best = cut(context, 0.0, self.truncation)
        for _ in range(14):
            mid = (lo + hi) / 2
            candidate = cut(context, mid, self.truncation)
            if await backend.tokenize(messages=build_messages(candidate, question)) <= budget:
                lo, best = mid, candidate
            else:
                hi = mid
        return best, await backend.tokenize(best)

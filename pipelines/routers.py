"""Routers between RAG and long context: Self-Route and a document-length rule.

Each router is an ordinary pipeline built from a RAG and a long-context pipeline (their own
params are nested in the router's params, so a router result is traceable to every knob of both
paths) and records which path answered in `Prediction.route` ("rag" or "long_context").

Self-Route (Li et al. 2024) asks RAG first with one extra instruction that allows the answer
"unanswerable", and re-asks with the full document only when the model takes that exit (or,
optionally, when the best retrieval score is below a threshold, without asking RAG at all). The
point is cost: most questions are answered from a short prompt, and long context is paid only
where retrieval failed.

Accounting of a fallback row (RAG asked, then long context): the Prediction is frozen and shared,
so the two requests are folded into one honest Completion (plus `steps`, each request alone):
- prompt, cached and output tokens, and `context_tokens`, are SUMS over both requests (what was
  paid);
- `e2e_s` = step-1 E2E + step-2 E2E and `ttft_s` = step-1 E2E + step-2 TTFT: the user waits for
  the whole first request before the first token of the answer they get;
- `itl_s` is the final request's, so E2E - TTFT == sum(ITL) still holds; `steps` keeps each
  request's own tokens and times (stored as JSON), and the row's TPOT is the final request's;
- `retrieved` is what the retriever returned (so evidence recall measures the retriever that
  made the routing decision), even when the final prompt held the whole document.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from compare.core.config import Strict
from compare.core.errors import BackendError
from compare.core.protocols import Backend, Plan, Role
from compare.core.registry import build_pipeline, register_pipeline
from compare.core.secrets import REVEAL
from compare.core.types import Completion, Document, Example, Prediction, Step
from pipelines.long_context import LongContextPipeline, LongContextSpec
from pipelines.prompts import UNANSWERABLE, build_messages
from pipelines.rag import RagPipeline
from pipelines.rag_spec import RagSpec

Route = Literal["rag", "long_context"]

# The one addition Self-Route makes to the shared template: an explicit, parseable exit. Its
# wording and place were measured with the 0.5B default model on 16 needle prompts (needle in
# the retrieved chunk or not): this one, before the question, was right 16/16; "If the context
# does not contain the answer, reply with exactly ..." after the question refused 7 of 8
# answerable ones, and softer wordings copied the decoy sentence instead of refusing.
UNANSWERABLE_INSTRUCTION = f'Only if the context does not contain the answer, reply "{UNANSWERABLE}".'


# Ways a small model says "the context does not say", after metrics-style normalisation
# (lower case, no punctuation, so "can't" -> "cant"). Searched anywhere in the reply.
_REFUSALS = re.compile(
    r"\bunanswerable\b|\bnot answerable\b|\bcan ?not be answered\b|\bcant be answered\b"
    r"|\b(can ?not|cant|unable to) (answer|determine|find|be determined)\b"
    r"|\bnot (mentioned|provided|stated|specified|given|found|included|available|present|contained)"
    r"( in| within)?( the)? (context|text|passage|document)"
    r"|\bnot in( the)? (context|text|passage|document)\b"
    r"|\b(context|text|passage|document)( does not| doesnt| do not| dont) "
    r"(contain|mention|provide|say|specify|include|state|give)\b"
    r"|\bno (information|mention|answer)\b|\b(not enough|insufficient) information\b"
    r"|\bi (do not|dont) know\b"
)
# Whole replies only: "none" can be a real answer, but a false exit costs a fallback, not quality.
_EXACT_REFUSALS = frozenset({"unknown", "none", "na", "n a", "not found", "no answer"})


def _normalize(text: str) -> str:
    text = re.sub(r"[^\w\s]", " ", text.lower().replace("'", "").replace("’", ""))
    return " ".join(text.split())


def is_unanswerable(reply: str) -> bool:
    """Did the model take the exit? Robust to case, punctuation and common paraphrases."""
    norm = _normalize(reply)
    return not norm or norm in _EXACT_REFUSALS or _REFUSALS.search(norm) is not None


def self_route_messages(context: str, question: str) -> list[dict[str, str]]:
    """The shared template, with the exit instruction on the line before the question."""
    return build_messages(context, f"{UNANSWERABLE_INSTRUCTION}\n{question}")


def combine(first: Completion, second: Completion) -> Completion:
    """Two sequential requests as one: tokens summed, times chained (see module docstring)."""
    cached = (
        None
        if first.cached_tokens is None and second.cached_tokens is None
        else (first.cached_tokens or 0) + (second.cached_tokens or 0)
    )
    written = (
        None
        if first.cache_write_tokens is None and second.cache_write_tokens is None
        else (first.cache_write_tokens or 0) + (second.cache_write_tokens or 0)
    )
    return Completion(
        text=second.text,
        prompt_tokens=first.prompt_tokens + second.prompt_tokens,
        cached_tokens=cached,
        output_tokens=first.output_tokens + second.output_tokens,
        ttft_s=first.e2e_s + second.ttft_s,
        e2e_s=first.e2e_s + second.e2e_s,
        itl_s=second.itl_s,
        finish_reason=second.finish_reason,
        cache_write_tokens=written,
    )


# specs ---------------------------------------------------------------------------------------
class _RoutedSpec(Strict):
    """A router's two paths, each a table validated by RagSpec / LongContextSpec themselves, so
    every knob those pipelines have (or gain) is a router knob too, with the same bounds.

    The stored value is the inner spec's full dump (defaults written out), so the run id sees
    every inner knob."""

    rag: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    long_context: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("rag", "long_context")
    @classmethod
    def _inner(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model: type[BaseModel] = RagSpec if info.field_name == "rag" else LongContextSpec
        try:
            inner = model.model_validate({"kind": info.field_name, **value})  # embed_headers' values
            return inner.model_dump(mode="json", context=REVEAL)  # kept to send; the store redacts them
        except ValidationError as exc:
            problems = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()]
            raise ValueError("; ".join(problems)) from None


class SelfRouteSpec(_RoutedSpec):
    kind: Literal["self_route"] = "self_route"
    score_threshold: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None


class LengthRuleSpec(_RoutedSpec):
    kind: Literal["length_rule"] = "length_rule"
    max_doc_tokens: PositiveInt = 8000


@register_pipeline(SelfRouteSpec)
class SelfRoutePipeline:
    """RAG with an "unanswerable" exit; long context for the questions that take it."""

    name = "self_route"
    role: ClassVar[Role] = "router"

    def __init__(
        self, rag: RagPipeline, long_context: LongContextPipeline, *, score_threshold: float | None = None
    ) -> None:
        if score_threshold is not None and not -1.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold is a cosine similarity in [-1, 1], got {score_threshold}")
        self.rag = rag
        self.long_context = long_context
        self.score_threshold = score_threshold
        self._max_tokens = rag.max_tokens  # the RAG step's generation cap, same as plain RAG's

    @classmethod
    def from_spec(cls, spec: SelfRouteSpec) -> SelfRoutePipeline:
        rag, lc = router_paths(spec)
        return cls(rag, lc, score_threshold=spec.score_threshold)

    @property
    def index_stats(self) -> Mapping[str, Mapping[str, object]]:
        """The RAG index builds, so the runner stores (and cost charges) them for this router."""
        return self.rag.index_stats

    def label(self) -> str:
        cut = f" \u2265{self.score_threshold:g}" if self.score_threshold is not None else ""
        return f"Self-route{cut} ({self.rag.label()})"

    def plan(self) -> Plan:
        return replace(self.rag.plan(), fallback=True)  # its RAG step, then (at most) long context

    def params(self) -> dict[str, object]:
        return {
            "kind": "self_route",
            "score_threshold": self.score_threshold,
            "unanswerable_instruction": UNANSWERABLE_INSTRUCTION,
            "rag": self.rag.params(),
            "long_context": self.long_context.params(),
        }

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        await self.rag.prepare(documents, backend)
        await self.long_context.prepare(documents, backend)

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        t0 = time.perf_counter()
        try:
            self.rag.check_indexed(example)
        except KeyError as exc:
            return Prediction(answer="", completion=None, context_tokens=0, route="rag",
                              error=str(exc.args[0]))
        try:
            # The same selection plain RAG makes (rank order kept for MRR, budget counted by the
            # server, its /tokenize time left out), so the router's RAG step is exactly RAG's.
            sel, retrieval_s = await self.rag.timed_select(example, backend)
        except BackendError as exc:
            return Prediction(answer="", completion=None, context_tokens=0, route="rag",
                              retrieval_s=time.perf_counter() - t0, error=str(exc))
        retrieved = tuple(c.span() for c in sel.ranked)
        # What retrieval found and spent, on every row this question ends as.
        found: dict[str, Any] = {"retrieved": retrieved, "retrieval_s": retrieval_s,
                                 "embed_tokens": sel.embed_tokens}
        top = max(sel.scores, default=-1.0)
        if self.score_threshold is not None and top < self.score_threshold:
            final = await self.long_context.answer(example, backend)
            return replace(final, **found, route="long_context")
        try:
            context_tokens = sel.counted_tokens
            if context_tokens is None:
                context_tokens = await backend.tokenize(sel.context)
            first = await backend.complete(
                self_route_messages(sel.context, example.question),
                max_tokens=self._max_tokens,
            )
        except BackendError as exc:
            return Prediction(answer="", completion=None, context_tokens=0, **found, route="rag",
                              error=str(exc))
        if not is_unanswerable(first.text):
            return Prediction(answer=first.text.strip(), completion=first, context_tokens=context_tokens,
                              **found, route="rag")
        final = await self.long_context.answer(example, backend)
        if final.completion is None:  # the fallback failed: an error row, on the route it failed on
            return replace(final, **found, route="long_context", steps=(Step("rag", first, context_tokens),))
        return replace(
            final,
            completion=combine(first, final.completion),
            context_tokens=context_tokens + final.context_tokens,
            **found,
            route="long_context",
            steps=(Step("rag", first, context_tokens),
                   Step("long_context", final.completion, final.context_tokens)),
        )


@register_pipeline(LengthRuleSpec)
class LengthRulePipeline:
    """Long context when the example's documents fit `max_doc_tokens`, RAG otherwise.

    Documents are measured once in `prepare` with the server's tokenizer (the threshold compares
    the SUM of the example's document token counts). Only documents above the threshold are
    indexed, as a deployment of this rule would do (all of them when RAG searches the whole
    corpus); an example whose documents are each short but together long is indexed on first
    use.
    """

    name = "length_rule"
    role: ClassVar[Role] = "router"

    def __init__(self, rag: RagPipeline, long_context: LongContextPipeline, *, max_doc_tokens: int) -> None:
        if max_doc_tokens < 1:
            raise ValueError(f"max_doc_tokens must be >= 1, got {max_doc_tokens}")
        self.rag = rag
        self.long_context = long_context
        self.max_doc_tokens = max_doc_tokens
        self._doc_tokens: dict[str, int] = {}
        self._docs: Mapping[str, Document] = {}
        self._indexed: set[str] = set()
        self._lock = asyncio.Lock()

    @classmethod
    def from_spec(cls, spec: LengthRuleSpec) -> LengthRulePipeline:
        rag, lc = router_paths(spec)
        return cls(rag, lc, max_doc_tokens=spec.max_doc_tokens)

    @property
    def index_stats(self) -> Mapping[str, Mapping[str, object]]:
        return self.rag.index_stats

    def label(self) -> str:
        return f"Length rule \u2264{self.max_doc_tokens} tok ({self.rag.label()})"

    def plan(self) -> Plan:
        return replace(self.rag.plan(), fallback=True)  # counted as both paths: an upper bound

    def params(self) -> dict[str, object]:
        return {
            "kind": "length_rule",
            "max_doc_tokens": self.max_doc_tokens,
            "rag": self.rag.params(),
            "long_context": self.long_context.params(),
        }

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        self._docs = documents
        await self.long_context.prepare(documents, backend)
        for doc_id, doc in documents.items():
            if doc_id not in self._doc_tokens:
                self._doc_tokens[doc_id] = await backend.tokenize(doc.text)
        # A corpus-wide index must hold every document (a question may be answered from any).
        whole_corpus = self.rag.scope == "corpus"
        await self._index([d for d in documents if whole_corpus or self._doc_tokens[d] > self.max_doc_tokens],
                          backend)

    async def _index(self, doc_ids: list[str], backend: Backend) -> None:
        async with self._lock:
            todo = {d: self._docs[d] for d in doc_ids if d not in self._indexed}
            if todo:
                await self.rag.prepare(todo, backend)
                self._indexed.update(todo)

    def route_for(self, example: Example) -> Route:
        """The rule itself: a pure function of the measured document lengths."""
        total = sum(self._doc_tokens[d] for d in example.doc_ids)
        return "long_context" if total <= self.max_doc_tokens else "rag"

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        try:
            route = self.route_for(example)
        except KeyError as exc:
            return Prediction(answer="", completion=None, context_tokens=0,
                              error=f"document not measured (prepare first): {exc}")
        if route == "long_context":
            pred = await self.long_context.answer(example, backend)
        else:
            await self._index(list(example.doc_ids), backend)
            pred = await self.rag.answer(example, backend)
        return replace(pred, route=route)


def router_paths(spec: Any) -> tuple[RagPipeline, LongContextPipeline]:
    """A router's two paths (its spec's `rag` and `long_context` tables), each built exactly as
    the same spec would build it on its own; every router kind builds them here."""
    rag = build_pipeline(RagSpec.model_validate(spec.rag))
    lc = build_pipeline(LongContextSpec.model_validate(spec.long_context))
    if not isinstance(rag, RagPipeline) or not isinstance(lc, LongContextPipeline):
        raise TypeError(f"a router needs a RagPipeline and a LongContextPipeline, got {rag!r}, {lc!r}")
    return rag, lc


def build_router(spec: SelfRouteSpec | LengthRuleSpec) -> SelfRoutePipeline | LengthRulePipeline:
    """Spec -> router, as the registry builds both router kinds."""
    if isinstance(spec, SelfRouteSpec):
        return SelfRoutePipeline.from_spec(spec)
    return LengthRulePipeline.from_spec(spec)

"""A router by kind of question: the stratum a rule predicts from the question's words decides,
before any retrieval, whether RAG or long context answers.

Why before retrieval: Self-Route pays a RAG request on every question to learn that retrieval
failed; on aggregation questions ("how many times...", "list every...", "which came first...")
top-k retrieval fails by construction once the fact is stated at more places than k, and the
question's own words say so. A local factual question ("What is the magic number for Lisbon?")
is what RAG answers cheaply. So the rule maps the question to one of the strata the analysis
uses (`local`, `multi_hop`, `aggregation`, `whole`; compare/analysis/strata.py assigns the
measured ones) and sends the strata in `long_strata` to long context, the rest to RAG. Cheap
document features refine it: a document of at most `long_below_tokens` goes to long context
whatever the question (retrieval saves little there), and one above `max_doc_tokens` goes to
RAG (long context could not hold it).

Charged for itself: the rule costs no tokens; its latency (the document lookup and the
patterns, measured per question with perf_counter) is added to the answering request's TTFT and
E2E, since the user waits for the decision before the first token (E2E - TTFT == sum(ITL) still
holds). Recorded with every row's params: the rule set's version and its patterns. Nothing is
learned, so there is no training split: the rules are hand-written. They were written with the
aggregation corpus's question forms in view (corpora/aggregate.py), so how well they predict
that corpus's strata is not an out-of-sample estimate; on other corpora it is.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt

from compare.core.protocols import Backend, Plan, Role
from compare.core.registry import register_pipeline
from compare.core.types import Document, Example, Prediction
from pipelines.long_context import LongContextPipeline
from pipelines.rag import RagPipeline
from pipelines.routers import Route, _RoutedSpec, router_paths

Stratum = Literal["local", "multi_hop", "aggregation", "whole", "unknown"]
RULES_VERSION = "kind-rules-2"  # bump when a pattern changes: results are recorded with it
# kind-rules-2: a bare "how many" no longer counts. "How many people live in Lisbon?" asks for one
# number stated in one place (local); only a count over the text is aggregation: of times,
# mentions, different things, things the text mentions / lists / introduces or that appear in it,
# things "in the text", things carried (bAbI task 7). "How many more / fewer" joins two numbers
# (multi_hop). Verbs such as "named", "visit", "described" stay out: "the town named X" and
# "visitors per year" are single facts.
# (stratum, pattern): the first that matches the lower-cased question decides; none: "local".
_COUNTED = r"(mention|list|cite|refer|appear|occur|introduc)(s|es|ed|d|ing|red|ring)?\b"
RULES: tuple[tuple[Stratum, str], ...] = (
    ("aggregation",  # counting, listing every occurrence, ordering across the text
     r"\bhow often\b|\bhow many (times|occasions|mentions|instances|different|distinct|separate|unique)\b"
     r"|\bhow many\b[^?.;]*\b" + _COUNTED +
     r"|\bhow many\b[^?.;]*\b(are|were|is|was) (there )?(in|throughout|across) (the|this) "
     r"(text|story|book|document|passage|chapter|article|report|transcript|lecture|conversation)\b"
     r"|\bhow many\b[^?.;]*\b(carrying|holding)\b"
     r"|\bnumber of (times|occasions|mentions)\b|\bcount (the|all|every)\b"
     r"|\blist (all|every|each)\b|\b(all|every|each) (of )?the (places|times|occasions|mentions)\b"
     r"|\bevery (place|time|occasion|one) (that|where|which|when)\b|\bletters of every\b"
     r"|\b(came|comes|happened|appears?|is mentioned|was mentioned) (first|last)\b|\bthe first (one|time)\b"
     r"|\bin (what|which) order\b|\bearliest\b|\bhow much (in total|altogether)\b|\bin total\b"),
    ("whole",  # the document as a whole
     r"\bsummar(y|ise|ize)\b|\boverall\b|\bmain (theme|idea|point|argument|message)s?\b|\bthroughout\b"
     r"|\b(whole|entire) (text|document|book|story|passage|article)\b|\bgist\b|\bmoral of\b"),
    ("multi_hop",  # a few facts joined
     r"\bhow (many|much) (more|fewer|less)\b"
     r"|\b(before|after) (he|she|they|it|\w+) (went|moved|travelled|traveled|journeyed|dropped|took)\b"
     r"|\bwhere was (the )?\w+ before\b|\bboth\b|\bcompared? (to|with)\b|\bdifference between\b"
     r"|\bwhat is (the )?\w+ (of|in) the \w+ (that|which|who)\b"),
)
_COMPILED = tuple((stratum, re.compile(pattern)) for stratum, pattern in RULES)


def predict_stratum(question: str) -> Stratum:
    """The stratum the rule set predicts for a question (words only; no model, no document)."""
    text = " ".join(question.lower().split())
    return next((stratum for stratum, pattern in _COMPILED if pattern.search(text)), "local")


class KindRouterSpec(_RoutedSpec):
    kind: Literal["kind_router"] = "kind_router"
    long_strata: list[Literal["local", "multi_hop", "aggregation", "whole"]] = Field(
        default=["aggregation", "whole"], min_length=1)
    long_below_tokens: Annotated[int, Field(ge=0)] = 0  # documents this short: long context anyway
    max_doc_tokens: PositiveInt | None = None  # documents longer: RAG anyway (None: no cap)


@register_pipeline(KindRouterSpec)
class KindRouterPipeline:
    """Long context for the strata in `long_strata` (by the rule's prediction), RAG otherwise."""

    name = "kind_router"
    role: ClassVar[Role] = "router"

    def __init__(self, rag: RagPipeline, long_context: LongContextPipeline, *,
                 long_strata: tuple[str, ...] = ("aggregation", "whole"), long_below_tokens: int = 0,
                 max_doc_tokens: int | None = None) -> None:
        if not long_strata:
            raise ValueError("long_strata must name at least one stratum")
        self.rag = rag
        self.long_context = long_context
        self.long_strata = tuple(long_strata)
        self.long_below_tokens = long_below_tokens
        self.max_doc_tokens = max_doc_tokens
        self._doc_tokens: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_spec(cls, spec: KindRouterSpec) -> KindRouterPipeline:
        rag, lc = router_paths(spec)
        return cls(rag, lc, long_strata=tuple(spec.long_strata), long_below_tokens=spec.long_below_tokens,
                   max_doc_tokens=spec.max_doc_tokens)

    @property
    def index_stats(self) -> Mapping[str, Mapping[str, object]]:
        """Every document is indexed (any question may be local), stored and charged."""
        return self.rag.index_stats

    def label(self) -> str:
        return f"Kind router ({self.rag.label()})"

    def plan(self) -> Plan:
        return replace(self.rag.plan(), fallback=True)  # either path: counted as both, an upper bound

    def params(self) -> dict[str, object]:
        return {
            "kind": "kind_router",
            "classifier": "rule",
            "rules_version": RULES_VERSION,
            "rules": [list(rule) for rule in RULES],
            "trained_on": "nothing: hand-written rules",
            "long_strata": list(self.long_strata),
            "long_below_tokens": self.long_below_tokens,
            "max_doc_tokens": self.max_doc_tokens,
            "rag": self.rag.params(),
            "long_context": self.long_context.params(),
        }

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        await self.measure(documents, backend)
        await self.long_context.prepare(documents, backend)
        await self.rag.prepare(documents, backend)

    async def measure(self, documents: Mapping[str, Document], backend: Backend) -> None:
        """The one document feature the rule reads: each document's length, by the server's tokenizer."""
        async with self._lock:
            for doc_id, doc in documents.items():
                if doc_id not in self._doc_tokens:
                    self._doc_tokens[doc_id] = await backend.tokenize(doc.text)

    def route_for(self, example: Example) -> Route:
        """The rule itself: the predicted stratum and the measured document length, nothing else."""
        total = sum(self._doc_tokens[d] for d in example.doc_ids)
        if total <= self.long_below_tokens:
            return "long_context"
        if self.max_doc_tokens is not None and total > self.max_doc_tokens:
            return "rag"
        return "long_context" if predict_stratum(example.question) in self.long_strata else "rag"

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        t0 = time.perf_counter()
        try:
            route = self.route_for(example)
        except KeyError as exc:
            return Prediction(answer="", completion=None, context_tokens=0,
                              error=f"document not measured (prepare first): {exc}")
        decided_s = time.perf_counter() - t0
        path = self.long_context if route == "long_context" else self.rag
        pred = await path.answer(example, backend)
        c = pred.completion
        if c is not None:  # the decision's own latency, before the first token
            c = replace(c, ttft_s=c.ttft_s + decided_s, e2e_s=c.e2e_s + decided_s)
        return replace(pred, completion=c, route=route)

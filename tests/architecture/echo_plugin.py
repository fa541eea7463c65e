"""A pipeline and a corpus from outside the engine, in one file (issue 16: "a new pipeline in a
test takes one file"). Named in a spec as `kind = "python"`, `factory = "tests.architecture.echo_plugin:..."`.

The pipeline is a deliberately naive retriever: the document's sentence sharing most words with
the question, sent with the shared prompt. It touches only compare.core (the protocols' shapes)
and pipelines.prompts, as a user's own package would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import ClassVar

from compare.core.errors import BackendError
from compare.core.protocols import Backend, Role
from compare.core.types import Corpus, Document, Example, Prediction, Span
from pipelines.prompts import build_messages

_WORD = re.compile(r"\w+")


class BestSentence:
    """Answer from the single sentence that shares most words with the question."""

    name = "best_sentence"
    role: ClassVar[Role] = "retrieval"

    def __init__(self, max_tokens: int = 16) -> None:
        self.max_tokens = max_tokens
        self._docs: Mapping[str, Document] = {}

    def params(self) -> dict[str, object]:
        return {"max_tokens": self.max_tokens, "selector": "word overlap"}

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        self._docs = documents

    def _best(self, example: Example) -> Span:
        words = set(_WORD.findall(example.question.lower()))
        best, best_n = Span(example.doc_ids[0], 0, 0), -1
        for doc_id in example.doc_ids:
            text = self._docs[doc_id].text
            for m in re.finditer(r"[^.!?]+[.!?]?", text):
                n = len(words & set(_WORD.findall(m.group().lower())))
                if n > best_n:
                    best, best_n = Span(doc_id, m.start(), m.end()), n
        return best

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        t0 = time.perf_counter()
        span = self._best(example)
        context = self._docs[span.doc_id].text[int(span.start):int(span.end)].strip()
        retrieval_s = time.perf_counter() - t0
        try:
            tokens = await backend.tokenize(context)
            messages = build_messages(context, example.question)
            reply = await backend.complete(messages, max_tokens=self.max_tokens)
        except BackendError as exc:
            return Prediction("", None, 0, retrieved=(span,), retrieval_s=retrieval_s, error=str(exc))
        return Prediction(reply.text.strip(), reply, tokens, retrieved=(span,), retrieval_s=retrieval_s)


def make_pipeline(max_tokens: int = 16) -> BestSentence:
    return BestSentence(max_tokens=max_tokens)


def make_corpus(colour: str = "teal") -> Corpus:
    """Two tiny documents with one fact each, and a question per fact (evidence in characters)."""
    a = ("The lighthouse keeper kept a logbook. "
         f"The door of the lighthouse was painted {colour}. Storms came every winter.")
    b = "The baker opened at dawn. The baker's oven was fired with beech wood. Bread sold out by noon."
    docs = {"a": Document("a", a), "b": Document("b", b)}
    fact_a = a.index("The door")
    fact_b = b.index("The baker's oven")
    examples = [
        Example("qa", ("a",), "What colour was the door of the lighthouse painted?", (colour,),
                evidence=(Span("a", fact_a, fact_a + 45),)),
        Example("qb", ("b",), "What wood was the baker's oven fired with?", ("beech",),
                evidence=(Span("b", fact_b, fact_b + 40),)),
    ]
    return Corpus("two_facts", docs, examples, {"colour": colour})

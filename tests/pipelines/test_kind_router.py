"""The router by kind of question: the rule's strata, the route it takes before retrieval, its
own latency charged, its rule set recorded.

The backend here is a small stand-in below the router (it counts words and echoes a fixed
reply): what is under test is the decision and the accounting, not the model. The real server
runs the router in tests/corpora/test_aggregate.py's slow test.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from compare.core.registry import build_pipeline
from compare.core.types import Completion, Document, Example, Message
from compare.run.spec import RunSpec
from pipelines.kind_router import RULES_VERSION, KindRouterPipeline, KindRouterSpec, predict_stratum
from pipelines.long_context import LongContextPipeline
from pipelines.rag import RagPipeline


class WordBackend:
    """Counts words as tokens and answers every request with the same timed reply."""

    model = "words"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def complete(self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0,
                       seed: int = 0) -> Completion:
        self.prompts.append(str(messages[-1]["content"]))
        return Completion("4", 10, 0, 1, ttft_s=0.25, e2e_s=0.25, itl_s=())

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Message] | None = None) -> int:
        return len((text or "").split())

    async def max_model_len(self) -> int:
        return 4096


@pytest.mark.parametrize(("question", "stratum"), [
    ("How many times is a red umbrella mentioned in the text? Answer with the number only.", "aggregation"),
    ("At which of these places is a red kite mentioned in the text? (A) the bakery (B) the mill "
     "Answer with the letters of every place that applies.", "aggregation"),
    ("Which of these places is the first one where a red kite is mentioned? (A) x", "aggregation"),
    ("List every town the narrator visits.", "aggregation"),
    ("Summarize the story in two sentences.", "whole"),
    ("What is the main theme of the book?", "whole"),
    ("Where was the football before the kitchen?", "multi_hop"),
    ("What is the special magic number for Lisbon?", "local"),
    ("Who is the bishop of Digne?", "local"),
])
def test_rule_predicts_the_stratum_from_the_words(question: str, stratum: str) -> None:
    assert predict_stratum(question) == stratum


# kind-rules-2 (issue 30): "how many" is aggregation only when it counts over the text. Each
# "local" row below was "aggregation" under kind-rules-1 (any "how many").
@pytest.mark.parametrize(("question", "stratum"), [
    ("How many people live in Lisbon?", "local"),  # one number, stated in one place
    ("How many children did Fantine have?", "local"),
    ("How many pages does the annual report have?", "local"),
    ("How many tourists visit the museum each year?", "local"),
    ("How many inhabitants does the town named Digne have?", "local"),
    ("How many more people live in Lisbon than in Porto?", "multi_hop"),  # two numbers joined
    ("How many objects is Mary carrying?", "aggregation"),  # bAbI task 7: every pick-up and drop
    ("How many different towns does the narrator pass through?", "aggregation"),
    ("How many characters are introduced in the first chapter?", "aggregation"),
    ("How many people are mentioned in the text?", "aggregation"),
    ("How many ships are there in the story?", "aggregation"),
    ("How many times does the bishop speak?", "aggregation"),
    ("How often does the bishop appear?", "aggregation"),
    ("What number of times is the harbour mentioned?", "aggregation"),
])
def test_how_many_counts_only_over_the_text(question: str, stratum: str) -> None:
    assert predict_stratum(question) == stratum


def test_the_single_fact_question_goes_to_rag_and_the_version_says_which_rules() -> None:
    router = KindRouterPipeline(RagPipeline(), LongContextPipeline())
    router._doc_tokens["d"] = 3000
    assert router.route_for(Example("q", ("d",), "How many people live in Lisbon?", ("545000",))) == "rag"
    assert router.route_for(Example("q", ("d",), "How many times is Lisbon mentioned?", ("3",))) == (
        "long_context")
    assert RULES_VERSION == "kind-rules-2"  # recorded in params (test_rule_set_and_knobs_are_recorded)


async def test_routes_before_retrieval_and_charges_its_latency() -> None:
    router = build_pipeline(KindRouterSpec(rag={"chunk_size": 16, "chunk_overlap": 0, "top_k": 1},
                                           long_below_tokens=20, max_doc_tokens=400))
    assert isinstance(router, KindRouterPipeline)
    prose = "The bishop walked to the town and spoke with the mayor about the poor. " * 4
    docs = {"tiny": Document("tiny", "A red kite flew."), "mid": Document("mid", prose * 3),
            "huge": Document("huge", prose * 12)}
    backend = WordBackend()
    # The lengths the rule reads (prepare also builds RAG's index: the slow test runs that part).
    await router.measure(docs, backend)
    await router.long_context.prepare(docs, backend)
    count = "How many times is a red kite mentioned?"
    local = "Who spoke with the mayor?"
    cases = {("mid", count): "long_context", ("mid", local): "rag",
             ("tiny", local): "long_context",  # a document this short: long context whatever is asked
             ("huge", count): "rag"}  # longer than max_doc_tokens: long context could not hold it
    for (doc, question), route in cases.items():
        assert router.route_for(Example(doc, (doc,), question, ("1",))) == route
    for doc, question in (("mid", count), ("tiny", local)):
        pred = await router.answer(Example(doc, (doc,), question, ("1",)), backend)
        assert pred.route == "long_context" and pred.completion is not None
        # the decision's time is on the row, before the first token; no tokens are added for it
        c = pred.completion
        assert c.ttft_s > 0.25 and c.e2e_s == pytest.approx(c.ttft_s)
        assert (pred.completion.prompt_tokens, pred.completion.output_tokens) == (10, 1)
        assert not pred.retrieved and docs[doc].text in backend.prompts[-1]
    unknown = await router.answer(Example("x", ("nope",), local, ("1",)), backend)
    assert unknown.error is not None and "prepare first" in unknown.error


def test_rule_set_and_knobs_are_recorded() -> None:
    spec = RunSpec.model_validate({"corpus": {"kind": "aggregate"},
                                   "pipelines": [{"kind": "kind_router", "rag": {"top_k": 2},
                                                  "long_strata": ["aggregation"]}]})
    (p,) = spec.pipelines
    assert isinstance(p, KindRouterSpec)
    router = build_pipeline(p)
    assert isinstance(router, KindRouterPipeline)
    params = router.params()
    assert params["rules_version"] == RULES_VERSION and params["classifier"] == "rule"
    assert params["long_strata"] == ["aggregation"] and params["rules"]
    assert params["rag"]["top_k"] == 2  # type: ignore[index]
    assert router.label() == "Kind router (RAG k=2)"
    with pytest.raises(ValueError):
        KindRouterSpec(long_strata=[])

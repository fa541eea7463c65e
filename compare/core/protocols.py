"""The small protocols the layers meet at: a model endpoint, a pipeline, a corpus builder, a metric.

They live in the lowest layer so a pipeline or a corpus depends on these shapes only, never on
the HTTP client, the runner or the store that happen to implement or drive them (and a test, a
plug-in or a hosted API can stand in for any of them without subclassing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from compare.core.types import Completion, Corpus, Document, Example, Message, Prediction, TokenCounter

# What a pipeline is to the analysis: the long-context baseline, a retrieval pipeline, or a
# router between the two (its rows carry `route`). Cost, the oracle and recommendations read
# this declared role (stored per row), never a pipeline's kind string.
Role = Literal["long_context", "retrieval", "router"]
ROLES: tuple[Role, ...] = ("long_context", "retrieval", "router")


@runtime_checkable
class Backend(Protocol):
    """What a pipeline may ask of a model endpoint: answer a chat, count tokens, give its window."""

    model: str

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> Completion:
        """Stream one chat completion and time it; raises `BackendError` when it fails."""
        ...

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Message] | None = None) -> int:
        """Prompt length with the served model's tokenizer (and chat template for messages)."""
        ...

    async def max_model_len(self) -> int:
        """The served context window in tokens."""
        ...


@runtime_checkable
class Pipeline(Protocol):
    """One way of turning (question, documents) into a model answer.

    A pipeline's configuration is its constructor's typed arguments; `params()` returns them
    verbatim so the runner can hash and store them with every prediction."""

    name: str
    role: ClassVar[Role]

    def params(self) -> Mapping[str, object]:
        """Every knob that can change a result, JSON-serialisable."""
        ...

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        """One-off work per corpus (indexing, token counting) done before any question."""
        ...

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        """Answer one example. Failures are returned as a Prediction with `error`, not raised."""
        ...


@runtime_checkable
class Indexed(Protocol):
    """A pipeline that builds search indexes: the runner stores their builds (and cost charges
    them) for it, whether it is RAG itself or a router holding a RAG path."""

    @property
    def index_stats(self) -> Mapping[str, Mapping[str, object]]: ...


@runtime_checkable
class SharesPrefix(Protocol):
    """A pipeline whose prompt starts with a whole document: the schedule orders its requests so
    the server's prefix cache is filled once and reused (long context)."""

    def context_for(self, example: Example) -> str: ...


@dataclass(frozen=True)
class Plan:
    """What one question will cost a pipeline before it runs, declared by the pipeline itself
    (the duration estimate reads this, never a pipeline's knob names)."""

    context_tokens: int | None  # retrieved context per question; None: the whole document(s)
    max_tokens: int  # the generation cap
    fallback: bool = False  # a router: its retrieval step, then (at most) the whole document


@runtime_checkable
class Described(Protocol):
    """A pipeline that names itself for a reader ("RAG k=4") and plans its requests: the label
    is stored with every row, so the report never derives it from knob names."""

    def label(self) -> str: ...

    def plan(self) -> Plan: ...


def label_of(pipeline: Pipeline) -> str:
    """The pipeline's own short label (a plug-in without one: its name)."""
    return pipeline.label() if isinstance(pipeline, Described) else pipeline.name


# A plug-in that declares no plan is estimated by its role, with RAG's default context (4 chunks
# of 200 tokens) for a retriever and the shared 32-token generation cap.
_ROLE_PLANS: dict[Role, Plan] = {
    "long_context": Plan(None, 32), "retrieval": Plan(800, 32), "router": Plan(800, 32, fallback=True),
}


def plan_of(pipeline: Pipeline) -> Plan:
    """What the pipeline plans per question (see `Plan`)."""
    return pipeline.plan() if isinstance(pipeline, Described) else _ROLE_PLANS[pipeline.role]


class Router(Pipeline, Protocol):
    """A pipeline that answers through one of two paths and records which in `Prediction.route`."""

    rag: Pipeline
    long_context: Pipeline


@dataclass(frozen=True)
class BuildContext:
    """What a corpus builder may use: the served model's token counter and the data folder."""

    tokenize: TokenCounter
    data_dir: Path | None


CorpusBuilder = Callable[[Any, BuildContext], Awaitable[Corpus]]  # (its spec, context) -> corpus
Metric = Callable[[Example, Prediction], float | None]  # None: the metric does not apply

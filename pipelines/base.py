"""The Pipeline protocol: one way of turning (question, documents) into a model answer.

A pipeline's configuration is the typed arguments of its constructor; `params()` returns them
verbatim so the runner can hash and store them with every prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from compare.backend import Backend
from compare.types import Document, Example, Prediction


@runtime_checkable
class Pipeline(Protocol):
    name: str

    def params(self) -> Mapping[str, object]:
        """Every knob that can change a result, JSON-serialisable."""
        ...

    async def prepare(self, documents: Mapping[str, Document], backend: Backend) -> None:
        """One-off work per corpus (indexing, token counting) done before any question."""
        ...

    async def answer(self, example: Example, backend: Backend) -> Prediction:
        """Answer one example. Failures are returned as a Prediction with `error`, not raised."""
        ...

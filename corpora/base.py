"""The Corpus protocol: documents plus the questions asked about them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from compare.types import Document, Example


@dataclass(frozen=True)
class Corpus:
    """A built corpus. Builders are functions whose arguments are their configuration."""

    name: str
    documents: Mapping[str, Document]
    examples: Sequence[Example]
    params: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for ex in self.examples:
            missing = [d for d in ex.doc_ids if d not in self.documents]
            if missing:
                raise ValueError(f"example {ex.id!r} refers to unknown documents {missing}")

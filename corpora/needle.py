"""Text needle-in-a-haystack over a real book: a grid of context lengths x needle depths.

Lengths are reached with the serving model's own tokenizer (an async `count` function, the
server's /tokenize in production), and the length actually reached is recorded per example,
so a chart's x-axis is a measurement, not a target. Cuts and insertions happen only at
sentence ends so the haystack stays natural prose.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from compare.types import Document, Example, Span
from corpora.base import Corpus
from corpora.books import data_dir, load_book

Counter = Callable[[str], Awaitable[int]]

CITIES = (
    "Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Quito", "Dakar", "Tbilisi", "Riga",
    "Accra", "Bogota", "Manila", "Zagreb", "Tunis", "Almaty", "Perth", "Havana", "Kyoto",
)
_SENTENCE_END = re.compile(r"(?<=[.!?”\"])\s+|\n\s*\n\s*")


@dataclass(frozen=True)
class Needle:
    key: str
    value: str

    @property
    def sentence(self) -> str:
        return f"The special magic number for {self.key} is {self.value}."

    @property
    def question(self) -> str:
        return f"What is the special magic number for {self.key}?"


def sentence_bounds(text: str) -> list[int]:
    """Character offsets where a new sentence starts (0 included)."""
    return [0] + [m.end() for m in _SENTENCE_END.finditer(text)]


def snap(bounds: Sequence[int], pos: int) -> int:
    """The sentence start at or before pos."""
    i = bisect.bisect_right(bounds, pos) - 1
    return bounds[max(i, 0)]


async def prefix_with_tokens(text: str, target: int, count: Counter) -> str:
    """Longest sentence-aligned prefix with at most `target` tokens (measured, not guessed)."""
    bounds = sentence_bounds(text)
    lo, hi = 0, len(bounds) - 1
    # Grow an upper bound first so the search never tokenizes more of the book than needed.
    guess = min(len(text), max(64, target * 5))
    while guess < len(text) and await count(text[: snap(bounds, guess)]) <= target:
        guess = min(len(text), guess * 2)
    hi = bisect.bisect_right(bounds, guess) - 1
    best = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if await count(text[: bounds[mid]]) <= target:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return text[: bounds[best]].rstrip()


def plant(haystack: str, sentence: str, depth: float) -> tuple[str, int]:
    """Insert a sentence at the sentence boundary nearest `depth` (0..1); return text, offset."""
    bounds = sentence_bounds(haystack)
    pos = snap(bounds, int(len(haystack) * depth)) if depth > 0 else 0
    if depth >= 1.0:
        return haystack + " " + sentence, len(haystack) + 1
    return haystack[:pos] + sentence + " " + haystack[pos:], pos


async def build_needle_corpus(
    count: Counter,
    *,
    lengths: Sequence[int] = (2000, 4000, 8000),
    depths: Sequence[float] = (0.1, 0.5, 0.9),
    book: str = "les_miserables",
    start_marker: str = "BOOK FIRST—A JUST MAN",
    seed: int = 0,
    root: Path | None = None,
) -> Corpus:
    """One document and one question per (length, depth) cell."""
    for d in depths:
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"depth {d} is outside 0..1")
    for n in lengths:
        if n < 64:
            raise ValueError(f"length {n} is too short for a haystack (minimum 64 tokens)")
    text = load_book(book, data_dir(root))
    # The marker at the start of a line: the table of contents repeats it, indented.
    start = text.find("\n" + start_marker + "\n")
    text = text[start + 1 if start >= 0 else 0 :]
    rng = random.Random(seed)
    docs: dict[str, Document] = {}
    examples: list[Example] = []
    for length in lengths:
        needles = [Needle(rng.choice(CITIES), str(rng.randint(1_000_000, 9_999_999))) for _ in depths]
        budget = length - max([await count(n.sentence + " ") for n in needles])
        haystack = await prefix_with_tokens(text, budget, count)
        for depth, needle in zip(depths, needles, strict=True):
            body, at = plant(haystack, needle.sentence, depth)
            doc_id = f"needle-{length}-{round(depth * 100):03d}"
            docs[doc_id] = Document(id=doc_id, text=body)
            examples.append(
                Example(
                    id=doc_id,
                    doc_ids=(doc_id,),
                    question=needle.question,
                    answers=(needle.value,),
                    evidence=(Span(doc_id, at, at + len(needle.sentence)),),
                    tags={
                        "task": "needle",
                        "target_tokens": float(length),
                        "depth": float(depth),
                        "doc_tokens": float(await count(body)),
                        "actual_depth": round(at / max(len(body), 1), 4),
                    },
                )
            )
    params = {
        "builder": "needle",
        "lengths": list(lengths),
        "depths": list(depths),
        "book": book,
        "start_marker": start_marker,
        "seed": seed,
    }
    return Corpus(name="needle", documents=docs, examples=examples, params=params)

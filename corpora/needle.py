"""Text needle-in-a-haystack over a real book: a grid of context lengths x needle depths.

Lengths are reached with the serving model's own tokenizer (an async `count` function, the
server's /tokenize in production), and the length actually reached is recorded per example,
so a chart's x-axis is a measurement, not a target. Cuts and insertions happen only at
sentence ends so the haystack stays natural prose.

Variants, because a single literal passkey flatters retrieval (Self-Route: RAG scores 80 on
passkeys and 4.6 once the question is paraphrased):
- single: one "special magic number" needle per document (the classic test);
- multi: k needles in one document and one question asking for all of them (Gemini 1.5's
  multiple-needle test: recall drops as k grows), scored by `contains_all`;
- paraphrase: the question shares no content word with the needle beyond the key, so lexical
  retrieval cannot match them;
- distractor: one true needle among similar sentences with wrong values for other keys and
  near-miss keys.
A length of "full" uses the whole book (Les Misérables: ~0.8M tokens) as one document.
"""

from __future__ import annotations

import bisect
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from compare.core.config import Strict
from compare.core.metrics import default_primary
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus, Document, Example, Span, TokenCounter
from corpora.books import BookName, TokenLength, data_dir, load_book

Length = int | Literal["full"]
Variant = Literal["single", "multi", "paraphrase", "distractor"]

CITIES = (
    "Lisbon", "Nairobi", "Oslo", "Lima", "Hanoi", "Quito", "Dakar", "Tbilisi", "Riga",
    "Accra", "Bogota", "Manila", "Zagreb", "Tunis", "Almaty", "Perth", "Havana", "Kyoto",
)
# More keys for the multi-needle variant only (CITIES' order fixes the single variant's draws).
MORE_CITIES = (
    "Cairo", "Lagos", "Vienna", "Madrid", "Dublin", "Prague", "Warsaw", "Athens", "Beirut",
    "Tehran", "Kabul", "Dhaka", "Seoul", "Taipei", "Jakarta", "Sydney", "Auckland", "Denver",
    "Boston", "Toronto", "Caracas", "Santiago", "Montevideo", "Asuncion", "La Paz", "Panama",
    "Kingston", "Reykjavik", "Helsinki", "Tallinn", "Vilnius", "Minsk",
)
KEYS = CITIES + MORE_CITIES
NAMES = (
    "Mira", "Tobias", "Anouk", "Keiko", "Dmitri", "Lucia", "Farid", "Greta", "Olusegun",
    "Priya", "Mateo", "Ines", "Jonas", "Amara", "Soren", "Yusuf",
)
# (needle sentence, question): no content word in common except the key, checked by a test.
PARAPHRASES = (
    ("{key}'s locker code is {value}.",
     "Which digits open the storage compartment belonging to {key}?"),
    ("The vault that {key} rents opens with the combination {value}.",
     "What sequence unlocks the safe deposit box leased by {key}?"),
    ("{key} booked seat {value} on the night train.",
     "Which place was reserved for {key} for the evening railway trip?"),
    ("{key}'s library card carries the identifier {value}.",
     "What is printed on the borrowing pass {key} uses for books?"),
    ("The phone extension of {key} at the office is {value}.",
     "Which internal line reaches {key} at work?"),
    ("{key} was issued employee badge {value}.",
     "Which staff identification belongs to {key}?"),
)
# Near-miss keys for distractors: a different place whose name contains the asked one.
NEAR_MISS = ("New {key}", "{key} Harbour", "Old {key}", "{key} Airport")
_SENTENCE_END = re.compile(r"(?<=[.!?”\"])\s+|\n\s*\n\s*")
_TITLE = re.compile(r"(?:^|\W)(?:[A-Z]|Mr|Mrs|Mme|Mlle|Mgr|Messrs|Dr|St)\.$")
_MAGIC = ("The special magic number for {key} is {value}.", "What is the special magic number for {key}?")


@dataclass(frozen=True)
class Needle:
    key: str
    value: str
    say: str = _MAGIC[0]
    ask: str = _MAGIC[1]

    @property
    def sentence(self) -> str:
        return self.say.format(key=self.key, value=self.value)

    @property
    def question(self) -> str:
        return self.ask.format(key=self.key)


def sentence_bounds(text: str) -> list[int]:
    """Character offsets where a new sentence starts (0 included).

    A period after a title or an initial ("M. Myriel", 824 times in Les Misérables) is not a
    sentence end: planting there would split a name and make the prose read wrong.
    """
    out = [0]
    for m in _SENTENCE_END.finditer(text):
        before = text[max(0, m.start() - 8) : m.start()]
        if m.group().count("\n") < 2 and _TITLE.search(before):
            continue
        out.append(m.end())
    return out


def snap(bounds: Sequence[int], pos: int) -> int:
    """The sentence start at or before pos."""
    i = bisect.bisect_right(bounds, pos) - 1
    return bounds[max(i, 0)]


async def prefix_with_tokens(text: str, target: int, count: TokenCounter) -> str:
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


def scatter(
    haystack: str, sentences: Sequence[str], depths: Sequence[float]
) -> tuple[str, list[tuple[int, int]]]:
    """Insert each sentence at the sentence start nearest its depth (0..1; 1 = appended).

    Sentences landing on the same boundary keep their given order, so a story planted at
    non-decreasing depths reads in order. Returns the text and each sentence's exact span.
    """
    if len(sentences) != len(depths):
        raise ValueError("one depth per sentence")
    bounds = sentence_bounds(haystack)
    n = len(haystack)

    def where(depth: float) -> int:
        if depth >= 1.0:
            return n
        return snap(bounds, int(n * depth)) if depth > 0 else 0

    order = sorted(range(len(sentences)), key=lambda i: (where(depths[i]), i))
    parts: list[str] = []
    spans: list[tuple[int, int]] = [(0, 0)] * len(sentences)
    cursor = size = 0
    for i in order:
        pos, s = where(depths[i]), sentences[i]
        parts.append(haystack[cursor:pos])
        size += pos - cursor
        cursor = pos
        piece, start = (" " + s, size + 1) if pos == n else (s + " ", size)
        parts.append(piece)
        size += len(piece)
        spans[i] = (start, start + len(s))
    parts.append(haystack[cursor:])
    return "".join(parts), spans


def plant(haystack: str, sentence: str, depth: float) -> tuple[str, int]:
    """Insert a sentence at the sentence boundary nearest `depth` (0..1); return text, offset."""
    text, [(start, _)] = scatter(haystack, [sentence], [depth])
    return text, start


@dataclass(frozen=True)
class Planted:
    text: str
    spans: list[tuple[int, int]]
    tokens: int


async def plant_all(
    book: str,
    length: Length,
    docs: Sequence[tuple[Sequence[str], Sequence[float]]],
    count: TokenCounter,
) -> list[Planted]:
    """Plant each document's sentences into ONE haystack measured for this length.

    Sharing the haystack across a length's documents costs one measurement per length, and
    documents that differ only after their first insertion share a prefix a server's cache can
    reuse. Every result is measured; the haystack shrinks until each is within the target.
    """
    if length == "full":
        out = [scatter(book, s, d) for s, d in docs]
        return [Planted(t, sp, await count(t)) for t, sp in out]
    # Joined, as in the text: a sentence counted alone pays for a space its neighbour absorbs.
    extra = max([await count(" ".join(sents) + " ") for sents, _ in docs], default=0)
    budget = length - extra
    for _ in range(6):
        if budget < 32:
            raise ValueError(
                f"length {length} leaves {budget} tokens of haystack for {extra} tokens of "
                "planted sentences; use a longer length or fewer sentences"
            )
        haystack = await prefix_with_tokens(book, budget, count)
        planted = []
        for sents, depths in docs:
            text, spans = scatter(haystack, sents, depths)
            planted.append(Planted(text, spans, await count(text)))
        over = max(p.tokens for p in planted) - length
        if over <= 0:
            return planted
        budget -= over
    raise ValueError(f"could not fit the planted documents within {length} tokens")


def book_text(book: str, start_marker: str, root: Path | None) -> str:
    """The book from its first chapter heading (the table of contents repeats it, indented)."""
    text = load_book(book, data_dir(root))
    start = text.find("\n" + start_marker + "\n")
    return text[start + 1 if start >= 0 else 0 :]


def _value(rng: random.Random, taken: set[str]) -> str:
    while True:
        v = str(rng.randint(1_000_000, 9_999_999))
        if v not in taken:
            taken.add(v)
            return v


@dataclass(frozen=True)
class Cell:
    """One document's needles (asked ones first), their depths, the question and gold."""

    needles: list[Needle]
    depths: list[float]
    question: str
    answers: tuple[str, ...]
    tags: dict[str, str | float]


def _cell(variant: Variant, rng: random.Random, depth: float, k: int) -> Cell:
    taken: set[str] = set()
    if variant == "single":
        n = Needle(rng.choice(CITIES), _value(rng, taken))
        return Cell([n], [depth], n.question, (n.value,), {})
    if variant == "paraphrase":
        say, ask = rng.choice(PARAPHRASES)
        n = Needle(rng.choice(NAMES), _value(rng, taken), say, ask)
        return Cell([n], [depth], n.question, (n.value,), {"paraphrase": say})
    if variant == "multi":
        keys = rng.sample(KEYS, k)
        needles = [Needle(key, _value(rng, taken)) for key in keys]
        listed = ", ".join(keys[:-1]) + f" and {keys[-1]}"
        question = f"What are the special magic numbers for {listed}? Give each number."
        depths = [(i + 0.5) / k for i in range(k)]
        tags: dict[str, str | float] = {"answer_format": "all", "n_needles": float(k)}
        return Cell(needles, depths, question, tuple(n.value for n in needles), tags)
    true = Needle(rng.choice(CITIES), _value(rng, taken))
    # Alternate near-miss keys and other cities, each used once before any repeats.
    near = [form.format(key=true.key) for form in rng.sample(NEAR_MISS, len(NEAR_MISS))]
    far = rng.sample([c for c in CITIES if c != true.key], len(CITIES) - 1)
    pool = [key for pair in zip_longest(near, far) for key in pair if key]
    fakes = [Needle(pool[i % len(pool)], _value(rng, taken)) for i in range(k - 1)]
    depths = [depth] + [rng.random() for _ in fakes]
    tags = {"n_distractors": float(len(fakes)),
            "distractor_values": json.dumps([f.value for f in fakes])}
    return Cell([true, *fakes], depths, true.question, (true.value,), tags)


async def build_needle_corpus(
    count: TokenCounter,
    *,
    lengths: Sequence[Length] = (2000, 4000, 8000),
    depths: Sequence[float] = (0.1, 0.5, 0.9),
    book: str = "les_miserables",
    start_marker: str = "BOOK FIRST—A JUST MAN",
    seed: int = 0,
    root: Path | None = None,
    variant: Variant = "single",
    n_needles: int | None = None,
) -> Corpus:
    """One document and one question per (length, depth) cell; multi: one per length."""
    k = check_needles(variant, n_needles)
    for d in depths:
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"depth {d} is outside 0..1")
    for n in lengths:
        if n != "full" and n < 64:
            raise ValueError(f"length {n} is too short for a haystack (minimum 64 tokens)")
    text = book_text(book, start_marker, root)
    rng = random.Random(seed)
    prefix = "needle" if variant == "single" else variant
    docs: dict[str, Document] = {}
    examples: list[Example] = []
    for length in lengths:
        cells = [0.5] if variant == "multi" else list(depths)
        drawn = [_cell(variant, rng, depth, k) for depth in cells]
        layout = [([n.sentence for n in c.needles], c.depths) for c in drawn]
        planted = await plant_all(text, length, layout, count)
        for depth, cell, doc in zip(cells, drawn, planted, strict=True):
            doc_id = f"{prefix}-{length}" + ("" if variant == "multi" else f"-{round(depth * 100):03d}")
            docs[doc_id] = Document(id=doc_id, text=doc.text)
            examples.append(_example(doc_id, variant, length, depth, cell, doc))
    params: dict[str, object] = {
        "builder": "needle",
        "lengths": list(lengths),
        "depths": list(depths),
        "book": book,
        "start_marker": start_marker,
        "seed": seed,
    }
    if variant != "single":  # the classic grid keeps its original params (and run ids)
        params |= {"variant": variant, "n_needles": k}
    return Corpus(name="needle" if variant == "single" else f"needle-{variant}",
                  documents=docs, examples=examples, params=params)


def _example(
    doc_id: str, variant: Variant, length: Length, depth: float, cell: Cell, doc: Planted
) -> Example:
    """The question of one planted document; its tags place it on the report's length x depth grid."""
    asked = doc.spans[: len(cell.answers)]  # the asked needles come first
    tags: dict[str, str | float] = {
        "task": "needle" if variant == "single" else f"needle-{variant}",
        "target_tokens": float(doc.tokens if length == "full" else length),
        "depth": float(depth),
        "doc_tokens": float(doc.tokens),
        # multi: the mean over its needles, as "depth" is the mean of their targets
        "actual_depth": round(sum(s for s, _ in asked) / len(asked) / max(len(doc.text), 1), 4),
        **cell.tags,
    }
    if length == "full":
        tags["length"] = "full"
    if variant == "multi":
        tags["depths"] = json.dumps([round(s / len(doc.text), 4) for s, _ in asked])
    # The asked needles' [start_char, end_char] (compare/analysis/strata.py measures context need).
    tags["evidence_spans"] = json.dumps([[s, e] for s, e in asked])
    tags["primary_metric"] = default_primary(tags)  # contains; multi: contains_all
    return Example(
        id=doc_id, doc_ids=(doc_id,), question=cell.question, answers=cell.answers,
        evidence=tuple(Span(doc_id, s, e) for s, e in asked), tags=tags,
    )


def check_needles(variant: Variant, n_needles: int | None) -> int:
    """The needle count a variant uses: exactly 1 for single/paraphrase, 2+ otherwise."""
    if variant in ("single", "paraphrase"):
        if n_needles not in (None, 1):
            raise ValueError(f"variant {variant!r} plants exactly one needle (got n_needles={n_needles})")
        return 1
    k = 4 if n_needles is None else n_needles
    if not 2 <= k <= len(KEYS):
        raise ValueError(f"variant {variant!r} needs n_needles between 2 and {len(KEYS)} (got {k})")
    return k


class NeedleCorpusSpec(Strict):
    kind: Literal["needle"] = "needle"
    lengths: list[TokenLength] = Field(default=[2000, 4000, 8000])
    depths: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default=[0.1, 0.5, 0.9])
    book: BookName = "les_miserables"
    seed: int = 0
    variant: Literal["single", "multi", "paraphrase", "distractor"] = "single"
    # multi: needles asked for; distractor: the true needle + (n_needles - 1) wrong ones.
    n_needles: Annotated[int, Field(ge=1, le=50)] | None = None

    @model_validator(mode="after")
    def _needles_fit_variant(self) -> NeedleCorpusSpec:
        k = self.n_needles
        if self.variant in ("single", "paraphrase") and k not in (None, 1):
            raise ValueError(f"variant {self.variant!r} plants exactly one needle (n_needles={k})")
        if self.variant in ("multi", "distractor") and k is not None and k < 2:
            raise ValueError(f"variant {self.variant!r} needs n_needles >= 2")
        return self

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave the classic grid's dump (hence its run id) as it was before the variants."""
        data: dict[str, Any] = handler(self)
        if data.get("variant") == "single":
            data.pop("variant")
        if data.get("n_needles") is None:
            data.pop("n_needles", None)
        return data


@register_corpus(NeedleCorpusSpec)
async def _build(cs: NeedleCorpusSpec, ctx: BuildContext) -> Corpus:
    return await build_needle_corpus(
        ctx.tokenize, lengths=cs.lengths, depths=cs.depths, book=cs.book, seed=cs.seed,
        root=ctx.data_dir, variant=cs.variant, n_needles=cs.n_needles,
    )

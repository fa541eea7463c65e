"""Aggregation over a real book: one fact planted N times, questions that need every copy.

Oolong-style counting is where top-k retrieval must fail: when a fact is stated at N places
and the question needs all of them ("how many times...", "list every...", "which came
first..."), a retriever that returns k < N chunks cannot see every copy, however good its
ranking. This corpus plants "a red umbrella" (a colour and an object drawn by the seed) at N
random, seeded places in a slice of a public-domain book, among distractors that share the
object or the colour ("a blue umbrella", "a red kite") at other places, so the question cannot
be answered by matching one word. N is swept (`counts`) so that N > top-k is included.

Questions and how each is scored (golds are exact, from the planted positions):
- count: "How many times ...?" gold the count; `count_match` (the first number the reply names),
  not `contains`, which would credit "3 of the 4 mentions";
- list: "At which of these places ...?" with lettered places (the N gold places and every
  distractor's place), gold the set of letters; `choice_set_match` (exactly the set; a reply
  listing every letter picks every letter and scores 0), `choice_set_f1` its partial credit;
- first: "Which of these places is the first where ...?" with the same letters, gold the place
  of the earliest planted copy (a distractor placed earlier is the trap); `choice_accuracy`;
- local, the control: "What colour is the umbrella mentioned near the harbour?" about ONE
  distractor, gold its colour (`contains`), stratum `local`: what RAG should answer at any N, so
  a run shows where retrieval breaks and where it does not (and a router has something to route).

Every example carries `evidence` (one Span per planted copy; the local control: its one
distractor), the tags `evidence_spans` (JSON [[start_char, end_char], ...] of the same, the key
the context-need measurement reads) and `stratum` ("aggregation"; the control "local"). The
document's length (a target in the served model's tokens, measured and recorded per example)
and the seed are in the spec and in the corpus params.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from compare.core.config import Strict
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus, Document, Example, Span, TokenCounter
from corpora.books import BookName, TokenLength
from corpora.needle import Length, book_text, plant_all

QuestionKind = Literal["count", "list", "first", "local"]
QUESTION_KINDS: tuple[QuestionKind, ...] = ("count", "list", "first", "local")
STRATUM = "aggregation"  # every question kind but the local control

COLOURS = ("red", "blue", "green", "yellow", "white", "purple", "black", "grey")  # no vowel: "a ..."
OBJECTS = ("umbrella", "bicycle", "kite", "lantern", "suitcase", "parrot", "violin", "wheelbarrow")
PLACES = (
    "bakery", "harbour", "chapel", "post office", "railway station", "market square", "library",
    "theatre", "tailor shop", "lighthouse", "orchard", "school gate", "fountain", "town hall",
    "windmill", "pharmacy", "museum", "barracks", "tannery", "observatory",
)
# Each says "a <colour> <object>" exactly once, so the target phrase counts its copies.
TEMPLATES = (
    "Someone had left a {thing} outside the {place}.",
    "That afternoon a {thing} was seen near the {place}.",
    "By the door of the {place} stood a {thing} that nobody claimed.",
)
MAX_COUNT = 12
MAX_DISTRACTORS = len(PLACES) - MAX_COUNT


@dataclass(frozen=True)
class Plan:
    """One document's planted sentences: the N target copies first, then the distractors."""

    thing: str
    places: list[str]  # gold places, in the order of `sentences`
    decoys: list[str]  # distractor places
    fakes: list[str]  # what each distractor names ("blue umbrella"), in the order of `decoys`
    sentences: list[str]
    depths: list[float]


def _plan(rng: random.Random, n: int, distractors: int) -> Plan:
    colour, obj = rng.choice(COLOURS), rng.choice(OBJECTS)
    places = rng.sample(PLACES, n + distractors)
    gold, decoys = places[:n], places[n:]
    other_colours = [c for c in COLOURS if c != colour]
    other_objects = [o for o in OBJECTS if o != obj]
    # Alternate the two kinds of near miss: same object in another colour, same colour on another object.
    fakes = [f"{rng.choice(other_colours)} {obj}" if i % 2 == 0 else f"{colour} {rng.choice(other_objects)}"
             for i in range(distractors)]
    thing = f"{colour} {obj}"
    sentences = [rng.choice(TEMPLATES).format(thing=thing, place=p) for p in gold]
    sentences += [rng.choice(TEMPLATES).format(thing=f, place=p) for f, p in zip(fakes, decoys, strict=True)]
    return Plan(thing, gold, decoys, fakes, sentences, [rng.random() for _ in sentences])


def mentions(text: str, thing: str) -> list[int]:
    """Where "a <thing>" is said in a text (case-insensitive, whole words): the count's truth."""
    return [m.start() for m in re.finditer(rf"\b{re.escape(thing)}\b", text, re.IGNORECASE)]


def _options(rng: random.Random, places: Sequence[str]) -> dict[str, str]:
    shuffled = rng.sample(list(places), len(places))
    return {letter: f"the {p}" for letter, p in zip(string.ascii_uppercase, shuffled, strict=False)}


def _listed(options: dict[str, str]) -> str:
    return " ".join(f"({k}) {v}" for k, v in options.items())


def _question(kind: QuestionKind, plan: Plan, spans: list[tuple[int, int]], options: dict[str, str]
              ) -> tuple[str, tuple[str, ...], dict[str, str | float], list[tuple[int, int]]]:
    """(question, golds, tags, evidence spans) of one question kind on one planted document
    (`spans`: every planted sentence's, the target copies first)."""
    thing = plan.thing
    n = len(plan.places)
    letter_of = {v: k for k, v in options.items()}
    if kind == "local":  # the control: one distractor, the same object in another colour
        colour, obj = plan.fakes[0].split()
        return (f"What colour is the {obj} mentioned near the {plan.decoys[0]}? Answer with the colour only.",
                (colour,), {"answer_format": "short", "primary_metric": "contains", "stratum": "local"},
                [spans[n]])
    if kind == "count":
        return (f"How many times is a {thing} mentioned in the text? Answer with the number only.",
                (str(n),), {"answer_format": "count", "primary_metric": "count_match"}, spans[:n])
    choices: dict[str, str | float] = {"choices": json.dumps(options)}
    if kind == "list":
        gold = "".join(sorted(letter_of[f"the {p}"] for p in plan.places))
        return (f"At which of these places is a {thing} mentioned in the text? {_listed(options)} "
                "Answer with the letters of every place that applies.",
                (gold,), {**choices, "answer_format": "letters", "primary_metric": "choice_set_match"},
                spans[:n])
    first = min(range(len(plan.places)), key=lambda i: spans[i][0])
    return (f"Which of these places is the first one where a {thing} is mentioned in the text? "
            f"{_listed(options)} Answer with one letter.",
            (letter_of[f"the {plan.places[first]}"],),
            {**choices, "answer_format": "letter", "primary_metric": "choice_accuracy"}, spans[:n])


async def build_aggregate_corpus(
    count: TokenCounter,
    *,
    length: Length = 2500,
    counts: Sequence[int] = (2, 4, 8),
    distractors: int = 4,
    questions: Sequence[QuestionKind] = QUESTION_KINDS,
    book: str = "les_miserables",
    start_marker: str = "BOOK FIRST—A JUST MAN",
    seed: int = 0,
    root: Path | None = None,
) -> Corpus:
    """One document per N in `counts` (all cut from the same book slice) and one question per kind."""
    if not counts or any(not 1 <= n <= MAX_COUNT for n in counts):
        raise ValueError(f"counts must be between 1 and {MAX_COUNT}, got {list(counts)}")
    if len(set(counts)) != len(counts):
        raise ValueError(f"counts must be distinct, got {list(counts)}")
    if not 0 <= distractors <= MAX_DISTRACTORS:
        raise ValueError(f"distractors must be between 0 and {MAX_DISTRACTORS}, got {distractors}")
    unknown = [q for q in questions if q not in QUESTION_KINDS]
    if not questions or unknown:
        raise ValueError(f"questions must be some of {list(QUESTION_KINDS)}, got {list(questions)}")
    if "local" in questions and distractors < 1:
        raise ValueError("the local control question asks about a distractor: needs distractors >= 1")
    rng = random.Random(seed)
    plans = [_plan(rng, n, distractors) for n in counts]
    planted = await plant_all(book_text(book, start_marker, root), length,
                              [(p.sentences, p.depths) for p in plans], count)
    docs: dict[str, Document] = {}
    examples: list[Example] = []
    for n, plan, doc in zip(counts, plans, planted, strict=True):
        spans = doc.spans[:n]
        found = mentions(doc.text, plan.thing)
        if len(found) != n or not all(any(s <= f < e for s, e in spans) for f in found):
            # The book itself says the phrase (or a distractor does): the gold count would be wrong.
            raise ValueError(f"the text mentions {plan.thing!r} {len(found)} times where {n} were "
                             "planted; try another seed")
        doc_id = f"aggregate-{n}"
        docs[doc_id] = Document(id=doc_id, text=doc.text)
        options = _options(rng, plan.places + plan.decoys)
        for kind in questions:
            question, golds, tags, evidence = _question(kind, plan, doc.spans, options)
            examples.append(Example(
                id=f"{doc_id}-{kind}", doc_ids=(doc_id,), question=question, answers=golds,
                evidence=tuple(Span(doc_id, s, e) for s, e in evidence),
                tags={"stratum": STRATUM, **tags, "task": f"aggregate-{kind}", "n_facts": float(n),
                      "target": plan.thing, "evidence_spans": json.dumps([list(s) for s in evidence]),
                      "target_tokens": float(doc.tokens if length == "full" else length),
                      "doc_tokens": float(doc.tokens), "n_distractors": float(distractors)},
            ))
    params: dict[str, object] = {
        "builder": "aggregate", "length": length, "counts": list(counts), "distractors": distractors,
        "questions": list(questions), "book": book, "start_marker": start_marker, "seed": seed,
    }
    return Corpus(name="aggregate", documents=docs, examples=examples, params=params)


class AggregateCorpusSpec(Strict):
    kind: Literal["aggregate"] = "aggregate"
    length: TokenLength = 2500  # the document's length in the served model's tokens (or "full")
    counts: list[Annotated[int, Field(ge=1, le=MAX_COUNT)]] = Field(default=[2, 4, 8], min_length=1)
    distractors: Annotated[int, Field(ge=0, le=MAX_DISTRACTORS)] = 4
    questions: list[QuestionKind] = Field(default=list(QUESTION_KINDS), min_length=1)
    book: BookName = "les_miserables"
    seed: int = 0


@register_corpus(AggregateCorpusSpec)
async def _build(cs: AggregateCorpusSpec, ctx: BuildContext) -> Corpus:
    return await build_aggregate_corpus(
        ctx.tokenize, length=cs.length, counts=cs.counts, distractors=cs.distractors,
        questions=cs.questions, book=cs.book, seed=cs.seed, root=ctx.data_dir,
    )

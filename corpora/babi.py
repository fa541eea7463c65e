"""Planted facts, BABILong-style: a bAbI story's sentences scattered through a long book.

The question can only be answered by finding the story's facts among hundreds of pages of
unrelated prose, and for tasks 2 and 3 by combining two or three of them far apart: the
multi-hop case a single needle never tests. bAbI gives exact gold answers and says which
facts support them, so the evidence spans (where those facts landed) are exact too.

Format (../shared/data/babi/en/qaN_*_{train,test}.txt): numbered lines; numbering restarts
at 1 for each story; a question line is `N question<SEP>answer<SEP>supporting ids` where SEP
is a tab (as bAbI's README says) except in this copy of qa1, which uses "|".

Each story is used once, with its LAST question, whose context is every fact of the story:
an earlier question's answer may be changed by facts told after it (Mary moves on).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from compare.core.config import Strict
from compare.core.metrics import SHORT_ANSWER
from compare.core.protocols import BuildContext
from compare.core.registry import register_corpus
from compare.core.types import Corpus, Document, Example, Span, TokenCounter
from corpora.books import BookName, TokenLength, data_dir
from corpora.needle import Length, book_text, plant_all, prefix_with_tokens

Split = Literal["test", "train"]
_QUESTION = re.compile(r"^(?P<q>[^\t|]+?)\s*[\t|]\s*(?P<a>[^\t|]+?)\s*[\t|]\s*(?P<ids>[\d ]+)\s*$")


@dataclass(frozen=True)
class Story:
    """One bAbI story up to one of its questions."""

    task: int
    index: int  # the story's position in its file
    line: int  # 1-based line of the question in the file
    facts: tuple[str, ...]
    question: str
    answer: str
    supporting: tuple[int, ...]  # indexes into facts


def task_file(root: Path, task: int, split: Split) -> Path:
    found = sorted((root / "babi" / "en").glob(f"qa{task}_*_{split}.txt"))
    if not found:
        raise FileNotFoundError(
            f"bAbI task {task} ({split}) not found under {root / 'babi' / 'en'}; "
            "set --data-dir or RAGVSLC_DATA to the data directory"
        )
    return found[0]


def parse_babi(path: Path, task: int) -> list[Story]:
    """Every question of the file, each with the facts of its story told before it."""
    stories: list[Story] = []
    facts: list[str] = []
    by_id: dict[int, int] = {}
    index = -1
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        num, _, rest = raw.partition(" ")
        if not num.isdigit() or not rest:
            raise ValueError(f"{path}:{n}: expected 'N text', got {raw!r}")
        if int(num) == 1:
            facts, by_id, index = [], {}, index + 1
        m = _QUESTION.match(rest)
        if m is None:
            if "\t" in rest or "|" in rest:
                raise ValueError(f"{path}:{n}: malformed question line {raw!r}")
            by_id[int(num)] = len(facts)
            facts.append(rest.strip())
            continue
        ids = [int(i) for i in m.group("ids").split()]
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ValueError(f"{path}:{n}: supporting fact ids {unknown} are not facts of this story")
        stories.append(
            Story(task, index, n, tuple(facts), m.group("q"), m.group("a"), tuple(by_id[i] for i in ids))
        )
    return stories


def last_questions(stories: Sequence[Story]) -> list[Story]:
    """Each story's final question (its facts are then the whole story)."""
    last: dict[int, Story] = {}
    for s in stories:
        last[s.index] = s
    return [last[i] for i in sorted(last)]


async def build_babi_corpus(
    count: TokenCounter,
    *,
    tasks: Sequence[int] = (1, 2, 3),
    lengths: Sequence[Length] = (4000,),
    n_stories: int = 5,
    seed: int = 0,
    split: Split = "test",
    book: str = "les_miserables",
    start_marker: str = "BOOK FIRST—A JUST MAN",
    root: Path | None = None,
) -> Corpus:
    """n_stories per task, each planted at every length (same relative positions at each)."""
    if n_stories < 1:
        raise ValueError("n_stories must be at least 1")
    root = data_dir(root)
    text = book_text(book, start_marker, root)
    chosen: list[tuple[Story, list[float]]] = []
    for task in tasks:
        pool = last_questions(parse_babi(task_file(root, task, split), task))
        rng = random.Random(seed * 1000 + task)
        picked = sorted(rng.sample(pool, min(n_stories, len(pool))), key=lambda s: s.index)
        # Depths drawn once per story so a length sweep moves only the amount of prose.
        chosen += [(s, sorted(rng.random() for _ in s.facts)) for s in picked]
    docs: dict[str, Document] = {}
    examples: list[Example] = []
    for length in lengths:
        # Fitted per story (a qa3 story is ~10x a qa1 one), searched within one haystack per length.
        top = text if length == "full" else await prefix_with_tokens(text, length, count)
        planted = [(await plant_all(top, length, [(s.facts, d)], count))[0] for s, d in chosen]
        for (story, _), doc in zip(chosen, planted, strict=True):
            doc_id = f"babi-qa{story.task}-s{story.index:03d}-{length}"
            docs[doc_id] = Document(id=doc_id, text=doc.text)
            support = [doc.spans[i] for i in story.supporting]
            where = [round(s / len(doc.text), 4) for s, _ in support]
            tags: dict[str, str | float] = {
                "task": f"babi-qa{story.task}",
                "target_tokens": float(doc.tokens if length == "full" else length),
                "doc_tokens": float(doc.tokens),
                "n_facts": float(len(story.facts)),
                "n_supporting": float(len(support)),
                # Positions are random, not a grid: no "depth" tag, so no depth heatmap.
                "first_fact_depth": min(where),
                "supporting_depths": json.dumps(where),
                # Where each supporting fact landed, [start_char, end_char]: what the context-need
                # measurement reads (compare/analysis/strata.py), the same key for every corpus.
                "evidence_spans": json.dumps([[s, e] for s, e in support]),
                "story": f"{split}:{story.index}",
                "primary_metric": SHORT_ANSWER,  # one word or a yes/no
            }
            if length == "full":
                tags["length"] = "full"
            examples.append(
                Example(
                    id=doc_id, doc_ids=(doc_id,), question=story.question, answers=(story.answer,),
                    evidence=tuple(Span(doc_id, s, e) for s, e in support), tags=tags,
                )
            )
    params: dict[str, object] = {
        "builder": "babi", "tasks": list(tasks), "lengths": list(lengths), "n_stories": n_stories,
        "seed": seed, "split": split, "book": book, "start_marker": start_marker,
    }
    return Corpus(name="babi", documents=docs, examples=examples, params=params)


class BabiCorpusSpec(Strict):
    kind: Literal["babi"] = "babi"
    tasks: list[Annotated[int, Field(ge=1, le=20)]] = Field(default=[1, 2, 3], min_length=1)
    lengths: list[TokenLength] = Field(default=[4000])
    n_stories: Annotated[int, Field(ge=1, le=1000)] = 5
    seed: int = 0
    split: Literal["test", "train"] = "test"
    book: BookName = "les_miserables"


@register_corpus(BabiCorpusSpec)
async def _build(cs: BabiCorpusSpec, ctx: BuildContext) -> Corpus:
    return await build_babi_corpus(
        ctx.tokenize, tasks=cs.tasks, lengths=cs.lengths, n_stories=cs.n_stories,
        seed=cs.seed, split=cs.split, book=cs.book, root=ctx.data_dir,
    )

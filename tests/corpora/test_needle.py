"""The needle builder: token-exact lengths with the served model's tokenizer, depth placement."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from corpora.books import data_dir, load_book
from corpora.needle import build_needle_corpus, plant, sentence_bounds

pytestmark = pytest.mark.slow  # needs the converted model's tokenizer


@pytest.fixture(scope="module")
def count(hf_tokenizer: Any) -> Callable[[str], Awaitable[int]]:
    async def _count(text: str) -> int:
        return len(hf_tokenizer(text, add_special_tokens=False).input_ids)

    return _count


async def test_grid_lengths_depths_and_evidence(count: Callable[[str], Awaitable[int]]) -> None:
    corpus = await build_needle_corpus(count, lengths=(300, 1000), depths=(0.0, 0.5, 1.0), seed=7)
    assert len(corpus.examples) == 6 and len(corpus.documents) == 6
    for ex in corpus.examples:
        doc = corpus.documents[ex.doc_ids[0]].text
        target, depth = float(ex.tags["target_tokens"]), float(ex.tags["depth"])
        measured = await count(doc)
        assert measured == ex.tags["doc_tokens"]
        # at most the target, and short of it by less than one sentence of prose
        assert target - 120 <= measured <= target
        (span,) = ex.evidence
        needle = doc[int(span.start) : int(span.end)]
        assert needle.startswith("The special magic number for ") and ex.answers[0] in needle
        assert ex.question.split(" for ")[1].rstrip("?") in needle
        assert abs(float(ex.tags["actual_depth"]) - depth) < 0.12
    again = await build_needle_corpus(count, lengths=(300, 1000), depths=(0.0, 0.5, 1.0), seed=7)
    assert [e.answers for e in again.examples] == [e.answers for e in corpus.examples]


async def test_same_length_shares_haystack_prefix(count: Callable[[str], Awaitable[int]]) -> None:
    corpus = await build_needle_corpus(count, lengths=(800,), depths=(0.25, 0.75))
    a, b = (corpus.documents[e.doc_ids[0]].text for e in corpus.examples)
    first = int(corpus.examples[0].evidence[0].start)
    assert a[:first] == b[:first]  # what a prefix cache can reuse across depths


def test_plant_at_sentence_boundary() -> None:
    hay = "One fish. Two fish! Red fish? Blue fish."
    text, at = plant(hay, "NEEDLE.", 0.5)
    assert at in sentence_bounds(hay) and text[at:].startswith("NEEDLE. ")
    assert text.replace("NEEDLE. ", "") == hay
    assert plant(hay, "N.", 0.0) == ("N. " + hay, 0)


def test_book_is_clean() -> None:
    text = load_book("les_miserables", data_dir())
    assert "\r" not in text and "PROJECT GUTENBERG" not in text[:2000].upper()
    assert "Myriel" in text[:200_000]
    wp = load_book("war_and_peace", data_dir())
    assert "Anna Pávlovna" in wp[:20_000]

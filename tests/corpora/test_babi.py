"""bAbI parsing on the real files; planted facts placed exactly, in order, within the length."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from compare.run.spec import BabiCorpusSpec, validate_spec
from corpora.babi import build_babi_corpus, last_questions, parse_babi, task_file
from corpora.books import data_dir

Count = Callable[[str], Awaitable[int]]


@pytest.fixture(scope="module")
def count(hf_tokenizer: Any) -> Count:
    async def _count(text: str) -> int:
        return len(hf_tokenizer(text, add_special_tokens=False).input_ids)

    return _count


@pytest.mark.parametrize("task,n_support", [(1, 1), (2, 2), (3, 3)])
def test_real_tasks_parse(task: int, n_support: int) -> None:
    questions = parse_babi(task_file(data_dir(), task, "test"), task)
    stories = last_questions(questions)
    assert len(questions) == 1000 and len(stories) == 200
    assert {len(s.supporting) for s in stories} == {n_support}
    assert all(s.answer and s.question.endswith("?") for s in stories)


def test_first_stories_match_the_file() -> None:
    """qa1 separates with "|" in this copy, qa2 with tabs: both give the same structure."""
    q1 = parse_babi(task_file(data_dir(), 1, "train"), 1)[0]
    assert (q1.question, q1.answer, q1.facts) == (
        "Where is Mary?", "bathroom", ("Mary moved to the bathroom.", "John went to the hallway."),
    )
    assert q1.supporting == (0,) and q1.line == 3
    s = last_questions(parse_babi(task_file(data_dir(), 2, "test"), 2))[0]
    assert (s.question, s.answer) == ("Where is the milk?", "garden")
    assert [s.facts[i] for i in s.supporting] == ["Mary discarded the milk.", "Mary went to the garden."]


def test_all_twenty_tasks_parse() -> None:
    for task in range(1, 21):
        stories = parse_babi(task_file(data_dir(), task, "test"), task)
        assert len(stories) == 1000
        assert all(0 <= i < len(s.facts) for s in stories for i in s.supporting)


def test_malformed_file_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "qa1_x_test.txt"
    bad.write_text("1 Mary went home.\n2 Where is Mary?\thome\t7\n")
    with pytest.raises(ValueError, match=r"qa1_x_test\.txt:2: supporting fact ids \[7\]"):
        parse_babi(bad, 1)
    bad.write_text("1 Mary went home.\nWhere is Mary?\thome\t1\n")
    with pytest.raises(ValueError, match=r"qa1_x_test\.txt:2: expected 'N text'"):
        parse_babi(bad, 1)


def test_spec_kind_babi() -> None:
    spec = validate_spec({"corpus": {"kind": "babi", "tasks": [2], "lengths": [8000, "full"]}})
    assert isinstance(spec.corpus, BabiCorpusSpec) and spec.corpus.lengths == [8000, "full"]


@pytest.mark.slow
async def test_planted_facts_exact_in_order_and_within_length(count: Count) -> None:
    lengths = (2600, 5000)
    corpus = await build_babi_corpus(count, tasks=(1, 2, 3), lengths=lengths, n_stories=2, seed=3)
    assert len(corpus.examples) == 3 * 2 * 2
    stories = {
        t: {s.index: s for s in last_questions(parse_babi(task_file(data_dir(), t, "test"), t))}
        for t in (1, 2, 3)
    }
    depths: dict[str, list[float]] = {}
    for ex in corpus.examples:
        task = int(str(ex.tags["task"]).removeprefix("babi-qa"))
        story = stories[task][int(str(ex.tags["story"]).split(":")[1])]
        doc = corpus.documents[ex.doc_ids[0]].text
        assert ex.question == story.question and ex.answers == (story.answer,)
        target = float(ex.tags["target_tokens"])
        assert target - 200 <= await count(doc) == float(ex.tags["doc_tokens"]) <= target
        # evidence spans hold exactly the supporting facts, in story order
        assert [doc[int(s.start) : int(s.end)] for s in ex.evidence] == [
            story.facts[i] for i in story.supporting
        ]
        # every fact of the story is in the document, in order
        pos = -1
        for fact in story.facts:
            pos = doc.index(fact, pos + 1)
        assert len(ex.evidence) == task and ex.tags["n_facts"] == len(story.facts)
        key = f"{task}:{story.index}"  # relative positions repeat across lengths
        where = json.loads(str(ex.tags["supporting_depths"]))
        assert ex.tags["first_fact_depth"] == min(where) and "depth" not in ex.tags
        first = depths.setdefault(key, where)
        assert all(abs(a - b) < 0.1 for a, b in zip(first, where, strict=True))
    assert len(depths) == 6
    again = await build_babi_corpus(count, tasks=(1, 2, 3), lengths=lengths, n_stories=2, seed=3)
    assert again.examples == corpus.examples


@pytest.mark.slow
async def test_full_book_as_one_document(count: Count) -> None:
    corpus = await build_babi_corpus(count, tasks=(2,), lengths=("full",), n_stories=1)
    (ex,) = corpus.examples
    doc = corpus.documents[ex.doc_ids[0]].text
    assert ex.id.endswith("-full") and ex.tags["length"] == "full"
    assert float(ex.tags["doc_tokens"]) == float(ex.tags["target_tokens"]) > 700_000
    assert len(doc) > 3_000_000 and "Myriel" in doc and "Jean Valjean" in doc[-200_000:]
    facts = [doc[int(s.start) : int(s.end)] for s in ex.evidence]
    assert len(facts) == 2 and all(f.endswith(".") for f in facts)

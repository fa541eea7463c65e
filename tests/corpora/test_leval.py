"""L-Eval loaders on the real files: counts, answer formats, choices, and their metrics."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from compare.core.metrics import METRICS, chosen_letter
from compare.core.types import Completion, Prediction
from compare.run.spec import LevalCorpusSpec, validate_spec
from corpora.books import data_dir
from corpora.jsonl import load_jsonl_dir, with_doc_tokens
from corpora.leval import EXPECTED_FORMAT, SUBSETS, classify, load_leval, parse_choices

# From ../shared/data/README.md: documents, questions.
COUNTS = {
    "quality": (15, 202), "sci_fi": (7, 64), "tpo": (15, 269), "natural_question": (21, 109),
    "financial_qa": (8, 68), "multidoc_qa": (23, 158), "topic_retrieval_longchat": (50, 150),
}


def _pred(text: str) -> Prediction:
    return Prediction(text, Completion(text, 1, 0, 1, 0.1, 0.1, ()), 10)


@pytest.mark.parametrize("subset", SUBSETS)
def test_counts_and_formats_match_the_data(subset: str) -> None:
    corpus = load_leval(subset)  # type: ignore[arg-type]
    assert (len(corpus.documents), len(corpus.examples)) == COUNTS[subset]
    assert {ex.tags["answer_format"] for ex in corpus.examples} == {EXPECTED_FORMAT[subset]}
    assert all(ex.tags["task"] == subset and ex.answers[0] for ex in corpus.examples)
    assert next(iter(corpus.documents)) == f"leval-{subset}-000"


def test_quality_choices_parse_to_the_gold_text() -> None:
    """The gold output repeats its choice's text: the parsed choice must equal it."""
    path = data_dir() / "leval" / "quality.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    corpus = load_leval("quality")
    outputs = [o for r in rows for o in r["outputs"]]
    for ex, out in zip(corpus.examples, outputs, strict=True):
        choices = json.loads(str(ex.tags["choices"]))
        assert list(choices) == ["A", "B", "C", "D"]
        letter = ex.answers[0]
        assert out.startswith(f"({letter})")
        assert choices[letter] == " ".join(out[3:].split())
        assert "(A)" in ex.question and "(D)" in ex.question  # the model sees the choices


def test_tpo_letters_and_sci_fi_labels() -> None:
    tpo = load_leval("tpo")
    assert Counter(ex.answers[0] for ex in tpo.examples) == {"C": 81, "D": 74, "B": 67, "A": 47}
    first = json.loads(str(tpo.examples[0].tags["choices"]))
    assert first["A"] == "to study human form and movement"
    sci = load_leval("sci_fi")
    assert Counter(ex.answers for ex in sci.examples) == {("True",): 33, ("False",): 31}
    ex = sci.examples[0]  # "True [fact: False]": the document's world says True
    assert ex.answers == ("True",) and ex.tags["fact"] == "False"
    assert all("true or false" in e.question.lower() for e in sci.examples)


def test_limits_keep_ids_stable() -> None:
    full = load_leval("natural_question")
    small = load_leval("natural_question", max_docs=2, max_questions_per_doc=3)
    assert len(small.documents) == 2 and len(small.examples) <= 6
    by_id = {ex.id: ex for ex in full.examples}
    for ex in small.examples:
        assert by_id[ex.id] == ex
    assert small.examples[0].id == "leval-natural_question-000-q000"
    assert small.examples[0].answers == ("April 25 , 2018",)


def test_generic_import_of_a_real_leval_file_matches_the_loader() -> None:
    path = data_dir() / "leval" / "tpo.jsonl"
    imported = load_jsonl_dir(path)
    loaded = load_leval("tpo")
    assert imported.name == "tpo" and len(imported.examples) == len(loaded.examples)
    assert [(e.question, e.answers) for e in imported.examples] == [
        (e.question, e.answers) for e in loaded.examples
    ]


def test_parse_choices_needs_consecutive_letters() -> None:
    assert parse_choices("Q?\nA. one\nB. two") == {"A": "one", "B": "two"}
    assert parse_choices("Q?\n (A) one\n (B) two\n") == {"A": "one", "B": "two"}
    assert parse_choices("Q?\nB. two\nC. three") == {}
    assert parse_choices("Plain question?") == {}
    assert classify("Q?\nA. x\nB. y", "y") == (("B",), {"answer_format": "letter",
                                                        "choices": '{"A": "x", "B": "y"}'})


def test_choice_accuracy_reads_the_letter() -> None:
    ex = load_leval("quality", max_docs=1, max_questions_per_doc=1).examples[0]
    assert ex.answers == ("B",)
    acc = METRICS["choice_accuracy"]
    for reply in ("(B)", "B.", "Answer: B", "B) Their subconscious", "B", "The answer is (B)."):
        assert acc(ex, _pred(reply)) == 1.0, reply
    for reply in ("(A)", "C.", "I am not sure", "A man"):
        assert acc(ex, _pred(reply)) == 0.0, reply
    text = "Their subconscious knew that Korvin was an insoluble problem."
    assert acc(ex, _pred(text)) == 1.0  # the choice's own words, without the letter
    assert acc(ex, Prediction("", None, 0, error="x")) is None
    free = load_leval("natural_question", max_docs=1, max_questions_per_doc=1).examples[0]
    assert acc(free, _pred("B")) is None and METRICS["true_false"](free, _pred("True")) is None
    choices = {"A": "x", "B": "y"}
    assert chosen_letter("A", choices) == "A" and chosen_letter("a", choices) is None


def test_true_false_and_free_text_metrics() -> None:
    sci = load_leval("sci_fi", max_docs=1, max_questions_per_doc=3).examples
    tf = METRICS["true_false"]
    assert [e.answers[0] for e in sci] == ["True", "True", "False"]
    assert tf(sci[0], _pred("True.")) == 1.0 and tf(sci[0], _pred("false")) == 0.0
    assert tf(sci[2], _pred("It is false, not true")) == 1.0  # the first label counts
    assert tf(sci[0], _pred("Maybe")) == 0.0
    assert METRICS["choice_accuracy"](sci[0], _pred("True")) is None
    nq = load_leval("natural_question", max_docs=1, max_questions_per_doc=1).examples[0]
    assert METRICS["exact_match"](nq, _pred("April 25, 2018")) == 1.0
    assert 0 < (METRICS["token_f1"](nq, _pred("It started April 25")) or 0) < 1


def test_spec_kind_leval() -> None:
    spec = validate_spec({"corpus": {"kind": "leval", "subset": "tpo", "max_docs": 2}})
    assert isinstance(spec.corpus, LevalCorpusSpec) and spec.corpus.max_docs == 2


@pytest.mark.slow
async def test_doc_tokens_measured_with_the_model_tokenizer(hf_tokenizer: Any) -> None:
    async def count(text: str) -> int:
        return len(hf_tokenizer(text, add_special_tokens=False).input_ids)

    corpus = await with_doc_tokens(load_leval("quality", max_docs=2, max_questions_per_doc=2), count)
    first = corpus.examples[0]
    assert first.tags["doc_tokens"] == await count(corpus.documents[first.doc_ids[0]].text)
    assert 6000 < float(first.tags["doc_tokens"]) < 7000  # DESIGN.md: the first QuALITY doc is 6.4k
    assert {e.tags["doc_tokens"] for e in corpus.examples[:2]} == {first.tags["doc_tokens"]}

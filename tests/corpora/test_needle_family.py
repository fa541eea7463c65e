"""The needle family: multi-needle recall, paraphrased questions, distractors, the full book."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from compare.core.metrics import METRICS
from compare.core.types import Completion, Example, Prediction
from compare.run.spec import NeedleCorpusSpec, RunSpec, SpecError, validate_spec
from corpora.needle import (
    CITIES,
    NAMES,
    PARAPHRASES,
    build_needle_corpus,
    check_needles,
    scatter,
    sentence_bounds,
)

Count = Callable[[str], Awaitable[int]]
_STOP = {
    "the", "a", "an", "is", "was", "of", "for", "to", "at", "on", "by", "with", "that", "which",
    "what", "who", "s", "be", "will", "uses", "belonging", "belongs",
}


@pytest.fixture(scope="module")
def count(hf_tokenizer: Any) -> Count:
    async def _count(text: str) -> int:
        return len(hf_tokenizer(text, add_special_tokens=False).input_ids)

    return _count


def _pred(text: str) -> Prediction:
    return Prediction(text, Completion(text, 1, 0, 1, 0.1, 0.1, ()), 10)


def _stems(text: str) -> set[str]:
    """Content words cut to 4 letters, so seat/seats or open/opens count as shared."""
    return {w[:4] for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP}


def test_paraphrases_share_no_key_words() -> None:
    for say, ask in PARAPHRASES:
        needle = _stems(say.format(key="", value=""))
        question = _stems(ask.format(key=""))
        assert not needle & question, (say, ask, needle & question)
        assert not {"spec", "magi", "numb"} & question


def test_scatter_keeps_order_and_exact_spans() -> None:
    hay = "One fish. Two fish! Red fish? Blue fish."
    text, spans = scatter(hay, ["X1.", "X2.", "X3.", "X4."], [0.0, 0.5, 0.5, 1.0])
    assert [text[s:e] for s, e in spans] == ["X1.", "X2.", "X3.", "X4."]
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    assert re.sub(r"X\d\. ?", "", text).strip() == hay
    assert text.endswith("Blue fish. X4.")
    bounds = sentence_bounds("He met M. Myriel. Then Mr. Smith left.")
    assert bounds == [0, 18]  # titles are not sentence ends


def test_needle_counts_per_variant() -> None:
    assert check_needles("single", None) == 1 and check_needles("multi", None) == 4
    assert check_needles("distractor", 6) == 6
    for variant, k in (("single", 2), ("paraphrase", 3), ("multi", 1), ("multi", 51)):
        with pytest.raises(ValueError, match="n_needles"):
            check_needles(variant, k)  # type: ignore[arg-type]


def test_contains_all_scores_the_fraction_recalled() -> None:
    ex = Example("m", ("d",), "q", ("1111111", "2222222", "3333333", "4444444"),
                 tags={"answer_format": "all"})
    f = METRICS["contains_all"]
    assert f(ex, _pred("Lisbon: 1111111, Oslo: 2222222, Lima 3333333 and 4444444.")) == 1.0
    assert f(ex, _pred("1111111 and 3333333")) == 0.5
    assert f(ex, _pred("11111112")) == 0.0 and f(ex, _pred("")) == 0.0
    assert f(ex, Prediction("", None, 0, error="x")) is None
    single = Example("s", ("d",), "q", ("1111111",))
    assert f(single, _pred("1111111")) is None  # not a multi-value example
    # "any answer counts" metrics would credit one value of four: they stand aside
    assert METRICS["contains"](ex, _pred("1111111")) is None
    assert METRICS["exact_match"](ex, _pred("1111111")) is None
    assert METRICS["token_f1"](ex, _pred("1111111")) is None


def test_spec_variants_and_stable_classic_run_id() -> None:
    spec = validate_spec({"corpus": {"variant": "multi", "n_needles": 8, "lengths": [4000, "full"]}})
    assert isinstance(spec.corpus, NeedleCorpusSpec) and spec.corpus.n_needles == 8
    with pytest.raises(SpecError, match="exactly one needle"):
        validate_spec({"corpus": {"variant": "paraphrase", "n_needles": 2}})
    with pytest.raises(SpecError, match="n_needles >= 2"):
        validate_spec({"corpus": {"variant": "distractor", "n_needles": 1}})
    assert "variant" not in RunSpec().model_dump()["corpus"]  # old runs keep their ids
    assert RunSpec().run_id() == validate_spec({"corpus": {"variant": "single"}}).run_id()


@pytest.mark.slow
async def test_multi_needle_document(count: Count) -> None:
    corpus = await build_needle_corpus(count, lengths=(1500, 3000), variant="multi", n_needles=5, seed=2)
    assert [e.id for e in corpus.examples] == ["multi-1500", "multi-3000"]
    for ex in corpus.examples:
        doc = corpus.documents[ex.doc_ids[0]].text
        assert await count(doc) == float(ex.tags["doc_tokens"]) <= float(ex.tags["target_tokens"])
        assert len(ex.answers) == len(set(ex.answers)) == 5 == len(ex.evidence)
        assert ex.tags["answer_format"] == "all" and ex.tags["n_needles"] == 5
        for value, span in zip(ex.answers, ex.evidence, strict=True):
            needle = doc[int(span.start) : int(span.end)]
            key = needle.removeprefix("The special magic number for ").split(" is ")[0]
            assert needle.endswith(f" is {value}.") and key in ex.question
        starts = [s.start for s in ex.evidence]
        assert starts == sorted(starts)
        assert [round(d, 1) for d in json.loads(str(ex.tags["depths"]))] == [0.1, 0.3, 0.5, 0.7, 0.9]
        reply = " ".join(ex.answers[:3])
        assert METRICS["contains_all"](ex, _pred(reply)) == 0.6


@pytest.mark.slow
async def test_paraphrase_variant(count: Count) -> None:
    corpus = await build_needle_corpus(count, lengths=(800,), depths=(0.2, 0.8), variant="paraphrase", seed=5)
    for ex in corpus.examples:
        doc = corpus.documents[ex.doc_ids[0]].text
        (span,) = ex.evidence
        needle = doc[int(span.start) : int(span.end)]
        key = next(n for n in NAMES if n in ex.question)
        assert ex.answers[0] in needle and key in needle
        assert "magic" not in needle and "magic" not in ex.question
        assert not _stems(needle.replace(key, "")) & _stems(ex.question.replace(key, ""))
        assert ex.id.startswith("paraphrase-800-") and ex.tags["task"] == "needle-paraphrase"


@pytest.mark.slow
async def test_distractor_variant(count: Count) -> None:
    corpus = await build_needle_corpus(
        count, lengths=(1200,), depths=(0.5,), variant="distractor", n_needles=5, seed=1
    )
    (ex,) = corpus.examples
    doc = corpus.documents[ex.doc_ids[0]].text
    (span,) = ex.evidence
    key = ex.question.removeprefix("What is the special magic number for ").rstrip("?")
    assert key in CITIES
    assert doc[int(span.start) : int(span.end)] == f"The special magic number for {key} is {ex.answers[0]}."
    wrong = json.loads(str(ex.tags["distractor_values"]))
    assert len(wrong) == 4 and ex.answers[0] not in wrong
    planted = re.findall(r"The special magic number for ([A-Z][\w ]*?) is (\d{7})\.", doc)
    assert len(planted) == 5 and sorted(v for _, v in planted) == sorted([*wrong, ex.answers[0]])
    near = [k for k, _ in planted if k != key and key in k]  # "New Lisbon", "Lisbon Harbour"...
    assert near and all(k != key for k, v in planted if v in wrong)
    assert await count(doc) <= 1200


@pytest.mark.slow
async def test_full_book_needle(count: Count) -> None:
    corpus = await build_needle_corpus(count, lengths=("full",), depths=(0.5,))
    (ex,) = corpus.examples
    doc = corpus.documents[ex.doc_ids[0]].text
    assert ex.id == "needle-full-050" and ex.tags["length"] == "full"
    assert float(ex.tags["doc_tokens"]) == float(ex.tags["target_tokens"]) > 700_000
    (span,) = ex.evidence
    assert doc[int(span.start) : int(span.end)].endswith(f" is {ex.answers[0]}.")
    assert 0.45 < float(ex.tags["actual_depth"]) < 0.55

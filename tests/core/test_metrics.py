"""Quality metrics (pure functions); run-spec validation is in tests/run/test_spec.py."""

from __future__ import annotations

import pytest

from compare.core.metrics import METRICS, normalize, resolve, score
from compare.core.types import Completion, Example, Prediction, Span

EX = Example("e", ("d",), "q", ("4827163",), (Span("d", 100, 150),))


def _pred(text: str, retrieved: tuple[Span, ...] = ()) -> Prediction:
    return Prediction(text, Completion(text, 1, 0, 1, 0.1, 0.1, ()), 10, retrieved)


def test_answer_metrics() -> None:
    m = resolve(["exact_match", "contains", "token_f1"])
    assert score(m, EX, _pred("4827163.")) == {"exact_match": 1.0, "contains": 1.0, "token_f1": 1.0}
    chatty = score(m, EX, _pred("The special magic number is 4827163."))
    assert chatty["exact_match"] == 0.0 and chatty["contains"] == 1.0
    assert 0.0 < (chatty["token_f1"] or 0) < 1.0
    assert score(m, EX, _pred("48271634"))["contains"] == 0.0  # no partial-number credit
    failed = Prediction("", None, 0, error="x")
    assert score(m, EX, failed) == {"exact_match": None, "contains": None, "token_f1": None}
    assert normalize("The  Answer, an apple!") == "answer apple"


def test_evidence_recall_by_span_overlap() -> None:
    f = METRICS["evidence_recall"]
    assert f(EX, _pred("x", (Span("d", 0, 120),))) == 1.0
    assert f(EX, _pred("x", (Span("d", 150, 300),))) == 0.0  # touching is not overlapping
    assert f(EX, _pred("x", (Span("other", 0, 500),))) == 0.0
    assert f(EX, _pred("x")) is None  # long context retrieves nothing: not applicable


def test_unknown_metric_named() -> None:
    with pytest.raises(ValueError, match="bogus"):
        resolve(["bogus"])


# metric defects (issue 14, item 6): each value below is worked out by hand ----------------------
def _ex(*answers: str, **tags: str | float) -> Example:
    return Example("e", ("d",), "q", answers, (), tags)


def test_exact_match_never_credits_an_empty_reply() -> None:
    em = METRICS["exact_match"]
    # "A" and "The" are all article: SQuAD normalisation leaves "", so "" == "" used to score 1.
    for gold in ("A", "The"):
        assert em(_ex(gold), _pred("")) == 0.0, gold
        assert em(_ex(gold), _pred(f"{gold}.")) == 1.0, gold  # compared by case and punctuation only
        assert em(_ex(gold), _pred("B")) == 0.0, gold
    assert em(_ex("..."), _pred("")) is None  # a gold with no characters to compare: not applicable


def test_decimal_point_is_kept() -> None:
    em, f1 = METRICS["exact_match"], METRICS["token_f1"]
    assert normalize("3.5") == "3.5" and normalize("35") == "35"
    assert em(_ex("3.5"), _pred("35")) == 0.0
    assert em(_ex("3.5"), _pred("3.5.")) == 1.0  # the full stop after the number still goes
    assert f1(_ex("3.5 kg"), _pred("35 kg")) == 0.5  # 1 of 2 tokens in common: p = r = 1/2
    assert normalize("1,000 francs") == "1000 francs"  # thousands separators still go


def test_unicode_quotes_and_dashes_are_punctuation() -> None:
    assert normalize("“Cosette”") == "cosette"
    assert normalize("don’t") == normalize("don't") == "dont"
    assert normalize("Paris—the capital") == "paris capital"  # an em dash separates words
    assert normalize("1990–1995") == "1990 1995"
    assert METRICS["exact_match"](_ex("Cosette"), _pred("“Cosette.”")) == 1.0
    assert METRICS["contains"](_ex("Valjean"), _pred("It was ‘Valjean’…")) == 1.0


def test_choice_text_fallback_matches_whole_words_only() -> None:
    choices = '{"A": "10", "B": "20", "C": "30", "D": "40"}'
    ex = _ex("A", answer_format="letter", choices=choices)
    acc = METRICS["choice_accuracy"]
    assert acc(ex, _pred("There are 100 of them")) == 0.0  # "10" is inside "100", not said
    assert acc(ex, _pred("There are 10 of them")) == 1.0


def test_contains_all_ignores_golds_without_content() -> None:
    f = METRICS["contains_all"]
    ex = _ex("4827163", "The", answer_format="all")
    # "The" normalises to "": it cannot be looked for in a reply, so only 4827163 counts.
    assert f(ex, _pred("")) == 0.0
    assert f(ex, _pred("4827163")) == 1.0
    assert f(_ex("The", "a", answer_format="all"), _pred("")) is None
    assert METRICS["contains"](_ex("The"), _pred("")) is None


# residue (issue 25 item 5): each failed on the code before the fix ------------------------------
def test_a_fraction_is_not_a_number_run_together() -> None:
    assert normalize("1/2") == "1/2" and normalize("1/2") != normalize("12")
    assert METRICS["exact_match"](_ex("1/2"), _pred("12")) == 0.0
    assert METRICS["contains"](_ex("1/2"), _pred("About 1/2 of them.")) == 1.0
    assert normalize("and/or") == "andor"  # a slash between words still goes


def test_a_minus_sign_is_part_of_the_number() -> None:
    contains = METRICS["contains"]
    assert contains(_ex("-5"), _pred("5")) == 0.0
    assert contains(_ex("-5"), _pred("It fell to -5 degrees.")) == 1.0
    assert contains(_ex("-5"), _pred("It fell to \u22125 degrees.")) == 1.0  # the Unicode minus
    assert contains(_ex("5"), _pred("-5")) == 0.0
    assert normalize("x-5") == "x5" and normalize("5-10") == "510"  # inside a word or a range: as before


def test_an_article_after_answer_is_not_a_choice() -> None:
    choices = '{"A": "Paris", "B": "Rome", "C": "Oslo", "D": "Bern"}'
    ex = _ex("C", answer_format="letter", choices=choices)
    acc = METRICS["choice_accuracy"]
    assert acc(ex, _pred("Answer: A careful reading shows C")) == 1.0  # read as A before the fix
    gold_a = _ex("A", answer_format="letter", choices=choices)
    assert acc(gold_a, _pred("Answer: A careful reading shows C")) == 0.0
    assert acc(_ex("A", answer_format="letter", choices=choices), _pred("Answer: A")) == 1.0
    assert acc(_ex("A", answer_format="letter", choices=choices), _pred("Answer: (A) Paris")) == 1.0
    assert acc(_ex("B", answer_format="letter", choices=choices), _pred("Answer: B because it is")) == 1.0


# one rule for free text (issue 25 item 2) -------------------------------------------------------
def test_a_long_gold_without_a_format_is_free_text() -> None:
    from compare.core.metrics import answer_format, default_primary

    gold = "A 5.01% improvement in MRR."
    assert answer_format({}, [gold]) == "free" and default_primary({}, [gold]) == "token_f1"
    assert default_primary({}, ["4827163"]) == "contains"
    assert default_primary({}, ["12 March 1999"]) == "contains"
    assert default_primary({"answer_format": "letter"}, [gold]) == "choice_accuracy"  # a declared format wins
    # The case: RAG's correct "5.01%" scored 0 under `contains`; token F1 gives it credit:
    # gold tokens "5.01 improvement in mrr" (4), reply "5.01" (1): p = 1, r = 1/4 -> F1 = 0.4.
    assert METRICS["headline"](_ex(gold), _pred("5.01%")) == pytest.approx(0.4)
    assert METRICS["headline"](_ex("4827163"), _pred("It is 4827163.")) == 1.0  # short: contains


def test_a_judge_declared_question_scores_token_f1_until_a_trusted_judge_rules() -> None:
    ex = _ex("jean valjean mayor", primary_metric="judge")
    assert METRICS["headline"](ex, _pred("jean valjean")) == pytest.approx(0.8)  # p = 1, r = 2/3
    assert METRICS["headline"](ex, Prediction("", None, 0, error="x")) == 0.0

"""Quality metrics: small functions of (example, prediction), looked up by name.

A metric returns None when it does not apply (no evidence spans, a failed request), so that
averages are taken over the rows where the question makes sense and failures stay visible as
their own count instead of silently scoring zero. `headline` is the exception by design: it is
each question's own metric (its corpus declares which: `primary_metric`), the one number that
compares pipelines, and there a failed request scores 0.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

from compare.core import choices as choice_parsing
from compare.core.protocols import Metric
from compare.core.registry import METRICS, register_metric
from compare.core.types import Example, Prediction

_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Punctuation that changes what a number is, kept while the rest is removed: a decimal point
# ("3.5" is not "35"), a fraction's slash ("1/2" is not "12"), a leading minus ("-5" is not "5";
# not one inside a word or a range: "x-ray", "5-10"). Each stands for itself behind a
# placeholder while punctuation is deleted.
_KEPT_IN_NUMBERS = (
    (re.compile(r"(?<=\d)\.(?=\d)"), "\x00", "."),
    (re.compile(r"(?<=\d)/(?=\d)"), "\x01", "/"),
    (re.compile(r"(?<![\w.\-\u2212])[-\u2212](?=\d)"), "\x02", "-"),
)
# ASCII punctuation is deleted (SQuAD). Other Unicode punctuation too (curly quotes, ellipsis,
# guillemets), except the dashes that separate words ("Paris—the capital"): a space.
_SEPARATING_DASHES = "\u2012\u2013\u2014\u2015\u2e3a\u2e3b"
_PUNCT = {
    **dict.fromkeys(map(ord, string.punctuation)),
    **{cp: None for cp in range(0x80, 0x10000) if unicodedata.category(chr(cp)).startswith("P")},
    **{ord(c): " " for c in _SEPARATING_DASHES},
}


def _strip_punct(text: str) -> str:
    """Lower case without punctuation, but a number's point, slash and sign kept (see above)."""
    text = text.lower()
    for pattern, placeholder, _ in _KEPT_IN_NUMBERS:
        text = pattern.sub(placeholder, text)
    text = text.translate(_PUNCT)
    for _, placeholder, kept in _KEPT_IN_NUMBERS:
        text = text.replace(placeholder, kept)
    return text


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", _strip_punct(text)).split())


def _light(text: str) -> str:
    """Case and punctuation only: for a gold that is all article ("A", "The")."""
    return " ".join(_strip_punct(text).split())


def _needs_all(ex: Example) -> bool:
    """Multi-value gold (every answer required): "any answer counts" metrics do not apply."""
    return ex.tags.get("answer_format") == "all"


def _findable(answers: Sequence[str]) -> list[str]:
    """Golds as searched for inside a reply; one that normalises to "" ("The") cannot be found
    in a reply (every reply "contains" nothing), so it is left out, and a question with no
    findable gold is not applicable (None) rather than a 0 or a free 1."""
    return [g for a in answers if (g := normalize(a))]


@register_metric("exact_match")
def exact_match(ex: Example, pred: Prediction) -> float | None:
    """Whole reply equals a gold. A gold that is all article ("A") is compared by case and
    punctuation only, so an empty reply never equals it."""
    if not pred.ok or _needs_all(ex):
        return None
    pairs = [(normalize(pred.answer), g) if (g := normalize(a)) else (_light(pred.answer), _light(a))
             for a in ex.answers]
    pairs = [(got, gold) for got, gold in pairs if gold]
    if not pairs:
        return None
    return float(any(got == gold for got, gold in pairs))


@register_metric("contains")
def contains_answer(ex: Example, pred: Prediction) -> float | None:
    """Any gold answer appears in the reply: robust to a chatty model around a short answer."""
    golds = _findable(ex.answers)
    if not pred.ok or _needs_all(ex) or not golds:
        return None
    got = f" {normalize(pred.answer)} "
    return float(any(f" {g} " in got for g in golds))


@register_metric("token_f1")
def token_f1(ex: Example, pred: Prediction) -> float | None:
    golds = _findable(ex.answers)
    if not pred.ok or _needs_all(ex) or not golds:
        return None
    got = normalize(pred.answer).split()
    best = 0.0
    for gold in golds:
        ref = gold.split()
        common = sum((Counter(got) & Counter(ref)).values())
        if common == 0:
            continue
        p, r = common / len(got), common / len(ref)
        best = max(best, 2 * p * r / (p + r))
    return best


@register_metric("contains_all")
def contains_all(ex: Example, pred: Prediction) -> float | None:
    """Fraction of the gold values found in the reply (multi-needle recall, as in Gemini 1.5)."""
    golds = _findable(ex.answers)
    if not pred.ok or not _needs_all(ex) or not golds:
        return None
    got = f" {normalize(pred.answer)} "
    return sum(f" {g} " in got for g in golds) / len(golds)


_COUNT_WORDS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
))} | {"once": 1, "twice": 2, "thrice": 3}
_COUNT = re.compile(rf"\b(\d+|{'|'.join(_COUNT_WORDS)})\b", re.IGNORECASE)


@register_metric("count_match")
def count_match(ex: Example, pred: Prediction) -> float | None:
    """A count question (answer_format "count"): the FIRST number the reply names (digits or a
    word up to twenty) equals the gold. Not `contains`: "3 of the 4 mentions" names the gold 4
    but answers 3. A reply naming no number scores 0."""
    golds = [int(a) for a in ex.answers if a.strip().isdigit()]
    if not pred.ok or ex.tags.get("answer_format") != "count" or not golds:
        return None
    m = _COUNT.search(pred.answer)
    if m is None:
        return 0.0
    word = m.group(1).lower()
    return float((int(word) if word.isdigit() else _COUNT_WORDS[word]) in golds)


def _choices(ex: Example) -> dict[str, str]:
    raw = ex.tags.get("choices")
    if not isinstance(raw, str):
        return {}
    parsed = json.loads(raw)
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}


def chosen_letter(reply: str, choices: Mapping[str, str]) -> str | None:
    """The choice a reply picks (compare/core/choices.py has the rules)."""
    return choice_parsing.chosen_letter(reply, choices, normalize)


MULTI_SELECT = "letters"  # answer_format of a question with several correct choices ("ACD")


@register_metric("choice_accuracy")
def choice_accuracy(ex: Example, pred: Prediction) -> float | None:
    """1 if the reply picks a gold letter; unparseable replies score 0, not None.
    Multi-select questions are scored by choice_set_match instead (None here)."""
    choices = _choices(ex)
    if not pred.ok or not choices or not ex.answers or ex.tags.get("answer_format") == MULTI_SELECT:
        return None
    return float(chosen_letter(pred.answer, choices) in ex.answers)


def _choice_sets(ex: Example, pred: Prediction) -> tuple[frozenset[str], list[frozenset[str]]] | None:
    choices = _choices(ex)
    if not pred.ok or not choices or ex.tags.get("answer_format") != MULTI_SELECT:
        return None
    golds = [g for a in ex.answers if (g := choice_parsing.gold_letters(a))]
    return (choice_parsing.chosen_letters(pred.answer, choices), golds) if golds else None


@register_metric("choice_set_match")
def choice_set_match(ex: Example, pred: Prediction) -> float | None:
    """Multi-select: 1 only for exactly the gold set of letters. Never a substring test: a reply
    listing every letter ("A, B, C, D") picks every choice and scores 0 unless all are gold."""
    got = _choice_sets(ex, pred)
    return None if got is None else float(any(got[0] == g for g in got[1]))


@register_metric("choice_set_f1")
def choice_set_f1(ex: Example, pred: Prediction) -> float | None:
    """Multi-select partial credit (secondary): F1 of the picked letters against the gold set."""
    got = _choice_sets(ex, pred)
    return None if got is None else max(choice_parsing.set_f1(got[0], g) for g in got[1])


_LABEL = re.compile(r"\b(true|false)\b", re.IGNORECASE)


@register_metric("true_false")
def true_false(ex: Example, pred: Prediction) -> float | None:
    """1 if the first True/False in the reply is the gold label (sci_fi-style questions)."""
    if not pred.ok or ex.tags.get("answer_format") != "true_false" or not ex.answers:
        return None
    m = _LABEL.search(pred.answer)
    return float(m is not None and m.group(1).lower() == ex.answers[0].strip().lower())


def _in_seconds(ex: Example) -> bool:
    """Video evidence is in seconds, retrieved spans in timeline characters: evidence_recall_time
    maps one onto the other; the character-span metrics must not compare them directly."""
    return ex.tags.get("evidence_unit") == "seconds"


@register_metric("evidence_recall")
def evidence_recall(ex: Example, pred: Prediction) -> float | None:
    """Share of gold evidence spans that some retrieved span overlaps (retrieval only)."""
    if not ex.evidence or not pred.retrieved or _in_seconds(ex):
        return None
    hit = sum(any(e.overlaps(r) for r in pred.retrieved) for e in ex.evidence)
    return hit / len(ex.evidence)


@register_metric("request_ok")
def request_ok(ex: Example, pred: Prediction) -> float | None:
    """1 for a request that produced an answer, 0 for an error row."""
    return float(pred.ok)


def resolve(names: Sequence[str]) -> dict[str, Metric]:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    return {n: METRICS[n] for n in names}


def score(metrics: Mapping[str, Metric], ex: Example, pred: Prediction) -> dict[str, float | None]:
    return {name: fn(ex, pred) for name, fn in metrics.items()}


@register_metric("evidence_mrr")
def evidence_mrr(ex: Example, pred: Prediction) -> float | None:
    """1/rank of the first retrieved span that overlaps any evidence span (0 if none does).

    Needs `pred.retrieved` in rank order (RAG keeps it so even when the prompt is laid out in
    document order). Like evidence_recall, None for rows without evidence or retrieval.
    """
    if not ex.evidence or not pred.retrieved or _in_seconds(ex):
        return None
    for rank, r in enumerate(pred.retrieved, start=1):
        if any(e.overlaps(r) for e in ex.evidence):
            return 1.0 / rank
    return 0.0




# --- video: evidence in seconds, replies that name times (time_metrics.py) ------------------
# Re-exported (the video metrics' names were first met here); imported here, not at the top,
# so the registry keeps its order.
from compare.core.time_metrics import evidence_recall_time as evidence_recall_time  # noqa: E402
from compare.core.time_metrics import parse_times as parse_times  # noqa: E402
from compare.core.time_metrics import time_hit as time_hit  # noqa: E402
from compare.core.time_metrics import time_iou as time_iou  # noqa: E402

# --- the headline: each question's own metric ------------------------------------------------
HEADLINE = "headline"
# What a corpus declares per question (tag `primary_metric`); by answer format when it does not.
PRIMARY_BY_FORMAT: Mapping[str, str] = {
    "letter": "choice_accuracy",  # multiple choice: the picked letter, never "contains 'C'"
    MULTI_SELECT: "choice_set_match",  # exam-style "ACD": exactly that set
    "true_false": "true_false",
    "all": "contains_all",  # multi-needle: share of the values found
    "time": "time_iou",  # a time interval
    "free": "token_f1",  # free text: a phrase or sentences (or the judge, where declared)
    "exact": "contains",  # a short gold said inside a chatty reply (topic retrieval)
    "short": "contains",  # a short answer (a needle's number, a bAbI word, a name)
    "count": "count_match",  # how many times: the first number the reply names (corpora/aggregate.py)
}
SHORT_ANSWER = "contains"  # no format, short golds: said inside a chatty reply
JUDGE = "judge"  # the LLM judge's verdicts (compare/run/judge.py): declared, never a default
# The one rule for a question without a format: a gold of at most this many words (after
# normalisation: "the Eiffel Tower", "12 March 1999", "5.01%") is a short answer, found inside a
# chatty reply (`contains`); a longer gold is free text (`token_f1`): a correct "5.01%" for the
# gold "A 5.01% improvement in MRR." must not score 0 for not repeating the whole sentence.
SHORT_GOLD_WORDS = 3
ANSWER_METRICS = frozenset({*PRIMARY_BY_FORMAT.values(), SHORT_ANSWER, "exact_match", "choice_set_f1",
                            "time_hit", JUDGE})


def answer_format(tags: Mapping[str, str | float], answers: Sequence[str] = ()) -> str:
    """A question's answer format: the one its corpus declares (tag `answer_format`), else by its
    golds: "free" when any is longer than SHORT_GOLD_WORDS words, "short" otherwise."""
    declared = tags.get("answer_format")
    if declared is not None and str(declared):
        return str(declared)
    longest = max((len(normalize(a).split()) for a in answers), default=0)
    return "free" if longest > SHORT_GOLD_WORDS else "short"


def default_primary(tags: Mapping[str, str | float], answers: Sequence[str] = ()) -> str:
    """The metric a question of these tags and golds is judged by, from its answer format
    (answer_format above: the one rule)."""
    return PRIMARY_BY_FORMAT.get(answer_format(tags, answers), SHORT_ANSWER)


def is_free_text(ex: Example) -> bool:
    """Free text: scored by token F1 or the judge (what the judge rules on by default and what
    gets a free-text answer budget)."""
    return primary_metric(ex) in ("token_f1", JUDGE)


def check_primary(name: str) -> str:
    """A declared primary metric must be an answer metric (not itself, not a retrieval one)."""
    if name not in ANSWER_METRICS:
        raise ValueError(f"primary_metric {name!r} is not an answer metric; known: {sorted(ANSWER_METRICS)}")
    return name


def primary_metric(ex: Example) -> str:
    """The example's declared primary metric; an example stored before corpora declared one
    gets the same default its corpus now declares."""
    declared = ex.tags.get("primary_metric")
    return check_primary(declared) if isinstance(declared, str) else default_primary(ex.tags, ex.answers)


def scoring_metric(ex: Example) -> str:
    """The metric that scores the question when a run is made: its primary metric, except that a
    judge-declared question is scored by token F1 until a judge that passed its controls rules
    on it (compare/run/judge.py then puts the judge's verdicts in the headline)."""
    name = primary_metric(ex)
    return "token_f1" if name == JUDGE else name


@register_metric(HEADLINE)
def headline(ex: Example, pred: Prediction) -> float | None:
    """The question's own metric, so one mean can cover a mix of question kinds. A failed
    request scores 0 (it answered nothing; the headline compares pipelines over the same asked
    questions), unless the metric cannot apply to this question at all (then None for all)."""
    fn = METRICS[scoring_metric(ex)]
    if pred.ok:
        return fn(ex, pred)
    applies = fn(ex, Prediction(answer="", completion=None, context_tokens=0)) is not None
    return 0.0 if applies else None



"""Quality metrics: small functions of (example, prediction), looked up by name.

A metric returns None when it does not apply (no evidence spans, a failed request), so that
averages are taken over the rows where the question makes sense and failures stay visible as
their own count instead of silently scoring zero.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from compare.types import Example, Prediction

Metric = Callable[[Example, Prediction], float | None]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(ex: Example, pred: Prediction) -> float | None:
    if not pred.ok:
        return None
    got = normalize(pred.answer)
    return float(any(got == normalize(a) for a in ex.answers))


def contains_answer(ex: Example, pred: Prediction) -> float | None:
    """Any gold answer appears in the reply: robust to a chatty model around a short answer."""
    if not pred.ok:
        return None
    got = f" {normalize(pred.answer)} "
    return float(any(f" {normalize(a)} " in got for a in ex.answers if normalize(a)))


def token_f1(ex: Example, pred: Prediction) -> float | None:
    if not pred.ok:
        return None
    got = normalize(pred.answer).split()
    best = 0.0
    for gold in ex.answers:
        ref = normalize(gold).split()
        common = sum((Counter(got) & Counter(ref)).values())
        if common == 0:
            continue
        p, r = common / len(got), common / len(ref)
        best = max(best, 2 * p * r / (p + r))
    return best


def evidence_recall(ex: Example, pred: Prediction) -> float | None:
    """Share of gold evidence spans that some retrieved span overlaps (retrieval only)."""
    if not ex.evidence or not pred.retrieved:
        return None
    hit = sum(any(e.overlaps(r) for r in pred.retrieved) for e in ex.evidence)
    return hit / len(ex.evidence)


def request_ok(ex: Example, pred: Prediction) -> float | None:
    """1 for a request that produced an answer, 0 for an error row."""
    return float(pred.ok)


METRICS: Mapping[str, Metric] = {
    "exact_match": exact_match,
    "contains": contains_answer,
    "token_f1": token_f1,
    "evidence_recall": evidence_recall,
    "request_ok": request_ok,
}


def resolve(names: Sequence[str]) -> dict[str, Metric]:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    return {n: METRICS[n] for n in names}


def score(metrics: Mapping[str, Metric], ex: Example, pred: Prediction) -> dict[str, float | None]:
    return {name: fn(ex, pred) for name, fn in metrics.items()}

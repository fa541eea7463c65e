"""Quality metrics: small functions of (example, prediction), looked up by name.

A metric returns None when it does not apply (no evidence spans, a failed request), so that
averages are taken over the rows where the question makes sense and failures stay visible as
their own count instead of silently scoring zero.
"""

from __future__ import annotations

import json
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


def _needs_all(ex: Example) -> bool:
    """Multi-value gold (every answer required): "any answer counts" metrics do not apply."""
    return ex.tags.get("answer_format") == "all"


def exact_match(ex: Example, pred: Prediction) -> float | None:
    if not pred.ok or _needs_all(ex):
        return None
    got = normalize(pred.answer)
    return float(any(got == normalize(a) for a in ex.answers))


def contains_answer(ex: Example, pred: Prediction) -> float | None:
    """Any gold answer appears in the reply: robust to a chatty model around a short answer."""
    if not pred.ok or _needs_all(ex):
        return None
    got = f" {normalize(pred.answer)} "
    return float(any(f" {normalize(a)} " in got for a in ex.answers if normalize(a)))


def token_f1(ex: Example, pred: Prediction) -> float | None:
    if not pred.ok or _needs_all(ex):
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


def contains_all(ex: Example, pred: Prediction) -> float | None:
    """Fraction of the gold values found in the reply (multi-needle recall, as in Gemini 1.5)."""
    if not pred.ok or not _needs_all(ex) or not ex.answers:
        return None
    got = f" {normalize(pred.answer)} "
    return sum(f" {normalize(a)} " in got for a in ex.answers) / len(ex.answers)


def _choices(ex: Example) -> dict[str, str]:
    raw = ex.tags.get("choices")
    if not isinstance(raw, str):
        return {}
    parsed = json.loads(raw)
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}


def chosen_letter(reply: str, choices: Mapping[str, str]) -> str | None:
    """The choice a reply picks: "(B)", "B.", "B) text", "Answer: B", or a choice's own text.

    A leading "A" followed by a word is the article, not a choice, so a bare letter counts
    only when punctuation or the end of the reply marks it.
    """
    letters = "".join(k for k in sorted(choices) if re.fullmatch(r"[A-Z]", k))
    if not letters:
        return None
    text = reply.strip()
    for pattern in (
        rf"^\(?([{letters}])(?:[).:\]]|$)",
        rf"\b(?i:answer)(?:\s+(?i:is))?\s*[:\-]?\s*\(?([{letters}])\b",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    marked = set(re.findall(rf"\(([{letters}])\)", text))
    if len(marked) == 1:
        return marked.pop()
    # The choice's words without its letter; a reply cut short by max_tokens still names one.
    got = normalize(text)
    texts = {k: normalize(v) for k, v in choices.items()}
    named = [k for k, v in texts.items() if v and (v in got or (len(got.split()) >= 3 and got in v))]
    return named[0] if len(named) == 1 else None


def choice_accuracy(ex: Example, pred: Prediction) -> float | None:
    """1 if the reply picks the gold letter; unparseable replies score 0, not None."""
    choices = _choices(ex)
    if not pred.ok or not choices or not ex.answers:
        return None
    return float(chosen_letter(pred.answer, choices) == ex.answers[0])


_LABEL = re.compile(r"\b(true|false)\b", re.IGNORECASE)


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


def evidence_recall(ex: Example, pred: Prediction) -> float | None:
    """Share of gold evidence spans that some retrieved span overlaps (retrieval only)."""
    if not ex.evidence or not pred.retrieved or _in_seconds(ex):
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
    "contains_all": contains_all,
    "choice_accuracy": choice_accuracy,
    "true_false": true_false,
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


METRICS = {**METRICS, "evidence_mrr": evidence_mrr}


# --- video: evidence in seconds, replies that name times -------------------------------------
_CLOCK = re.compile(r"(?<![\d.:])(\d{1,3}):([0-5]\d)(?::([0-5]\d))?(\.\d+)?(?![\d:])")
_SECONDS = re.compile(  # "151 s", "151.5-165 s", "151 to 165 seconds"
    r"(?<![\d.:])(\d+(?:\.\d+)?)(?:\s*(?:-|–|to|and)\s*(\d+(?:\.\d+)?))?\s*(?:s|sec|secs|seconds?)\b",
    re.IGNORECASE,
)
_BARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")


def parse_times(reply: str) -> list[float]:
    """Times a reply names, in order, in seconds: "00:02:31", "2:31", "151 s", "2:31-2:45"."""
    found: list[tuple[int, float]] = []
    for m in _CLOCK.finditer(reply):
        a, b, c, frac = m.groups()
        h, mi, s = (int(a), int(b), int(c)) if c is not None else (0, int(a), int(b))
        found.append((m.start(), h * 3600 + mi * 60 + s + float(frac or 0)))
    for m in _SECONDS.finditer(reply):
        found += [(m.start(i), float(g)) for i, g in enumerate(m.groups(), 1) if g is not None]
    if not found and (bare := _BARE.match(reply)):
        found.append((0, float(bare.group(1))))
    return [t for _, t in sorted(found)]


def _time_reply(ex: Example, pred: Prediction) -> tuple[float, float, float, float] | None:
    """(pred start, pred end, gold start, gold end) for a time question; pred NaN if unparsed."""
    if not pred.ok or ex.tags.get("answer_format") != "time" or not ex.evidence:
        return None
    times = parse_times(pred.answer)[:2]
    lo, hi = (min(times), max(times)) if times else (float("nan"), float("nan"))
    return lo, hi, ex.evidence[0].start, ex.evidence[0].end


def time_iou(ex: Example, pred: Prediction) -> float | None:
    """Overlap / union of the replied interval and the gold one (a single time scores 0)."""
    got = _time_reply(ex, pred)
    if got is None:
        return None
    lo, hi, g0, g1 = got
    if not hi > lo:  # NaN (nothing parsed) or an instant
        return 0.0
    inter = max(0.0, min(hi, g1) - max(lo, g0))
    return inter / (max(hi, g1) - min(lo, g0))


def time_hit(ex: Example, pred: Prediction) -> float | None:
    """1 if the replied time (an interval's midpoint) is inside the gold interval +- 1 s."""
    got = _time_reply(ex, pred)
    if got is None:
        return None
    lo, hi, g0, g1 = got
    tol = float(ex.tags.get("time_tolerance_s", 1.0))
    return float(g0 - tol <= (lo + hi) / 2 <= g1 + tol)


def evidence_recall_time(ex: Example, pred: Prediction) -> float | None:
    """evidence_recall for video: retrieved character spans mapped to seconds through the
    example's `time_map` tag (timeline line offsets -> seconds), then overlapped with the gold
    spans in seconds."""
    tag = ex.tags.get("time_map")
    if ex.tags.get("evidence_unit") != "seconds" or not isinstance(tag, str):
        return None
    if not ex.evidence or not pred.retrieved:
        return None
    from corpora.timeline import retrieved_seconds  # the one char<->seconds mapping

    got = retrieved_seconds(tag, pred.retrieved)
    return sum(any(e.overlaps(r) for r in got) for e in ex.evidence) / len(ex.evidence)


METRICS = {**METRICS, "time_iou": time_iou, "time_hit": time_hit,
           "evidence_recall_time": evidence_recall_time}

"""Video quality metrics: evidence in seconds and replies that name times.

Apart from metrics.py only for size; metrics.py imports this module where its video section
stood, so the registry (and so every run's default metric list) keeps its order.
"""

from __future__ import annotations

import re

from compare.core.registry import register_metric
from compare.core.timeline import retrieved_seconds  # the one char<->seconds mapping
from compare.core.types import Example, Prediction

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


@register_metric("time_iou")
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


@register_metric("time_hit")
def time_hit(ex: Example, pred: Prediction) -> float | None:
    """1 if the replied time (an interval's midpoint) is inside the gold interval +- 1 s."""
    got = _time_reply(ex, pred)
    if got is None:
        return None
    lo, hi, g0, g1 = got
    tol = float(ex.tags.get("time_tolerance_s", 1.0))
    return float(g0 - tol <= (lo + hi) / 2 <= g1 + tol)


@register_metric("evidence_recall_time")
def evidence_recall_time(ex: Example, pred: Prediction) -> float | None:
    """evidence_recall for video: retrieved character spans mapped to seconds through the
    example's `time_map` tag (timeline line offsets -> seconds), then overlapped with the gold
    spans in seconds."""
    tag = ex.tags.get("time_map")
    if ex.tags.get("evidence_unit") != "seconds" or not isinstance(tag, str):
        return None
    if not ex.evidence or not pred.retrieved:
        return None
    got = retrieved_seconds(tag, pred.retrieved)
    return sum(any(e.overlaps(r) for r in got) for e in ex.evidence) / len(ex.evidence)

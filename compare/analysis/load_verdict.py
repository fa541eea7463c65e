"""The claim a load run leads with: at each offered rate, which strategy kept the SLOs.

A load run asks the same questions at every step, so its rows pooled over the steps count each
question several times and mix an idle-like step with a saturated one: the idle run's decision
rules (compare/analysis/decision.py) do not apply to them. Here each step stands alone. At one
rate, two pipelines' SLO attainments (good requests over requests sent, a failed request a
miss) are two independent proportions (the pipelines' requests share a schedule, not an
outcome), so a winner is named only when Fisher's exact test separates them at the verdict's
alpha; each attainment carries its Wilson interval and its n. Goodput, quality under load and
the hit rate ride along as measured numbers of that step. A step that did not run steady
(saturated, incomplete) gives no attainment: it is said so, never compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as sst

from compare.analysis.stats import ALPHA, Interval, wilson


@dataclass(frozen=True)
class Attainment:
    """One pipeline at one step: good requests over sent, with its interval (measured)."""

    label: str
    good: int
    sent: int
    interval: Interval
    goodput_rps: float | None
    quality: float | None


@dataclass(frozen=True)
class RateVerdict:
    """One offered rate (or concurrency): who kept the SLOs, or why nobody is named."""

    step: str
    winner: str | None
    p: float | None  # Fisher's exact two-sided p, best vs runner-up; None when not compared
    steady: list[Attainment]
    not_steady: list[str]  # "label (status: note)"
    text: str


def _attainment(label: str, row: Mapping[str, Any]) -> Attainment:
    good, sent = int(row.get("good") or 0), int(row.get("sent") or 0)
    return Attainment(label, good, sent, wilson(good, sent), row.get("goodput_rps"), row.get("quality"))


def _fmt(a: Attainment) -> str:
    i = a.interval
    goodput = "n/a" if a.goodput_rps is None else f"{a.goodput_rps:.3g}/s"
    quality = "not scored" if a.quality is None or math.isnan(a.quality) else f"{a.quality:.2f}"
    return (f"{a.label} {a.good}/{a.sent} [{i.lo:.2f}, {i.hi:.2f}] (goodput {goodput}, "
            f"quality under load {quality}, n = {a.sent})")


def rate_verdict(step: str, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> RateVerdict:
    """`rows`: (pipeline label, compare/analysis/load.py step row) of one step, one per pipeline."""
    steady = [_attainment(label, r) for label, r in rows if r.get("steady") and int(r.get("sent") or 0) > 0]
    not_steady = [f"{label} ({r.get('status')}" + (f": {r['note']}" if r.get("note") else "") + ")"
                  for label, r in rows if not (r.get("steady") and int(r.get("sent") or 0) > 0)]
    ranked = sorted(steady, key=lambda a: (-a.interval.value, a.label))
    winner, p = None, None
    parts = [f"At {step}:"]
    if ranked:
        parts.append("SLOs met by " + "; ".join(_fmt(a) for a in ranked) + ".")
    if len(ranked) >= 2:
        a, b = ranked[0], ranked[1]
        p = float(sst.fisher_exact([[a.good, a.sent - a.good], [b.good, b.sent - b.good]]).pvalue)
        if p < ALPHA and a.interval.value > b.interval.value:
            winner = a.label
            parts.append(f"{a.label} keeps the SLOs better (Fisher exact p = {p:.2g}).")
        else:
            parts.append(f"Not separated at these n (Fisher exact p = {p:.2g}): no winner named.")
    elif ranked and not_steady:
        winner = ranked[0].label if ranked[0].good > 0 else None
        if winner:
            parts.append(f"{winner} is the only one that kept up.")
    if not_steady:
        parts.append("Did not keep up (no steady numbers): " + ", ".join(not_steady) + ".")
    return RateVerdict(step, winner, p, ranked, not_steady, " ".join(parts))


def load_verdicts(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str] | None = None
                  ) -> list[RateVerdict]:
    """Per step of one run, lowest load first. `rows`: compare/analysis/load.py `step_metrics`
    rows; `labels`: pipeline params_hash -> the label the report uses (else the pipeline kind)."""
    by_step: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    order: list[tuple[float, str]] = []
    for r in rows:
        step = _step_words(r)
        if step not in by_step:
            load = r.get("rate") if r.get("rate") is not None else r.get("concurrency")
            order.append((float(load) if load is not None else math.inf, step))
        label = (labels or {}).get(str(r.get("params_hash")), str(r["pipeline"]))
        by_step.setdefault(step, []).append((label, r))
    return [rate_verdict(step, by_step[step]) for _, step in sorted(order)]


def _step_words(r: Mapping[str, Any]) -> str:
    if r.get("rate") is not None:
        return f"{float(r['rate']):g} requests/s"
    if r.get("concurrency") is not None:
        return f"concurrency {int(r['concurrency'])}"
    return str(r["step"])  # a replayed trace: its own name ("trace*0.5")


def slo_words(slos: Mapping[str, float]) -> str:
    """The SLOs a verdict was judged against, as the user set them."""
    names = {"ttft": "TTFT", "e2e": "E2E", "tpot": "time per output token"}
    return ", ".join(f"{names.get(k, k)} <= {v:g} ms" for k, v in slos.items()) or \
        "none given (every answered request counts as good)"

"""Which question is asked when: a load step's requests and their scheduled send times.

Two independent, seeded numpy Generators (recorded through the spec's `[load] seed`): one
draws the request sequence (documents by Zipf popularity, each document's questions in turn),
the other the inter-arrival gaps. Every step of a sweep therefore asks the same questions in
the same order, only faster or slower (common random numbers: the steps differ by rate, not
by luck), and a resumed step recomputes exactly the schedule it was interrupted in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from compare.core.types import Example
from compare.run.load_spec import LoadSpec
from compare.run.trace import read_trace, trace_arrivals


@dataclass(frozen=True)
class Point:
    """One step of a sweep: an offered request rate, or a fixed concurrency (closed loop)."""

    rate: float | None = None
    concurrency: int | None = None
    trace_scale: float | None = None  # a trace replay, its offsets times this
    probe: bool = False  # an automatic sweep's saturation probe (a closed loop)

    @property
    def label(self) -> str:
        """The step's name, in example ids and rows: `rate=0.5`, `concurrency=4`, `trace`
        (`trace*0.5` replayed twice as fast) or `probe`."""
        if self.rate is not None:
            return f"rate={self.rate:g}"
        if self.trace_scale is not None:
            return "trace" if self.trace_scale == 1.0 else f"trace*{self.trace_scale:g}"
        return "probe" if self.probe else f"concurrency={self.concurrency}"

    @property
    def open_loop(self) -> bool:
        """Sent when due whatever is in flight (a rate or a trace): it can over-saturate."""
        return self.rate is not None or self.trace_scale is not None


@dataclass(frozen=True)
class Arrival:
    """Request `index` of a step: its own example (an id unique to the step) and when it is due."""

    index: int
    offset_s: float
    example: Example
    question_id: str  # the corpus question it asks


def points(load: LoadSpec) -> list[Point]:
    """The sweep's given steps, lowest load first (rates ascending, the trace, concurrencies
    ascending); an automatic sweep's rates come from its probe (compare/run/sweep.py)."""
    trace = [Point(trace_scale=load.trace_time_scale)] if load.trace else []
    return [Point(rate=r) for r in sorted(set(load.rate_list))] + trace + \
        [Point(concurrency=c) for c in sorted(set(load.concurrency))]


def offsets(n: int, point: Point, load: LoadSpec) -> np.ndarray:
    """Scheduled send times (s from the step's start), as `vllm bench serve` computes them."""
    if point.rate is None:  # closed loop: everything is due at once, the slots pace it
        return np.zeros(n)
    rng = np.random.default_rng([load.seed, 1])
    if load.arrival == "constant":
        gaps = np.full(n, 1.0 / point.rate)
    else:  # Gamma(k, 1/(rate k)); k = 1 is the exponential gap of a Poisson process
        k = load.burstiness
        gaps = rng.standard_gamma(k, n) / (point.rate * k)
    due = np.cumsum(gaps)
    # vLLM's normalisation: the last request is due at n / rate exactly, so the offered rate
    # is the rate asked for whatever the draw (a plain sum of gaps misses it by a few %).
    return due * (n / point.rate / due[-1])


def popularity(n_docs: int, exponent: float) -> np.ndarray:
    """P(document of rank r), r = 1..n: bounded Zipf (scipy.stats.zipfian); 0 is uniform."""
    if exponent == 0:
        return np.full(n_docs, 1.0 / n_docs)
    p = stats.zipfian.pmf(np.arange(1, n_docs + 1), exponent, n_docs)
    return np.asarray(p / p.sum())


def requests(examples: Sequence[Example], point: Point, load: LoadSpec) -> list[Arrival]:
    """A step's requests: documents drawn by popularity, each document's questions in turn; a
    trace step's, the trace's lines (compare/run/trace.py)."""
    if point.trace_scale is not None:
        assert load.trace is not None
        lines = read_trace(load.trace)
        got = trace_arrivals(lines, examples, point.label, point.trace_scale, load.trace,
                             load.questions_per_doc)
        return [Arrival(i, due, ex, qid) for i, (due, ex, qid) in enumerate(got)]
    by_doc: dict[tuple[str, ...], list[Example]] = {}
    for ex in examples:  # corpus order: the first document is the most popular
        by_doc.setdefault(ex.doc_ids, []).append(ex)
    if not by_doc:
        raise ValueError("the corpus has no questions to send")
    docs = list(by_doc)
    cap = load.questions_per_doc
    pools = [by_doc[d][:cap] if cap else by_doc[d] for d in docs]
    n = load.requests
    p = popularity(len(docs), load.zipf)
    drawn = np.random.default_rng([load.seed, 0]).choice(len(docs), size=n, p=p)
    due = offsets(n, point, load)
    asked = [0] * len(docs)
    out: list[Arrival] = []
    for i, d in enumerate(drawn):
        pool = pools[int(d)]
        ex = pool[asked[d] % len(pool)]
        asked[d] += 1
        own = replace(ex, id=f"{ex.id}@{point.label}#{i}",
                      tags={**ex.tags, "load_question": ex.id, "load_step": point.label})
        out.append(Arrival(i, float(due[i]), own, ex.id))
    return out

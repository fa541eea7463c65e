"""The report's first screen, and the table where the ids live.

A decider reads the page top down: the decision line (compare/analysis/decision.py), one card
per pipeline (quality with its interval, p50 latency, $ per 1,000 queries), and the few words
those use, defined once right there; the evidence follows in the sections. Runs are named by
their corpus and time (compare/analysis/summary.py `run_names`) and pipelines by their labels
("RAG k=4"): run ids and params hashes appear only in the details table at the end.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from compare.analysis.decision import Decision, PipelineFacts
from compare.analysis.stats import Interval
from compare.report.charts import VIEW_NAMES
from compare.report.html import dollars, table
from compare.report.palette import kind_colour


def decision_html(d: Decision, run_name: str | None = None) -> str:
    """The decision sentence in one box: the first thing on the page (one per run shown)."""
    who = f" ({html.escape(run_name)})" if run_name else ""
    return f"<div class='decision' id='decision'><b>Decision{who}:</b> {html.escape(d.sentence)}</div>"


def _interval(i: Interval, digits: str = ".2f") -> str:
    if math.isnan(i.value):
        return "–"
    lo = "…" if math.isinf(i.lo) else f"{i.lo:{digits}}"
    hi = "…" if math.isinf(i.hi) else f"{i.hi:{digits}}"
    return f"{i.value:{digits}} <small>[{lo}, {hi}], n = {i.n}</small>"


def _card(f: PipelineFacts, d: Decision, kind: str) -> str:
    quality = _interval(f.quality) if f.quality else "not scored"
    p50 = f"{f.p50_ms.value:,.0f} ms <small>n = {f.p50_ms.n}</small>" if f.p50_ms else "not measured"
    usd = dollars(f.usd_per_1k) if f.usd_per_1k is not None and math.isfinite(f.usd_per_1k) else "not priced"
    chosen = f.label == d.choice
    flag = " <small>(chosen)</small>" if chosen else ""
    return (
        f"<div class='card{' chosen' if chosen else ''}' style='border-top-color: {kind_colour(kind)}'>"
        f"<h3>{html.escape(f.label)}{flag}</h3><dl>"
        f"<dt>quality</dt><dd>{quality}</dd>"
        f"<dt>p50 latency</dt><dd>{p50}</dd>"
        f"<dt>$ / 1k queries</dt><dd>{usd}</dd>"
        "</dl></div>"
    )


def cards_html(d: Decision, kinds: Mapping[str, str]) -> str:
    """One card per pipeline of the decision, its top border in its kind's chart colour."""
    cards = "".join(_card(f, d, kinds.get(f.label, f.label)) for f in d.pipelines)
    return f"<div class='cards'>{cards}</div>"


def terms_html(decisions: Sequence[Decision]) -> str:
    """The words of the first screen, defined once, where they first appear."""
    d = decisions[0] if decisions else None
    metric = d.metric if d else None
    view = d.view if d else None
    q = d.q if d else 10
    what = (
        "the headline: each question scored by its own metric, as its corpus declares it (exact "
        "match, contains, token F1, ...)" if metric == "headline" else f"mean {metric or 'score'}"
    )
    views = "; ".join(f"<b>{html.escape(k)}</b> = {html.escape(v)}" for k, v in _VIEW_WORDS.items())
    terms = {
        "quality": f"{what}, averaged over the questions asked; a failed request scores 0. "
                   "[lo, hi] is its 95% interval (Wilson for right/wrong scores, bootstrap otherwise), "
                   "n the questions.",
        "p50 latency": "the median time from sending a question to the answer's last token, retrieval "
                       "included (\"retrieval + E2E\": E2E is end to end).",
        "$ / 1k queries": f"what 1,000 questions cost at {q} questions per document, in the "
                          f"{html.escape(VIEW_NAMES.get(view or '', view or 'first'))} view ({views}).",
        "paired p": "the chance of a quality gap this large if the two were equally good, from the "
                    "same questions asked of both (exact McNemar test for right/wrong, else a paired "
                    "bootstrap); q* is the break-even: questions per document where the two cost the same.",
    }
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in terms.items())
    return f"<details class='terms' open><summary>What these words mean</summary><dl>{items}</dl></details>"


_VIEW_WORDS = {
    "api": "API-equivalent: a hosted provider's price per token, cached tokens at its discount",
    "self_hosted": "self-hosted: the machine's hourly price for the seconds it was busy",
}


def details_html(runs: Sequence[Mapping[str, Any]], labels: pd.DataFrame, names: Mapping[str, str]) -> str:
    """Where the ids live: each run's name and id, each pipeline's label, kind and params hash."""
    run_rows = [{"name": names.get(str(r["run_id"]), r["run_id"]), **r} for r in runs]
    pipes = labels.assign(run_name=labels["run_id"].map(names).fillna(labels["run_id"]))
    return (
        table(run_rows, {"name": "run", "run_id": "run id", "corpus": "corpus", "model": "model",
                         "status": "status", "created_at": "started"},
              left=("name", "run_id", "corpus", "model", "status", "created_at"))
        + table(pipes.to_dict("records"), {"run_name": "run", "label": "pipeline", "pipeline": "kind",
                                            "params_hash": "params hash"},
                left=("run_name", "label", "pipeline", "params_hash"))
    )

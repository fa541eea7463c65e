"""The report's sections, each read from one store connection: what the page says, not how it is written.

The dashboard answers, in order: how good is each pipeline (quality, needle heatmaps), how
fast (latency percentiles, cold vs warm), what does a query cost as questions per document
grow (and where do the curves cross), which configs are worth choosing (quality vs cost
frontier), how well does retrieval find the evidence, and what routing bought. A chart whose
data a run lacks is left out with a one-line note, never an error: a database holds runs of
many shapes. Opening the store, the knobs section and writing files are compare/report/assemble.py's.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import altair as alt
import duckdb
import pandas as pd

from compare.analysis import oracle, prices, summary
from compare.analysis.cost import BREAK_EVEN_COLUMNS, WARM_FRACTION, cost_columns
from compare.analysis.decision import Decision, decision_for
from compare.analysis.verdict import add_cache_facts, run_verdict
from compare.report import charts, retrieval_charts
from compare.report import data as dashboard
from compare.report.front import cards_html, decision_html, terms_html
from compare.report.html import Section, effective_table, note, summary_table, table, verdict_box
from compare.report.judge_section import judge_parts
from compare.report.regret_section import COLUMNS, regret_rows

QUALITY_METRICS = ("headline", *summary.FALLBACK_METRICS, "request_ok")


def quality_metric(df: pd.DataFrame | Sequence[dict[str, Any]]) -> str | None:
    """`headline` (each question's own metric) when the run scored it, else the first answer
    metric it did score (a run from before the headline existed)."""
    frame = pd.DataFrame(df) if not isinstance(df, pd.DataFrame) else df
    return next((m for m in QUALITY_METRICS if m in frame.columns and frame[m].notna().any()), None)


class SectionBuilder:
    """Collects charts, sections and omission notes while reading one connection."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, run_ids: list[str], rows: list[dict[str, Any]]
    ) -> None:
        self.con, self.run_ids, self.rows = con, run_ids, rows
        self.multi = len(run_ids) > 1
        self.charts: dict[str, alt.TopLevelMixin] = {}
        self.sections: list[Section] = []
        self.notes: list[str] = []
        self.cost_caveats: list[str] = []
        self.cost_data: dashboard.CostData | None = None
        self.lengths = pd.DataFrame(columns=["run_id", "label", "length"])
        # label -> pipeline kind: what each chart's colour follows (one colour per kind)
        labels = summary.pipeline_labels(con, run_ids)
        self.kinds: dict[str, str] = dict(zip(labels["label"], labels["pipeline"], strict=True))
        self.names = summary.run_names(con, run_ids)

    def coloured(self, df: pd.DataFrame) -> pd.DataFrame:
        """The frame with each label's kind colour, for a chart."""
        return charts.with_colours(df, self.kinds)

    def named(self, rows: Any) -> list[dict[str, Any]]:
        """Table rows with the run's name in place of its id (ids live in the details table)."""
        return [{**r, "run_id": self.names.get(str(r.get("run_id")), r.get("run_id"))}
                for r in _records(rows)]

    def omit(self, sec: Section, name: str, why: str) -> None:
        self.notes.append(f"{name}: {why}")
        sec.after.append(note(f"Chart {name} omitted: {why}."))

    def quality(self) -> None:
        header, judged = judge_parts(self.con, self.run_ids)  # the judge's controls beside its numbers
        sec = Section("Quality", before=[summary_table(self.rows, {"judge": header} if header else None)])
        lengths = summary.by_length(self.con, self.run_ids)
        self.lengths = lengths
        metric = quality_metric(lengths)
        sec.before.append(note(_headline_note(metric, summary.primary_metrics(self.con, self.run_ids))))
        if metric:
            self.charts["quality_vs_length"] = charts.quality_chart(self.coloured(lengths), metric,
                                                                    self.multi)
            sec.charts.append("quality_vs_length")
        else:
            self.omit(sec, "quality_vs_length", "no quality scores stored")
        grid = summary.needle_grid(self.con, self.run_ids, metric or "contains")
        if len(grid):
            self.charts["needle_heatmap"] = charts.needle_heatmap(grid, metric or "contains", self.multi)
            sec.charts.append("needle_heatmap")
        else:
            self.omit(sec, "needle_heatmap", "no needle length/depth tags in these runs")
        sec.after.extend(judged)
        self.sections.append(sec)

    def latency(self) -> None:
        sec = Section("Latency")
        pct = dashboard.latency_percentiles(self.con, self.run_ids)
        if pct.empty:
            self.omit(sec, "latency_percentiles", "no successful timed request")
            self.sections.append(sec)
            return
        conc = pct.groupby("run_id")["concurrency"].first()
        conc_text = (
            f"concurrency {conc.iloc[0]}"
            if conc.nunique() == 1 and not self.multi
            else "concurrency " + ", ".join(f"{self.names.get(r, r)}: {c}" for r, c in conc.items())
        )
        subtitle = (
            f"{conc_text}; warm = cached tokens >= {WARM_FRACTION:.0%} of context; E2E includes "
            "RAG's retrieval; x = document length (RAG sends only its top-k chunks)"
        )
        sec.before.append(note(
            "TTFT: time to first token (the prompt's prefill); E2E: end to end, from sending the "
            "question to the answer's last token (RAG's retrieval included); p50/p95: the median and "
            "the 95th percentile; warm: the document was already in the server's prefix cache."))
        self.charts["latency_percentiles"] = charts.latency_chart(
            self.coloured(dashboard.latency_long(pct)), subtitle, self.multi
        )
        sec.charts.append("latency_percentiles")
        cols = {
            "run_id": "run",
            "label": "pipeline",
            "concurrency": "conc.",
            "length": "doc length",
            "cache": "cache",
            "n": "n",
            "context_tokens_mean": "context tok",
        }
        if not self.multi:
            del cols["run_id"]
        for m, (_, head) in dashboard.LATENCY_MEASURES.items():
            cols |= {f"{m}_p{p}_ms": f"{head} p{p} ms" for p in dashboard.PERCENTILES}
        sec.after.append(table(self.named(pct), cols, left=("run_id", "label", "cache")))
        self.sections.append(sec)

    def under_load(self, chosen: prices.ChosenSheet) -> None:
        """Goodput, hit rate and the frontier per rate (compare/report/load_charts.py), priced with
        the report's sheet; nothing when no run shown has load steps. Follows the idle latencies."""
        from compare.report.load_charts import load_section

        hosted = chosen.sheet.self_hosted
        found = load_section(self.con, self.run_ids, self.kinds, quality_metric(self.rows),
                             hosted.usd_per_hour if hosted is not None else None)
        if found is not None:
            self.sections.append(found[0])
            self.charts.update(found[1])

    def cost(self, chosen: prices.ChosenSheet, qs: Sequence[int], frontier_q: int) -> None:
        sec = _sheet_section(chosen)
        data = dashboard.cost_data(self.con, self.run_ids, chosen, qs)
        front = Section("Quality vs cost")
        if data is None:
            self.omit(sec, "cost_vs_queries", "no successful request to price")
            self.omit(front, "quality_vs_cost", "no successful request to price")
            self.sections += [sec, front]
            return
        self.cost_caveats = data.caveats
        self.cost_data = data
        verdicts = (
            list(data.verdicts) if len(data.verdicts) <= 6 else [*data.verdicts[:5], "... (see the table)"]
        )
        if not data.marks.empty:
            verdicts.append("diamonds: break-even q* (both cost the same per query)")
        self.charts["cost_vs_queries"] = charts.cost_chart(self.coloured(data.curve), data.marks, verdicts,
                                                           self.multi)
        sec.charts.append("cost_vs_queries")
        cols = {c: _cost_header(c) for c in cost_columns(qs)}
        cols = {**({"run_id": "run"} if self.multi else {}), **cols}
        sec.before.append(note(
            "$ per 1,000 queries at q questions per document: long context pays a document's prefill "
            "once (one-time), then each question its cached re-read (marginal); RAG pays its index "
            "once and its chunks per question. q* (break-even): the q where two pipelines cost the same."))
        sec.after.append(table(self.named(data.table), cols,
                               left=("run_id", "label", "view", "warm_basis", "caveats")))
        sec.after.append("<h3>Break-even (queries per document)</h3>")
        sec.after.append(
            table(
                data.pairs,
                {c: c.replace("_", " ") for c in BREAK_EVEN_COLUMNS},
                left=("view", "a", "b", "cheaper_below", "cheaper_above", "status"),
            )
        )
        self._frontier(front, data, frontier_q)
        self.sections += [sec, front]

    def _frontier(self, front: Section, data: dashboard.CostData, frontier_q: int) -> None:
        """Quality against cost needs both: a run without scores still gets its cost section."""
        metric = quality_metric(self.rows)
        points = dashboard.frontier(self.rows, data, frontier_q, metric) if metric else pd.DataFrame()
        if points.empty:
            self.omit(front, "quality_vs_cost", "no pipeline has both a quality score and a cost")
            return
        assert metric is not None
        self.charts["quality_vs_cost"] = charts.frontier_chart(self.coloured(points), frontier_q, metric,
                                                               self.multi)
        front.charts.append("quality_vs_cost")
        front.after.append(
            table(
                points.to_dict("records"),
                {
                    "label": "pipeline",
                    "view": "view",
                    "usd_per_query": f"$/1k queries at q={frontier_q}",
                    "quality": f"mean {metric}",
                    "n": "n",
                    "on_frontier": "on frontier",
                    **({"on_run_frontier": "on its run's frontier"} if self.multi else {}),
                },
                left=("label", "view"),
            )
        )

    def retrieval(self) -> None:
        sec = Section("Retrieval")
        recall = dashboard.evidence_recall(self.con, self.run_ids)
        if recall.empty:
            self.omit(sec, "evidence_recall", "no evidence_recall scores for a retrieving pipeline")
        elif dashboard.varies_k(recall):
            self.charts["evidence_recall_vs_k"] = retrieval_charts.recall_vs_k_chart(recall, self.multi)
            sec.charts.append("evidence_recall_vs_k")
        else:
            self.charts["evidence_recall"] = retrieval_charts.recall_bars_chart(recall, self.multi)
            sec.charts.append("evidence_recall")
            sec.after.append(
                note("One k per chunk size in these runs: recall per configuration, no curve in k.")
            )
        evals = dashboard.retrieval_eval(self.con, self.run_ids)
        if not evals.empty:  # an optional table: absent is normal, so no note
            self.charts["retrieval_eval"] = retrieval_charts.retrieval_eval_chart(evals, self.multi)
            sec.charts.append("retrieval_eval")
        self.sections.append(sec)

    def routing(self) -> None:
        """What routing bought: compare.analysis.oracle's section (the best route per question)."""
        sec = Section("Routing")
        try:
            result = oracle.routing_section(self.con, self.run_ids)
        except Exception as exc:  # one section's failure must not take the whole report down
            sec.after.append(note(f"Routing section failed: {type(exc).__name__}: {exc}"))
            self.sections.append(sec)
            return
        strategies, routes, notes = _routing_parts(result)
        sec.before += [note(n) for n in notes]
        if strategies:
            cols = {
                k: k.replace("_", " ") for k in strategies[0] if k not in ("pipeline", "params_hash", "kind")
            }
            sec.before.append(table(self.named(strategies) if "run_id" in strategies[0] else strategies, cols,
                                    left=("run_id", "strategy", "route", "label")))
        if not routes.empty:
            if self.multi and "run_id" in routes.columns:
                is_oracle = routes["strategy"] == "oracle"
                routes.loc[is_oracle, "strategy"] = "oracle \u00b7 " + routes.loc[is_oracle, "run_id"].map(
                    self.names).fillna(routes.loc[is_oracle, "run_id"]).astype(str)
            self.charts["routing_shares"] = charts.route_share_chart(
                routes, self.multi and "run_id" in routes
            )
            sec.charts.append("routing_shares")
        elif strategies or notes:
            sec.after.append(note("No route shares to draw."))
        regret, why = regret_rows(self.con, self.run_ids, self.cost_data.chosen if self.cost_data else None)
        if regret:
            sec.after += [note(n) for n in why]
            sec.after.append(table(self.named(regret), COLUMNS, left=("run_id", "strategy")))
        self.sections.append(sec)


    def strata(self, q: int) -> None:
        """Per kind of question (issue 30): compare/report/strata_section.py; nothing when every
        question of the runs falls in one stratum."""
        from compare.report.strata_section import strata_section

        sheet = self.cost_data.chosen.sheet if self.cost_data else None
        sec, chart = strata_section(self.con, self.run_ids, self.names, self.kinds, sheet, q)
        if sec is not None:
            self.sections.append(sec)
        if chart is not None:
            self.charts["quality_by_stratum"] = chart

    def verdict(self, q: int) -> None:
        """The answer first: per run, the decision line and one card per pipeline, then the words
        they use; the per-axis evidence in words next; all before every other section. The needle
        section gets the effective lengths side by side."""
        from compare.report.load_charts import load_decision_html  # as in load(): loaded when needed

        self.strata(q)  # the per-stratum section (issue 30) follows Routing
        metric = quality_metric(self.rows)
        data = self.cost_data
        names = self.names
        front: list[str] = []
        boxes: list[str] = []
        decisions: list[Decision] = []
        for run_id in self.run_ids:
            table, pairs = (data.table, data.pairs) if data else ([], [])
            decision = self.decision_line(run_id, q)  # first on the page (issue 24 item 12)
            decisions.append(decision)
            v = run_verdict(run_id, self.rows, self.lengths, metric, table, pairs, q, decision)
            v = add_cache_facts(v, self.con)
            name = names.get(run_id) if self.multi else None
            labels = summary.pipeline_labels(self.con, [run_id])
            kinds = dict(zip(labels["label"], labels["pipeline"], strict=True))
            load_line = load_decision_html(self.con, run_id)  # a load run's per-rate claim first
            front += [*([load_line] if load_line else []), decision_html(decision, name),
                      cards_html(decision, kinds)]
            boxes.append(verdict_box(v, self.multi, names.get(run_id)))
            if v.effective and self.lengths["length"].nunique() > 1:  # Quality is sections[0]
                self.sections[0].after.append(effective_table(v, self.multi, names.get(run_id)))
        front.append(terms_html(decisions))
        self.sections[0:0] = [Section("", before=front), Section("The evidence, in words", before=boxes)]

    def decision_line(self, run_id: str, q: int) -> Decision:
        """The one decision line (compare/analysis/decision.py), priced with the report's sheet.
        Note for the report's layout (helper G and later): it must stay the FIRST thing of the
        verdict section (issue 24 item 12); it is this one call and `decision_html`."""
        sheet = self.cost_data.chosen.sheet if self.cost_data else prices.choose_sheet(
            self.con, [run_id], None).sheet
        return decision_for(self.con, run_id, q, sheet)


def _cost_header(column: str) -> str:
    """A cost table's header: $ per query columns are shown per 1,000 queries."""
    named = {"one_time_usd_per_doc": "one-time $ per document",
             "marginal_usd_per_query": "marginal $/1k queries",
             "run_paid_usd_per_query": "this run paid, $/1k queries"}
    if column in named:
        return named[column]
    return column.replace("usd_per_query_q", "$/1k queries, q=").replace("_", " ")


def _sheet_section(chosen: prices.ChosenSheet) -> Section:
    """The Cost section opens with the sheet and its source: a price is only as good as its date."""
    sheet = chosen.sheet
    sec = Section(
        "Cost",
        before=[
            f'<div class="sheet"><b>Prices: {html.escape(sheet.name)} @ {sheet.date.isoformat()}</b> '
            f"({html.escape(chosen.origin)}).<br>Source: {html.escape(sheet.source)}.<br>"
            f"{html.escape(sheet.note)}</div>"
        ],
    )
    missing = [v for v in ("api", "self_hosted") if v not in sheet.views()]
    if missing:
        sec.before.append(
            note(
                f"View(s) not in this sheet: {', '.join(missing)}; pass a sheet with "
                "both [api] and [self_hosted] sections to see both."
            )
        )
    return sec


def _headline_note(metric: str | None, primaries: dict[str, int]) -> str:
    """What the quality number is: the headline's make-up, or why another metric stands in."""
    if metric == "headline":
        made_of = ", ".join(f"{m} ({n} question{'s' * (n != 1)})" for m, n in primaries.items())
        return ("Quality is the headline: each question scored by its own metric, as its corpus "
                f"declares it{': ' + made_of if made_of else ''}; a failed request scores 0.")
    return (f"These runs have no headline scores; quality is {metric or 'not scored'} "
            "(`ragvslc score` adds the headline to stored runs).")


def _records(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, pd.DataFrame):
        return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in obj.to_dict("records")]
    return [dict(r) for r in obj or []]


def _routing_parts(result: Any) -> tuple[list[dict[str, Any]], pd.DataFrame, list[str]]:
    """(table rows, route-share rows, notes) from the hook's answer: a list of dict rows, or an
    object with `strategies`/`routes` frames and `notes` (compare.analysis.oracle.RoutingSection)."""
    if result is None:
        return [], pd.DataFrame(), []
    if isinstance(result, list | pd.DataFrame):
        rows = _records(result)
        shares = pd.DataFrame(rows) if rows and {"route", "share"} <= set(rows[0]) else pd.DataFrame()
        if not shares.empty and "strategy" not in shares.columns:
            shares["strategy"] = shares.get("label", "routes")
        return rows, shares, []
    routes = getattr(result, "routes", None)
    routes = routes.copy() if isinstance(routes, pd.DataFrame) else pd.DataFrame(_records(routes))
    if not charts.columns_present(routes, ("strategy", "route", "share")):
        routes = pd.DataFrame()
    return _records(getattr(result, "strategies", None)), routes, list(getattr(result, "notes", []) or [])

"""Altair charts of the report, one function per question a reader asks; data in, chart out.

Interactivity is the same on every chart, so a reader learns it once: clicking a pipeline in a
legend highlights it (the others fade), and when a page shows several runs one run selector
(the page's, see html.py) sets the `run_pick` parameter each chart declares. Static PNG/SVG are
rendered with nothing picked: every run, every pipeline.

Colour means the same on every chart: one colour per pipeline kind (compare/report/palette.py).
A frame's `kind_name` and `colour` columns carry it (`with_colours`); configurations differ by
line dash and point shape (the "pipeline" legend), so no line hides another where they coincide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import altair as alt
import pandas as pd

from compare.report.palette import DASHES, ROUTE_COLOURS, SHAPES
from compare.report.palette import with_colours as with_colours  # the sections colour frames here

RUN_PARAM = "run_pick"
_C = TypeVar("_C", alt.Chart, alt.LayerChart, alt.FacetChart)
VIEW_NAMES = {"api": "API-equivalent", "self_hosted": "self-hosted"}
LEGEND = alt.Legend(labelLimit=400)  # labels carry the knobs (and run ids): never truncate them
_LOG = alt.Scale(type="log", nice=False, padding=12)  # tight: a nice log domain wastes decades
_MS_AXIS = alt.Axis(format="~s")
_USD_AXIS = alt.Axis(format="$.3~g", tickCount=6, labelOverlap="greedy")


def _colour(df: pd.DataFrame) -> alt.Color:
    """Colour by pipeline KIND (the frame's `kind_name` and `colour` columns, `with_colours`), an
    explicit domain and range so a kind has its colour on every chart and every page. Each
    configuration is told apart by the "pipeline" legend's dash and shape, which is computed
    from the rows shown, so it shrinks to the run the page's picker picks."""
    if "colour" not in df.columns or df.empty:
        return alt.Color("label:N", title="pipeline", legend=LEGEND)
    pairs = df[["kind_name", "colour"]].drop_duplicates("kind_name").sort_values("kind_name")
    return alt.Color("kind_name:N", title="kind", legend=LEGEND,
                     scale=alt.Scale(domain=pairs["kind_name"].tolist(), range=pairs["colour"].tolist()))


def _dash(title: str = "pipeline", legend: bool = True) -> alt.StrokeDash:
    return alt.StrokeDash("label:N", title=title, legend=LEGEND if legend else None,
                          scale=alt.Scale(range=DASHES))


def _shape(title: str = "pipeline") -> alt.Shape:
    return alt.Shape("label:N", title=title, legend=LEGEND, scale=alt.Scale(range=SHAPES))


def _pick() -> alt.Parameter:
    """Legend-click highlight of one pipeline (shift-click adds more)."""
    return alt.selection_point(name="pick", fields=["label"], bind="legend")


def _faded(pick: alt.Parameter) -> Any:  # altair's conditional type is private
    """Full opacity for the picked pipelines (all, when none is picked), faint for the rest."""
    return alt.when(pick).then(alt.value(1.0)).otherwise(alt.value(0.15))


def by_run(chart: _C, multi_run: bool) -> _C:
    """Show only the picked run (all when none is picked); a no-op for a single run."""
    if not multi_run:
        return chart
    return chart.transform_filter(f"{RUN_PARAM} == null || datum.run_id == {RUN_PARAM}")


def with_run_param(chart: _C, multi_run: bool) -> _C:
    """Declare the page-driven run parameter at the top of a chart that filters by it."""
    return chart.add_params(alt.param(name=RUN_PARAM, value=None)) if multi_run else chart


def _length_axis(df: pd.DataFrame, field: str = "length", title: str = "document length (tokens)") -> alt.X:
    """Log length axis ticked at the lengths that were run (a needle grid has a handful)."""
    lengths = sorted(v for v in df[field].dropna().unique())
    axis = alt.Axis(values=lengths, format="~s") if 0 < len(lengths) <= 12 else alt.Axis(format="~s")
    return alt.X(f"{field}:Q", title=title, scale=alt.Scale(type="log", nice=False, padding=16), axis=axis)


def length_title(df: pd.DataFrame) -> str:
    """Say which length the x axis is: the needle corpus's target, or measured tokens."""
    if len(df) and bool(df["is_target"].all()):
        return "document length (target tokens)"
    return "document length (tokens)"


def metric_title(metric: str) -> str:
    """An axis name a reader understands: the headline mixes metrics, so it says so."""
    return "headline (each question's own metric)" if metric == "headline" else metric


def quality_chart(df: pd.DataFrame, metric: str, multi_run: bool = False) -> alt.TopLevelMixin:
    """Quality vs length: does a pipeline degrade as the document grows?"""
    cols = ["run_id", "label", "length", "doc_tokens", "n", "errors", metric]
    data = df[[*cols, *(["kind_name", "colour"] if "colour" in df.columns else [])]].rename(
        columns={metric: "score"})
    pick = _pick()
    chart = (
        alt.Chart(data, title=f"Quality vs document length ({metric})")
        .mark_line(point=alt.OverlayMarkDef(size=70, filled=False, strokeWidth=2), strokeWidth=2.5)
        .encode(
            x=_length_axis(df, title=length_title(df)),
            y=alt.Y("score:Q", title=f"mean {metric_title(metric)}", scale=alt.Scale(domain=[0, 1.02])),
            color=_colour(data),
            strokeDash=_dash(legend=False),  # the shape legend names them
            shape=_shape(),
            opacity=_faded(pick),
            tooltip=["label", "length", "doc_tokens", "score", "n", "errors"],
        )
        .add_params(pick)
        .properties(width=480, height=300)
    )
    return with_run_param(by_run(chart, multi_run), multi_run)


def needle_heatmap(grid: pd.DataFrame, metric: str, multi_run: bool = False) -> alt.TopLevelMixin:
    """Length x depth per pipeline, side by side: where in a long document does recall fail?"""
    data = grid[["run_id", "label", "target_tokens", "depth", "score", "n"]].copy()
    lengths = sorted(data["target_tokens"].unique(), reverse=True)
    # Wide enough for the facet header (the pipeline label), so neighbouring headers never overlap.
    width = max(120, 45 * data["depth"].nunique(), 8 * int(data["label"].str.len().max()))
    base = alt.Chart().encode(
        x=alt.X("depth:O", title="needle depth", axis=alt.Axis(format=".0%", labelAngle=0)),
        y=alt.Y("target_tokens:O", title="document length (target tokens)", sort=lengths),
    )
    rect = base.mark_rect(stroke="white").encode(
        # viridis: ordered dark to light for every reader (red-green fails the commonest deficiency)
        color=alt.Color(
            "score:Q", title="mean score", scale=alt.Scale(domain=[0, 1], scheme="viridis"),
            legend=alt.Legend(titleLimit=0, gradientLength=120),
        ),
        tooltip=["label", "target_tokens", alt.Tooltip("depth:Q", format=".0%"), "score", "n"],
    )
    text = (  # a cell whose every request failed has no score: say so instead of "null"
        base.transform_calculate(shown="datum.score == null ? 'failed' : format(datum.score, '.2f')")
        .mark_text(fontSize=12)
        .encode(
            text="shown:N",
            color=alt.when("datum.score != null && datum.score < 0.55")
            .then(alt.value("white"))
            .otherwise(alt.value("black")),
        )
    )
    layered = alt.LayerChart(data=data, layer=[rect, text])
    chart = (
        by_run(layered, multi_run)
        .properties(width=width, height=max(120, 30 * len(lengths)))
        .facet(column=alt.Column("label:N", title=None, header=alt.Header(labelFontSize=13, labelLimit=0)))
        .properties(title=f"Needle recall by length and depth (mean {metric_title(metric)})")
    )
    return with_run_param(chart, multi_run)


def latency_chart(long: pd.DataFrame, subtitle: str, multi_run: bool = False) -> alt.TopLevelMixin:
    """TTFT and end-to-end percentiles vs document length, cold and warm requests in separate
    rows: a warm long-context request skips most of its prefill, so mixing them hides both."""
    pick = _pick()
    measures = list(dict.fromkeys(long["measure"]))
    chart = (
        alt.Chart(long)
        .mark_line(point=alt.OverlayMarkDef(size=50))
        .encode(
            x=_length_axis(long),
            y=alt.Y("ms:Q", title="milliseconds (log)", scale=_LOG, axis=_MS_AXIS),
            color=_colour(long),
            shape=_shape(),
            strokeDash=alt.StrokeDash("percentile:N", title="percentile", sort=["p50", "p95", "p99"]),
            opacity=_faded(pick),
            tooltip=[
                "label",
                "cache",
                "measure",
                "percentile",
                "length",
                alt.Tooltip("ms:Q", format=",.0f"),
                "n",
                alt.Tooltip("context_tokens_mean:Q", format=",.0f", title="context tokens"),
                "concurrency",
            ],
        )
        .add_params(pick)
        .properties(width=340, height=220)
    )
    faceted = (
        by_run(chart, multi_run)
        .facet(
            column=alt.Column("measure:N", title=None, sort=measures, header=alt.Header(labelFontSize=13)),
            row=alt.Row(
                "cache:N", title="requests", sort=["cold", "warm"], header=alt.Header(labelFontSize=13)
            ),
        )
        .properties(
            title=alt.Title("Latency percentiles vs document length, cold vs warm", subtitle=subtitle)
        )
    )
    return with_run_param(faceted, multi_run)


def cost_chart(
    curve: pd.DataFrame, marks: pd.DataFrame, subtitle: Sequence[str], multi_run: bool = False
) -> alt.TopLevelMixin:
    """$ per 1,000 queries vs questions per document, one panel per price view, crossings
    marked: where the long-context curve (cold prefill amortised over q) meets RAG's flatter one.
    Each break-even's label sits on its own row at the top of the panel, so labels never overlap."""
    frames = [curve.assign(layer="curve")]
    if not marks.empty:
        m = marks.rename(columns={"break_even_q": "queries_per_doc"}).assign(layer="mark")
        panel = ["view", *(["run_id"] if "run_id" in m.columns else [])]
        m["row"] = m.groupby(panel)["queries_per_doc"].rank(method="first").astype(int) - 1
        frames.append(m)
    data = pd.concat(frames, ignore_index=True)
    data["view"] = data["view"].map(VIEW_NAMES).fillna(data["view"])
    data["usd_per_1k"] = data["usd_per_query"] * 1000
    pick = _pick()
    x = alt.X("queries_per_doc:Q", title="queries per document (log)", scale=_LOG, axis=alt.Axis(format="~s"))
    y = alt.Y("usd_per_1k:Q", title="$ per 1,000 queries (log)", scale=_LOG, axis=_USD_AXIS)
    is_mark = "datum.layer == 'mark'"
    lines = (
        alt.Chart()
        .transform_filter("datum.layer == 'curve'")
        .mark_line(strokeWidth=2.5)
        .encode(
            x=x,
            y=y,
            color=_colour(curve),
            strokeDash=_dash(),
            opacity=_faded(pick),
            tooltip=["label", "view", "queries_per_doc", alt.Tooltip("usd_per_1k:Q", format="$.3~g",
                                                                     title="$ per 1,000 queries")],
        )
        .add_params(pick)
    )
    layers: list[alt.Chart] = [lines]
    if not marks.empty:
        tip = [
            "a",
            "b",
            alt.Tooltip("queries_per_doc:Q", format=".3~g", title="break-even q"),
            alt.Tooltip("usd_per_1k:Q", format="$.3~g", title="$ per 1,000 queries"),
            "status",
        ]
        layers += [
            alt.Chart().transform_filter(is_mark).mark_rule(strokeDash=[4, 3], color="#555").encode(x=x),
            alt.Chart()
            .transform_filter(is_mark)
            .mark_point(shape="diamond", size=110, filled=True, color="black")
            .encode(x=x, y=y, tooltip=tip),
        ]
        for row in range(int(data["row"].max()) + 1):  # one text row per crossing of a panel
            layers.append(
                alt.Chart()
                .transform_filter(f"{is_mark} && datum.row == {row}")
                .mark_text(align="left", dx=4, fontSize=11, baseline="top")
                .encode(x=x, y=alt.value(4 + 14 * row), text="text:N")
            )
    chart = by_run(alt.LayerChart(data=data, layer=layers), multi_run).properties(width=400, height=280)
    faceted = chart.facet(column=alt.Column("view:N", title=None, header=alt.Header(labelFontSize=13)))
    faceted = faceted.resolve_scale(y="independent").properties(
        title=alt.Title("Cost per 1,000 queries vs queries per document", subtitle=list(subtitle))
    )
    return with_run_param(faceted, multi_run)


def frontier_chart(points: pd.DataFrame, q: int, metric: str, multi_run: bool = False) -> alt.TopLevelMixin:
    """Quality against cost at q questions per document: configs on the staircase are the only
    ones worth choosing; everything else is beaten on both axes by one of them."""
    data = points.assign(view=points["view"].map(VIEW_NAMES).fillna(points["view"]))
    # One run picked: its own frontier; all runs: the frontier across them.
    now = (
        f"{RUN_PARAM} == null ? datum.on_frontier : datum.on_run_frontier"
        if multi_run
        else "datum.on_frontier"
    )
    pick = _pick()
    data["usd_per_1k"] = data["usd_per_query"] * 1000
    x = alt.X(
        "usd_per_1k:Q",
        title=f"$ per 1,000 queries at {q} queries/document (log)",
        scale=alt.Scale(type="log", nice=False, padding=40),
        axis=_USD_AXIS,
    )
    y = alt.Y("quality:Q", title=f"mean {metric_title(metric)}", scale=alt.Scale(domain=[0, 1]))
    step = (
        alt.Chart()
        .transform_filter(now)
        .mark_line(interpolate="step-after", color="#333", strokeDash=[5, 3])
        .encode(x=x, y=y, order="usd_per_1k:Q")
    )
    dots = (
        alt.Chart()
        .mark_point(size=140, filled=True)
        .encode(
            x=x,
            y=y,
            color=_colour(data),
            shape=_shape(),
            size=alt.Size("frontier:N", title=None, sort=["on frontier", "dominated"],
                          scale=alt.Scale(range=[160, 50])),
            opacity=_faded(pick),
            tooltip=[
                "label",
                "view",
                alt.Tooltip("usd_per_1k:Q", format="$.3~g", title="$ per 1,000 queries"),
                "quality",
                "n",
                "frontier:N",
            ],
        )
        .add_params(pick)
    )
    layered = alt.LayerChart(data=data, layer=[step, dots]).transform_calculate(
        frontier=f"({now}) ? 'on frontier' : 'dominated'"
    )
    chart = by_run(layered, multi_run).properties(width=400, height=280)
    faceted = chart.facet(column=alt.Column("view:N", title=None, header=alt.Header(labelFontSize=13)))
    faceted = faceted.resolve_scale(x="independent").properties(
        title=alt.Title(
            "Quality vs cost", subtitle="dashed staircase: the Pareto frontier (cheaper and better)"
        )
    )
    return with_run_param(faceted, multi_run)


def route_share_chart(routes: pd.DataFrame, multi_run: bool = False) -> alt.TopLevelMixin:
    """Where each router (and the oracle) sent the questions: share per route."""
    chart = (
        alt.Chart(routes, title="Share of questions per route")
        .mark_bar()
        .encode(
            y=alt.Y("strategy:N", title=None, axis=alt.Axis(labelLimit=400)),
            x=alt.X("share:Q", title="share of questions", stack="normalize", axis=alt.Axis(format="%")),
            # the route's colour is its pipeline kind's: long context blue, RAG orange, as everywhere
            color=alt.Color("route:N", title="route", legend=LEGEND, scale=alt.Scale(
                domain=list(ROUTE_COLOURS), range=list(ROUTE_COLOURS.values()))),
            tooltip=[
                "strategy",
                "route",
                "n",
                alt.Tooltip("share:Q", format=".0%"),
                alt.Tooltip("quality:Q", format=".3f"),
            ],
        )
        .properties(width=420, height=max(40, 30 * routes["strategy"].nunique()))
    )
    return with_run_param(by_run(chart, multi_run), multi_run)


def columns_present(df: pd.DataFrame, names: Sequence[str]) -> bool:
    """Whether a frame carries every column a chart encodes (a partial frame is 'no data')."""
    return not df.empty and all(n in df.columns for n in names)

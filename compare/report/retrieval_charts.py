"""The report's retrieval charts (recall by k, evidence recall, retrieval-only evaluations):
RAG's own questions, in RAG's colour, with the legend and run selector of compare/report/charts.py."""

from __future__ import annotations

import altair as alt
import pandas as pd

from compare.report.charts import LEGEND, by_run, with_run_param
from compare.report.palette import DASHES, KIND_COLOURS, SHAPES


def recall_vs_k_chart(recall: pd.DataFrame, multi_run: bool = False) -> alt.TopLevelMixin:
    """Evidence recall as k grows, one line per configuration (all knobs but k): how many chunks
    does retrieval need before the evidence is among them?"""
    ks = sorted(recall["top_k"].unique())
    chart = (
        alt.Chart(recall, title="RAG evidence recall vs k")
        .mark_line(point=alt.OverlayMarkDef(size=70))
        .encode(
            x=alt.X("top_k:Q", title="k (chunks retrieved)", axis=alt.Axis(values=ks, format="d")),
            y=alt.Y("recall:Q", title="mean evidence recall", scale=alt.Scale(domain=[0, 1])),
            # every line is a RAG configuration: RAG's colour, told apart by dash and shape
            color=alt.value(KIND_COLOURS["rag"]),
            strokeDash=alt.StrokeDash("series:N", title="configuration", legend=LEGEND,
                                      scale=alt.Scale(range=DASHES)),
            shape=alt.Shape("series:N", title="configuration", legend=LEGEND, scale=alt.Scale(range=SHAPES)),
            tooltip=["label", "top_k", "chunk_size", alt.Tooltip("recall:Q", format=".3f"), "n"],
        )
        .properties(width=420, height=260)
    )
    return with_run_param(by_run(chart, multi_run), multi_run)


def recall_bars_chart(recall: pd.DataFrame, multi_run: bool = False) -> alt.TopLevelMixin:
    """Evidence recall per retrieving config (one k each: no curve to draw)."""
    base = alt.Chart(recall, title="RAG evidence recall per configuration").encode(
        y=alt.Y("label:N", title=None, axis=alt.Axis(labelLimit=400)),
        x=alt.X("recall:Q", title="mean evidence recall", scale=alt.Scale(domain=[0, 1])),
        tooltip=["label", "top_k", "chunk_size", alt.Tooltip("recall:Q", format=".3f"), "n"],
    )
    bars = base.mark_bar(color=KIND_COLOURS["rag"])  # recall is RAG's: its kind's colour
    text = base.mark_text(align="right", dx=-4, color="black").encode(text=alt.Text("recall:Q", format=".2f"))
    chart = alt.LayerChart(layer=[bars, text]).properties(width=420, height=max(40, 28 * len(recall)))
    return with_run_param(by_run(chart, multi_run), multi_run)


def retrieval_eval_chart(df: pd.DataFrame, multi_run: bool = False) -> alt.TopLevelMixin:
    """recall@k / MRR vs k from a retrieval-only evaluation, one panel per metric."""
    chart = (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=alt.X("k:Q", title="k"),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("series:N", title="configuration", legend=LEGEND),
            tooltip=["series", "metric", "k", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=300, height=220)
    )
    filtered = by_run(chart, multi_run and "run_id" in df.columns)
    faceted = filtered.facet(column=alt.Column("metric:N", title=None)).properties(
        title="Retrieval evaluation vs k"
    )
    return with_run_param(faceted, multi_run and "run_id" in df.columns)

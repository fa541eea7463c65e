"""The report's section on a load sweep (issue 28): what each pipeline delivers as traffic grows.

Three questions, one chart each: how many good answers per second at each offered rate
(goodput; the diagonal is every request answered within its SLOs), how much of each step's
prompts the prefix cache served (measured from /metrics, and the cache model's derived
prediction beside it when the server's pool was recorded), and which pipeline is worth
choosing at which rate: quality against the cost of a good answer, DERIVED as the replica
seconds the step's requests held per answer that met the SLOs (and $ per 1,000 of them with the
sheet's self-hosted $/h; latency enters through the SLOs), one point per pipeline and steady
step, the per-rate frontier flagged. A step that saturated, was cut or skipped has no throughput:
it is drawn as a cross at the axis, never as a point on the steady curve.

Colours follow compare/report/palette.py: one per pipeline kind; configurations by dash/shape.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import duckdb
import pandas as pd

from compare.analysis import summary
from compare.analysis.load import step_busy_share, step_metrics
from compare.analysis.load_verdict import load_verdicts, slo_words
from compare.report.charts import LEGEND, with_colours
from compare.report.data import pareto
from compare.report.html import Section, note, table
from compare.report.palette import DASHES, SHAPES
from compare.store.views import has_table, is_load_run

COLUMNS = ("run_id", "label", "pipeline", "params_hash", "step", "rate", "concurrency", "status", "steady",
           "note", "goodput_rps", "achieved_rps", "slo_attainment", "hit_rate", "derived_hit_rate",
           "quality", "e2e_p90_ms", "ttft_p50_ms", "duration_s")
_STATUS_NOTE = "saturated, cut or skipped: no steady throughput"


def load_points(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str],
                slos: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per (run, pipeline config, step) of every load sweep among `run_ids`, labelled as
    the rest of the report labels pipelines; empty when none of the runs has load steps."""
    if not has_table(con, "load_steps"):
        return pd.DataFrame(columns=list(COLUMNS))
    swept = [r[0] for r in con.execute(
        "SELECT DISTINCT run_id FROM load_steps WHERE list_contains(?, run_id)", [list(run_ids)]).fetchall()]
    rows = [{**s, "run_id": r} for r in swept for s in step_metrics(con, r, _slos(con, r, slos))]
    if not rows:
        return pd.DataFrame(columns=list(COLUMNS))
    labels = summary.pipeline_labels(con, list(run_ids))
    df = pd.DataFrame(rows).merge(labels, on=["run_id", "pipeline", "params_hash"], how="left")
    df["label"] = df["label"].fillna(df["pipeline"])
    return df[list(COLUMNS)]


def priced(points: pd.DataFrame, usd_per_hour: float | None, busy: pd.Series) -> pd.DataFrame:
    """Each step's replica seconds per good answer, DERIVED: the replica time its requests held
    (`busy`, the measured share of the step's wall time with one of them in flight) over the
    good answers it gave (goodput); and, with a self-hosted price, $ per 1,000 good answers
    (seconds x usd_per_hour / 3.6). At one rate every pipeline that keeps up has the same
    goodput; what differs is how much of the machine its answers take. None where nothing met
    the SLOs (no good answer to price)."""
    good = points["goodput_rps"].astype(float)
    seconds = (busy.astype(float) / good).where(good > 0)
    usd = seconds * usd_per_hour / 3.6 if usd_per_hour else seconds * float("nan")
    return points.assign(replica_s_per_good=seconds, usd_per_1k_good=usd)


def busy_shares(con: duckdb.DuckDBPyConnection, points: pd.DataFrame) -> pd.Series:
    """Per step, its measured busy share (compare/analysis/load.py step_busy_share); None for a
    step without a duration."""
    return pd.Series([step_busy_share(con, r.run_id, r.pipeline, r.params_hash, r.step, float(r.duration_s))
                      if r.duration_s and r.duration_s > 0 else None for r in points.itertuples()],
                     index=points.index, dtype=float)


def _slos(con: duckdb.DuckDBPyConnection, run_id: str, given: Mapping[str, float] | None) -> dict[str, float]:
    """The SLOs the sweep was run with (its recorded `[load]`), unless the caller gives some."""
    if given is not None:
        return dict(given)
    row = con.execute("SELECT any_value(load) FROM load_steps WHERE run_id = ?", [run_id]).fetchone()
    import json

    spec = json.loads(row[0]) if row and row[0] else {}
    keys = {"ttft": "slo_ttft_ms", "e2e": "slo_e2e_ms", "tpot": "slo_tpot_ms"}
    return {k: float(spec[f]) for k, f in keys.items() if isinstance(spec, dict) and spec.get(f)}


def load_decision_html(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """A load run's claim, rate by rate (compare/analysis/load_verdict.py), shown above the decision
    line, which pools every step's rows; None for an idle run."""
    if not (is_load_run(run_id) and is_swept(con, run_id)):
        return None
    slos = _slos(con, run_id, None)
    rows = step_metrics(con, run_id, slos)
    labels = summary.pipeline_labels(con, [run_id])
    names = dict(zip(labels["params_hash"], labels["label"], strict=True))
    items = "".join(f"<li>{html.escape(v.text)}</li>" for v in load_verdicts(rows, names))
    return (f"<div class='decision' id='load-decision'><b>Under traffic</b> (SLOs: "
            f"{html.escape(slo_words(slos))}; each rate judged on its own requests; the decision "
            f"below pools every rate's rows):<ul>{items}</ul></div>")


def is_swept(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether the file holds load steps of this run."""
    return has_table(con, "load_steps") and bool(
        con.execute("SELECT count(*) FROM load_steps WHERE run_id = ?", [run_id]).fetchone()[0])  # type: ignore[index]


def frontier_by_rate(points: pd.DataFrame) -> pd.DataFrame:
    """Steady rate steps with a quality and a cost per good answer (`priced`), each flagged
    `on_frontier` when no other pipeline at the same rate is both at least as good and at most
    as dear. A step whose answers all missed the SLOs has no cost and is left out."""
    ok = points[points["steady"].astype(bool) & points["rate"].notna() & points["quality"].notna()
                & points["replica_s_per_good"].notna()].copy()
    if ok.empty:
        return ok.assign(on_frontier=pd.Series(dtype=bool))
    flags = [pareto(g, x="replica_s_per_good", y="quality") for _, g in ok.groupby("rate")]
    return ok.assign(on_frontier=pd.concat(flags).reindex(ok.index).astype(bool))


def best_at_each_rate(points: pd.DataFrame) -> list[dict[str, Any]]:
    """Per offered rate: the pipelines on that rate's frontier, and those that did not keep up."""
    front = frontier_by_rate(points)
    out = []
    for rate in sorted(points["rate"].dropna().unique()):
        at = points[points["rate"] == rate]
        best = front[(front["rate"] == rate) & front["on_frontier"]].sort_values("quality", ascending=False)
        out.append({"rate": float(rate), "best": ", ".join(best["label"]) or "none: no good answer",
                    "not_steady": ", ".join(f"{r.label} ({r.status})" for r in at.itertuples()
                                            if not r.steady) or "-"})
    return out


def _base(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df)


def _kind_colour(df: pd.DataFrame) -> alt.Color:
    pairs = df[["kind_name", "colour"]].drop_duplicates("kind_name").sort_values("kind_name")
    return alt.Color("kind_name:N", title="kind", legend=LEGEND,
                     scale=alt.Scale(domain=pairs["kind_name"].tolist(), range=pairs["colour"].tolist()))


def _config(channel: type[alt.StrokeDash] | type[alt.Shape]) -> Any:
    rng = DASHES if channel is alt.StrokeDash else SHAPES
    return channel("label:N", title="pipeline", legend=LEGEND, scale=alt.Scale(range=rng))


def goodput_chart(points: pd.DataFrame) -> alt.TopLevelMixin:
    """Goodput against offered rate, one line per pipeline over its steady steps; the dashed
    diagonal is every offered request answered within its SLOs; a cross at zero marks a step
    that did not keep up (its goodput is not a steady number, so it is not on the line)."""
    df = points[points["rate"].notna()].copy()
    df["goodput_plot"] = df["goodput_rps"].where(df["steady"].astype(bool), 0.0)
    steady, broken = df[df["steady"].astype(bool)], df[~df["steady"].astype(bool)]
    x = alt.X("rate:Q", title="offered rate (requests/s)", scale=alt.Scale(zero=True))
    y = alt.Y("goodput_plot:Q", title="goodput (good answers/s)", scale=alt.Scale(zero=True))
    tip = ["label:N", "step:N", "status:N", alt.Tooltip("goodput_rps:Q", format=".3f"),
           alt.Tooltip("achieved_rps:Q", format=".3f"), alt.Tooltip("slo_attainment:Q", format=".0%"),
           "note:N"]
    top = float(df["rate"].max()) if len(df) else 1.0
    ideal = alt.Chart(pd.DataFrame({"rate": [0.0, top], "goodput_plot": [0.0, top]})).mark_line(
        color="#999", strokeDash=[4, 4]).encode(x=x, y=y)
    line = _base(steady).mark_line(point=alt.OverlayMarkDef(size=70, filled=True)).encode(
        x=x, y=y, color=_kind_colour(df), strokeDash=_config(alt.StrokeDash), detail="label:N", tooltip=tip)
    cross = _base(broken).mark_point(shape="cross", size=160, filled=True, strokeWidth=2).encode(
        x=x, y=y, color=_kind_colour(df), tooltip=tip)
    words = _base(broken).mark_text(dy=-12, fontSize=10).encode(x=x, y=y, text="status:N",
                                                                color=_kind_colour(df))
    return alt.layer(ideal, line, cross, words).properties(
        title=alt.TitleParams("Goodput vs offered rate", subtitle=f"cross at 0: {_STATUS_NOTE}"),
        width=420, height=260)


def hit_rate_chart(points: pd.DataFrame) -> alt.TopLevelMixin:
    """The prefix-cache hit rate of each step (server /metrics, over the step's prompts): filled
    points on the line for steady steps, hollow for the rest; a tick where the cache model's
    derived prediction is known (the server's pool was recorded)."""
    df = points[points["hit_rate"].notna() | points["derived_hit_rate"].notna()].copy()
    order = df.sort_values(["concurrency", "rate"], na_position="first")["step"].drop_duplicates().tolist()
    x = alt.X("step:N", title="step", sort=order, axis=alt.Axis(labelAngle=0))
    y = alt.Y("hit_rate:Q", title="prefix-cache hit rate", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%"))
    tip = ["label:N", "step:N", "status:N", alt.Tooltip("hit_rate:Q", format=".1%", title="measured"),
           alt.Tooltip("derived_hit_rate:Q", format=".1%", title="derived (cache model)")]
    steady = df[df["steady"].astype(bool) & df["hit_rate"].notna()]
    broken = df[~df["steady"].astype(bool) & df["hit_rate"].notna()]
    layers = [
        _base(steady).mark_line(point=alt.OverlayMarkDef(size=70, filled=True)).encode(
            x=x, y=y, color=_kind_colour(df), strokeDash=_config(alt.StrokeDash), detail="label:N",
            tooltip=tip),
        _base(broken).mark_point(size=90, filled=False, strokeWidth=2).encode(
            x=x, y=y, color=_kind_colour(df), tooltip=tip),
    ]
    derived = df[df["derived_hit_rate"].notna()]
    if len(derived):
        layers.append(_base(derived).mark_tick(thickness=2, size=22, strokeDash=[3, 2]).encode(
            x=x, y=alt.Y("derived_hit_rate:Q", scale=alt.Scale(domain=[0, 1])), color=_kind_colour(df),
            tooltip=tip))
    sub = "hollow: " + _STATUS_NOTE + ("; tick: the cache model's derived prediction" if len(derived) else "")
    title = alt.TitleParams("Prefix-cache hit rate per step", subtitle=sub)
    return alt.layer(*layers).properties(title=title, width=420, height=240)


def load_frontier_chart(front: pd.DataFrame, metric: str, usd_per_hour: float | None) -> alt.TopLevelMixin:
    """Quality against the cost of a good answer at each steady rate ($ per 1,000 with a
    self-hosted price, else replica seconds): a pipeline's points, one per rate (labelled),
    joined in rate order; big points are on their rate's frontier (nothing at that rate is both
    better and cheaper per good answer)."""
    df = front.assign(rate_text=front["rate"].map(lambda r: f"{r:g}/s"),
                      frontier=front["on_frontier"].map({True: "on its rate's frontier", False: "dominated"}))
    field, title, cost = (("usd_per_1k_good", "$ per 1,000 good answers (derived, log)",
                           f"replica time held at ${usd_per_hour:g}/h") if usd_per_hour else
                          ("replica_s_per_good", "replica seconds per good answer (derived, log)",
                           "replica time held (no self-hosted price in the sheet)"))
    x = alt.X(f"{field}:Q", title=title, scale=alt.Scale(type="log", nice=False, padding=30))
    y = alt.Y("quality:Q", title=f"mean {metric} under load", scale=alt.Scale(domain=[0, 1]))
    tip = ["label:N", "step:N", alt.Tooltip("quality:Q", format=".3f"),
           alt.Tooltip(f"{field}:Q", format=".3g"), alt.Tooltip("goodput_rps:Q", format=".3f"),
           alt.Tooltip("e2e_p90_ms:Q", format=".0f"), "frontier:N"]
    path = _base(df).mark_line(opacity=0.5).encode(x=x, y=y, color=_kind_colour(df), detail="label:N",
                                                   order="rate:Q",
                                                   strokeDash=alt.StrokeDash("label:N", legend=None,
                                                                             scale=alt.Scale(range=DASHES)))
    dots = _base(df).mark_point(filled=True).encode(
        x=x, y=y, color=_kind_colour(df), shape=_config(alt.Shape), tooltip=tip,
        size=alt.Size("frontier:N", title=None, sort=["on its rate's frontier", "dominated"],
                      scale=alt.Scale(range=[170, 50])))
    text = _base(df).mark_text(dx=9, dy=-9, fontSize=10, color="#333").encode(x=x, y=y, text="rate_text:N")
    return alt.layer(path, dots, text).properties(
        title=alt.TitleParams("Quality vs cost per good answer under load", subtitle=(
            f"{cost} over the good answers, per steady rate (derived); steps with no answer "
            "within the SLOs have no cost")),
        width=420, height=260)


def load_section(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], kinds: Mapping[str, str],
                 metric: str | None, usd_per_hour: float | None
                 ) -> tuple[Section, dict[str, alt.TopLevelMixin]] | None:
    """The "Under load" section and its charts, good answers priced at `usd_per_hour` (the
    sheet's self-hosted replica); None when no run shown has load steps."""
    points = load_points(con, run_ids)
    if points.empty:
        return None
    points = with_colours(priced(points, usd_per_hour, busy_shares(con, points)), kinds)
    sec = Section("Under load")
    sec.before.append(note(
        "Each pipeline under open-loop traffic, one step per offered rate (ragvslc load). Goodput: "
        "answers per second that met every SLO the sweep set; hit rate: the server's prefix-cache "
        "hits over prompt tokens during the step. A saturated step stopped early (its queue grew "
        "without bound); higher rates of that pipeline were skipped. Those steps have no steady "
        "numbers and are marked, not averaged in."))
    charts: dict[str, alt.TopLevelMixin] = {}
    if points["rate"].notna().any():
        charts["load_goodput"] = goodput_chart(points)
    if (points["hit_rate"].notna() | points["derived_hit_rate"].notna()).any():
        charts["load_hit_rate"] = hit_rate_chart(points)
    front = frontier_by_rate(points)
    if metric and not front.empty:
        charts["load_frontier"] = load_frontier_chart(front, metric, usd_per_hour)
        heads = {"rate": "offered rate (req/s)", "best": "on the frontier (quality vs cost per good answer)",
                 "not_steady": "did not keep up"}
        sec.after.append(table(best_at_each_rate(points), heads, left=("best", "not_steady")))
    sec.charts.extend(charts)
    sec.after.append(table(points.to_dict("records"), {
        "label": "pipeline", "step": "step", "status": "status", "goodput_rps": "goodput/s",
        "achieved_rps": "achieved/s", "slo_attainment": "SLO met", "hit_rate": "hit rate",
        "derived_hit_rate": "hit rate (model, derived)", "quality": "quality", "e2e_p90_ms": "E2E p90 ms",
        "replica_s_per_good": "replica s / good answer (derived)", "usd_per_1k_good": "$ / 1k good (derived)",
    }, left=("label", "step", "status")))
    return sec, charts

"""Store -> SQL summaries -> Altair charts -> one self-contained report.html (+ PNG/SVG).

The page must open offline and years later, so the Vega JavaScript is inlined once (from
vl-convert's bundle, the same one `chart.to_html(inline=True)` uses) and every chart spec carries
its data; nothing is fetched from a CDN. Each chart is also saved as PNG and SVG for slides and
papers, rendered by vl-convert without a browser.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import duckdb
import pandas as pd
import vl_convert as vlc

from compare import summary

QUALITY_METRICS = ("contains", "exact_match", "token_f1", "request_ok")
_EMBED_OPTIONS = {"actions": {"export": True, "source": False, "compiled": False, "editor": False}}
_MS_AXIS = alt.Axis(format="~s")
_LEGEND = alt.Legend(labelLimit=400)  # labels carry the knobs (and run ids): never truncate them


@dataclass(frozen=True)
class ReportFiles:
    """What was written, by chart name, so a CLI can print paths and tests can open them."""

    html: Path
    png: dict[str, Path] = field(default_factory=dict)
    svg: dict[str, Path] = field(default_factory=dict)


def _length_title(df: pd.DataFrame) -> str:
    """Say which length the x axis is: the needle corpus's target, or measured tokens."""
    if len(df) and bool(df["is_target"].all()):
        return "document length (target tokens)"
    return "document length (tokens)"


def _length_axis(df: pd.DataFrame) -> alt.X:
    """Log length axis ticked at the lengths that were run (a needle grid has a handful)."""
    lengths = sorted(v for v in df["length"].dropna().unique())
    axis = alt.Axis(values=lengths, format="~s") if 0 < len(lengths) <= 12 else alt.Axis(format="~s")
    scale = alt.Scale(type="log", nice=False, padding=16)
    return alt.X("length:Q", title=_length_title(df), scale=scale, axis=axis)


def quality_metric(df: pd.DataFrame) -> str | None:
    """`contains` when the run scored it, else the next answer metric it did score."""
    return next((m for m in QUALITY_METRICS if m in df.columns and df[m].notna().any()), None)


def quality_chart(df: pd.DataFrame, metric: str = "contains") -> alt.Chart:
    """Quality vs length: does a pipeline degrade as the document grows?"""
    data = df[["label", "length", "doc_tokens", "n", "errors", metric]].rename(columns={metric: "score"})
    return (
        alt.Chart(data, title=f"Quality vs document length ({metric})")
        .mark_line(point=alt.OverlayMarkDef(size=60))
        .encode(
            x=_length_axis(df),
            y=alt.Y("score:Q", title=f"mean {metric}", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("label:N", title="pipeline", legend=_LEGEND),
            tooltip=["label", "length", "doc_tokens", "score", "n", "errors"],
        )
        .properties(width=480, height=300)
    )


def latency_chart(df: pd.DataFrame) -> alt.Chart:
    """TTFT and E2E medians vs length: prefill cost grows with context, retrieval's should not."""
    names = {"ttft_p50_ms": "TTFT p50", "e2e_p50_ms": "E2E p50"}
    data = df.melt(
        id_vars=["label", "length", "n", "errors"], value_vars=list(names), var_name="measure",
        value_name="ms",
    )
    data["measure"] = data["measure"].map(names)
    data = data[data["ms"] > 0]
    return (
        alt.Chart(data, title="Latency vs document length (successful requests)")
        .mark_line(point=alt.OverlayMarkDef(size=60))
        .encode(
            x=_length_axis(df),
            y=alt.Y("ms:Q", title="milliseconds (log)", scale=alt.Scale(type="log"), axis=_MS_AXIS),
            color=alt.Color("label:N", title="pipeline", legend=_LEGEND),
            strokeDash=alt.StrokeDash("measure:N", sort=list(names.values()), legend=None),
            shape=alt.Shape("measure:N", title="measure", sort=list(names.values())),
            tooltip=["label", "measure", "length", alt.Tooltip("ms:Q", format=",.0f"), "n", "errors"],
        )
        .properties(width=480, height=300)
    )


def needle_heatmap(grid: pd.DataFrame, metric: str = "contains") -> alt.FacetChart:
    """Length x depth per pipeline, side by side: where in a long document does recall fail?"""
    data = grid[["label", "target_tokens", "depth", "score", "n"]].copy()
    lengths = sorted(data["target_tokens"].unique(), reverse=True)
    # Wide enough for the facet header (the pipeline label), so neighbouring headers never overlap.
    width = max(120, 45 * data["depth"].nunique(), 8 * int(data["label"].str.len().max()))
    base = alt.Chart().encode(
        x=alt.X("depth:O", title="needle depth", axis=alt.Axis(format=".0%", labelAngle=0)),
        y=alt.Y("target_tokens:O", title="document length (target tokens)", sort=lengths),
    )
    rect = base.mark_rect(stroke="white").encode(
        color=alt.Color(
            "score:Q", title=f"mean {metric}", scale=alt.Scale(domain=[0, 1], scheme="redyellowgreen")
        ),
        tooltip=["label", "target_tokens", alt.Tooltip("depth:Q", format=".0%"), "score", "n"],
    )
    text = (  # a cell whose every request failed has no score: say so instead of "null"
        base.transform_calculate(shown="datum.score == null ? 'failed' : format(datum.score, '.2f')")
        .mark_text(fontSize=12)
        .encode(
            text="shown:N",
            color=alt.when("datum.score != null && (datum.score < 0.2 || datum.score > 0.8)")
            .then(alt.value("white"))
            .otherwise(alt.value("black")),
        )
    )
    return (
        alt.layer(rect, text, data=data)
        .properties(width=width, height=max(120, 30 * len(lengths)))
        .facet(column=alt.Column("label:N", title=None, header=alt.Header(labelFontSize=13, labelLimit=0)))
        .properties(title=f"Needle recall by length and depth ({metric})")
    )


# HTML ------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1200px; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
pre { background: #f7f7f7; padding: 0.5rem; overflow-x: auto; font-size: 0.8rem; }
.caveat { color: #8a4b00; } .chart { margin: 1rem 0 2rem; }
"""

_COLUMNS = {  # summary key -> (header, format); metrics are added in between, by name
    "run_id": ("run", "{}"), "label": ("pipeline", "{}"), "n": ("n", "{:d}"), "errors": ("errors", "{:d}"),
}
_TAIL = {
    "ttft_p50_ms": ("TTFT p50 ms", "{:,.0f}"), "ttft_p95_ms": ("TTFT p95 ms", "{:,.0f}"),
    "e2e_p50_ms": ("E2E p50 ms", "{:,.0f}"), "e2e_p95_ms": ("E2E p95 ms", "{:,.0f}"),
    "total_p50_ms": ("retrieval+E2E p50 ms", "{:,.0f}"), "context_tokens_mean": ("context tok", "{:,.0f}"),
    "prompt_tokens_mean": ("prompt tok", "{:,.0f}"), "cached_tokens_mean": ("cached tok", "{:,.0f}"),
}
_NOT_METRICS = {*_COLUMNS, *_TAIL, "pipeline", "params_hash"}
_LEFT = {"run_id", "label"}


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Plain HTML, so the numbers stay readable (and copyable) without JavaScript."""
    metrics = sorted({k for r in rows for k in r} - _NOT_METRICS)
    cols = {**_COLUMNS, **{m: (m, "{:.3f}") for m in metrics}, **_TAIL}
    if len({r["run_id"] for r in rows}) == 1:
        del cols["run_id"]
    head = "".join(
        f'<th class="{"l" if k in _LEFT else ""}">{html.escape(h)}</th>' for k, (h, _) in cols.items()
    )
    body = []
    for r in rows:
        cells = []
        for k, (_, fmt) in cols.items():
            v = r.get(k)
            text = "–" if v is None else fmt.format(int(v) if fmt == "{:d}" else v)
            cells.append(f'<td class="{"l" if k in _LEFT else ""}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _caveats(run: dict[str, Any]) -> list[str]:
    server = json.loads(run["server"]) if run["server"] else {}
    notes = [
        f"Concurrency {run['concurrency']}: compare latency only between runs at equal concurrency.",
        "Failed requests are counted in 'errors' but excluded from latency and token statistics; "
        "quality means are over the requests where a metric applies.",
    ]
    if "cpu" in str(server.get("vllm", "cpu")).lower():  # unknown build: assume the worst
        notes.insert(0, "CPU build; latency numbers are relative (compare pipelines, not absolute ms).")
    return notes


def run_section(run: dict[str, Any]) -> str:
    """The knobs of a run, verbatim, so a reader can reproduce or question the numbers."""
    def pretty(raw: str | None) -> str:
        return html.escape(json.dumps(json.loads(raw), indent=2, sort_keys=True) if raw else "{}")

    facts = {k: run[k] for k in ("model", "corpus", "status", "concurrency", "created_at", "git_sha")}
    items = "".join(
        f"<tr><th class='l'>{k}</th><td class='l'>{html.escape(str(v))}</td></tr>" for k, v in facts.items()
    )
    caveats = "".join(f"<li class='caveat'>{html.escape(c)}</li>" for c in _caveats(run))
    return (
        f"<h3>Run {html.escape(run['run_id'])}</h3><table>{items}</table><ul>{caveats}</ul>"
        f"<details><summary>server</summary><pre>{pretty(run['server'])}</pre></details>"
        f"<details><summary>spec</summary><pre>{pretty(run['spec'])}</pre></details>"
    )


def _script_json(obj: Any) -> str:
    """JSON that cannot close the <script> element it sits in."""
    return json.dumps(obj).replace("</", "<\\/")


def render_page(charts: dict[str, alt.TopLevelMixin], table: str, runs: list[dict[str, Any]]) -> str:
    """One page: the Vega bundle inlined once, then each chart's spec (with its data) embedded."""
    # The stub marks `snippet` required; at runtime it defaults to the globals snippet (as altair uses it).
    bundle = vlc.javascript_bundle(vl_version=_vl_version())  # type: ignore[call-arg]
    divs = "".join(f'<div class="chart" id="chart-{name}"></div>' for name in charts)
    embeds = "".join(
        f"vegaEmbed('#chart-{name}', {_script_json(c.to_dict())}, {_script_json(_EMBED_OPTIONS)})"
        ".catch(console.error);\n"
        for name, c in charts.items()
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ragvslc report</title>'
        f"<style>{_CSS}</style>\n<script>\n{bundle}\n</script></head><body>\n"
        "<h1>Long context vs RAG</h1>\n<h2>Summary</h2>\n" + table + "\n<h2>Charts</h2>\n" + divs
        + "\n<h2>Runs</h2>\n" + "".join(run_section(r) for r in runs)
        + f"\n<script>\n{embeds}</script>\n</body></html>\n"
    )


def _vl_version() -> str:
    """The Vega-Lite version Altair writes specs for, in vl-convert's spelling (v6_4)."""
    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    return f"v{major}_{minor}"


def _fetch_runs(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> list[dict[str, Any]]:
    cur = con.execute("SELECT * FROM runs WHERE list_contains(?, run_id) ORDER BY created_at", [run_ids])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def build_charts(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> dict[str, alt.TopLevelMixin]:
    """Every chart the data supports (no heatmap without depth tags, no quality without scores)."""
    lengths = summary.by_length(con, run_ids)
    charts: dict[str, alt.TopLevelMixin] = {}
    metric = quality_metric(lengths)
    if metric:
        charts["quality_vs_length"] = quality_chart(lengths, metric)
    charts["latency_vs_length"] = latency_chart(lengths)
    grid = summary.needle_grid(con, run_ids, metric or "contains")
    if len(grid):
        charts["needle_heatmap"] = needle_heatmap(grid, metric or "contains")
    return charts


def write_report(db_path: Path, out_dir: Path, run_ids: list[str] | None = None) -> ReportFiles:
    """Write report.html and <chart>.png/.svg for the given runs.

    Default is the latest run with predictions, not every run: a database accumulates runs of
    different corpora and models, and mixing them on one axis would compare unlike things.
    Raises ValueError (nothing written) when there is nothing to report.
    """
    if not Path(db_path).exists():
        raise ValueError(f"no database at {db_path}")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        try:
            known = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
        except duckdb.CatalogException as exc:
            raise ValueError(f"{db_path} is not a ragvslc store (no runs table)") from exc
        if run_ids is None:
            latest = summary.latest_run_id(con)
            if latest is None:
                raise ValueError(f"{db_path}: no run has predictions yet; nothing to report")
            run_ids = [latest]
        unknown = sorted(set(run_ids) - known)
        if unknown:
            raise ValueError(f"{db_path}: unknown run ids {unknown}; known: {sorted(known)}")
        rows = summary.pipeline_summary(con, run_ids)
        empty = sorted(set(run_ids) - {r["run_id"] for r in rows})
        if empty:
            raise ValueError(f"{db_path}: run(s) {empty} have no predictions; nothing to report")
        charts = build_charts(con, run_ids)
        runs = _fetch_runs(con, run_ids)
    finally:
        con.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(html=out_dir / "report.html")
    for name, chart in charts.items():
        files.png[name] = out_dir / f"{name}.png"
        files.svg[name] = out_dir / f"{name}.svg"
        chart.save(files.png[name], scale_factor=2)
        chart.save(files.svg[name])
    files.html.write_text(render_page(charts, summary_table(rows), runs), encoding="utf-8")
    return files

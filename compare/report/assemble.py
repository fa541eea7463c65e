"""Store -> summaries -> Altair charts -> one self-contained report.html (+ PNG/SVG per chart).

The entry points: which runs (and price sheet) a report covers, the header and the knobs
section that frame compare/report/sections.py's sections, and the files written. Each chart
is also saved as PNG and SVG (rendered by vl-convert, no browser) for slides and papers.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import duckdb

from compare.analysis import prices, summary
from compare.report.front import details_html
from compare.report.html import Section, knobs_section, render_page, run_picker
from compare.report.sections import SectionBuilder, quality_metric

__all__ = [  # quality_metric stays importable from here, where callers first met it
    "DEFAULT_QUERIES_PER_DOC", "Report", "ReportFiles", "build_report", "quality_metric", "write_report",
]

DEFAULT_QUERIES_PER_DOC = (1, 10, 100, 1000)


@dataclass(frozen=True)
class ReportFiles:
    """What was written, by chart name, so a CLI can print paths and tests can open them."""

    html: Path
    charts: list[str] = field(default_factory=list)  # in the page, whether or not images were saved
    png: dict[str, Path] = field(default_factory=dict)
    svg: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # charts left out, and why


def _fetch_runs(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> list[dict[str, Any]]:
    cur = con.execute("SELECT * FROM runs WHERE list_contains(?, run_id) ORDER BY created_at", [run_ids])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _check_runs(con: duckdb.DuckDBPyConnection, db_path: Path, run_ids: list[str] | None) -> list[str]:
    try:
        known = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
    except duckdb.CatalogException as exc:
        raise ValueError(f"{db_path} is not a ragvslc store (no runs table)") from exc
    if run_ids is None:
        run_ids = summary.last_command_runs(con)
    if run_ids is None:
        latest = summary.latest_run_id(con)
        if latest is None:
            raise ValueError(f"{db_path}: no run has predictions yet; nothing to report")
        run_ids = [latest]
    unknown = sorted(set(run_ids) - known)
    if unknown:
        raise ValueError(f"{db_path}: unknown run ids {unknown}; known: {sorted(known)}")
    return run_ids


@dataclass
class Report:
    """A report in memory: its Altair charts by name, the summary rows, and the page's parts.
    `write(folder)` writes the page (and chart images); in a notebook the report displays itself
    (`_repr_html_`: the page in a frame) and `charts[...]` are Altair charts."""

    run_ids: list[str]
    summary: list[dict[str, Any]]
    charts: dict[str, alt.TopLevelMixin]
    notes: list[str]
    header: list[str]
    sections: list[Section]

    def html(self) -> str:
        """The whole page, self-contained (the Vega bundle inlined)."""
        return render_page(self.header, self.sections, self.charts)

    def write(self, out_dir: Path | str, *, images: bool = True) -> ReportFiles:
        """Write report.html (and a PNG and an SVG per chart unless `images=False`) into `out_dir`."""
        return _write(self, Path(out_dir), images)

    def _repr_html_(self) -> str:
        """The page in a sandboxed frame: its scripts and styles stay out of the notebook's."""
        return (f'<iframe srcdoc="{html.escape(self.html(), quote=True)}" style="width: 100%; height: 900px; '
                'border: 1px solid #ccc" sandbox="allow-scripts"></iframe>')


def build_report(
    db_path: Path,
    run_ids: list[str] | None = None,
    *,
    price_sheet: Path | None = None,
    queries_per_doc: Sequence[int] = DEFAULT_QUERIES_PER_DOC,
    frontier_q: int = 10,
) -> Report:
    """The report's charts and sections for the given runs, nothing written.

    Default: the runs the last `run` / `demo` command produced (recorded in the store), else the
    latest run with predictions; never every run: a database accumulates runs of different
    corpora and models, and mixing them on one axis would compare unlike things.
    Prices: `price_sheet`, else the sheet stored with the runs, else the shipped example (the
    page says which). Raises ValueError when there is nothing to report.
    """
    if not queries_per_doc or any(q < 1 for q in queries_per_doc) or frontier_q < 1:
        raise ValueError(
            f"queries per document must be integers >= 1, got {list(queries_per_doc)}, {frontier_q}"
        )
    if not Path(db_path).exists():
        raise ValueError(f"no database at {db_path}")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        run_ids = _check_runs(con, Path(db_path), run_ids)
        rows = summary.pipeline_summary(con, run_ids)
        empty = sorted(set(run_ids) - {r["run_id"] for r in rows})
        if empty:
            raise ValueError(f"{db_path}: run(s) {empty} have no predictions; nothing to report")
        chosen = prices.choose_sheet(con, run_ids, price_sheet)
        b = SectionBuilder(con, run_ids, rows)
        b.quality()
        b.latency()
        b.under_load(chosen)
        b.cost(chosen, queries_per_doc, frontier_q)
        b.retrieval()
        b.routing()
        b.verdict(frontier_q)
        runs = _fetch_runs(con, run_ids)
        labels = summary.pipeline_labels(con, run_ids)
    finally:
        con.close()
    knobs = Section(
        "Details: runs, ids, knobs and caveats",
        before=[
            details_html(runs, labels, b.names),
            *(knobs_section(r, [c for c in b.cost_caveats
                                if not b.multi or f"\u00b7 {b.names.get(r['run_id'])}" in c],
                            b.names.get(r["run_id"])) for r in runs),
        ],
    )
    sheet = chosen.sheet
    models = ", ".join(dict.fromkeys(str(r["model"]) for r in runs))
    header = [
        f"<p class='sub'>{html.escape('; '.join(b.names[r] for r in run_ids))} &middot; model "
        f"{html.escape(models)} &middot; prices {html.escape(sheet.name)} @ {sheet.date.isoformat()}</p>",
        run_picker(run_ids, b.names),
    ]
    return Report(run_ids, rows, dict(b.charts), list(b.notes), header, [*b.sections, knobs])


def write_report(
    db_path: Path,
    out_dir: Path,
    run_ids: list[str] | None = None,
    *,
    price_sheet: Path | None = None,
    queries_per_doc: Sequence[int] = DEFAULT_QUERIES_PER_DOC,
    frontier_q: int = 10,
    images: bool = True,
) -> ReportFiles:
    """Write report.html and <chart>.png/.svg for the given runs (see `build_report`).

    `images=False` skips the PNG/SVG files (the slow part) and writes the page only. Raises
    ValueError (nothing written) when there is nothing to report.
    """
    rep = build_report(db_path, run_ids, price_sheet=price_sheet, queries_per_doc=queries_per_doc,
                       frontier_q=frontier_q)
    return rep.write(out_dir, images=images)


def _write(rep: Report, out_dir: Path, images: bool) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(html=out_dir / "report.html", charts=list(rep.charts), notes=rep.notes)
    for name, chart in rep.charts.items() if images else ():
        files.png[name] = out_dir / f"{name}.png"
        files.svg[name] = out_dir / f"{name}.svg"
        chart.save(files.png[name], scale_factor=2)
        chart.save(files.svg[name])
    files.html.write_text(rep.html(), encoding="utf-8")
    return files

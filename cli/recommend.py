"""`ragvslc recommend`'s terminal output and exit codes (the ranking is compare/analysis/recommend.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cli import console
from compare.analysis.cost import PriceSheetError
from compare.analysis.recommend import COLUMNS, Recommendation, recommend
from compare.analysis.workload import WorkloadError, load_workload


def print_recommendation(rec: Recommendation) -> None:
    """The CLI's output: coverage problems first, then the ranked table, verdict, reasons, evidence."""

    wl, say = rec.workload, console.out.print
    if rec.coverage != "covered":
        console.say(f"[red]evidence {rec.coverage.upper()}[/red] for workload {wl.name!r} "
                    f"(model {rec.model or '?'}):")
        for note in rec.coverage_notes:
            console.say(f"  - {note}")
    if rec.rows:
        title = (f"{wl.name}: {wl.questions_per_doc} q/doc, {wl.requests_per_s:g} req/s, p95 "
                 f"{wl.latency.metric} <= {wl.latency.p95_ms:,.0f} ms, {wl.quality_metric} >= "
                 f"{wl.quality_floor}")
        console.table(rec.rows, [c for c in COLUMNS if c != "usd_per_1k" or rec.price_sheet], title=title)
    say(f"recommendation: {rec.winner or 'none'}")
    for reason in rec.reasons:
        say(f"  - {reason}")
    for assumption in rec.assumptions:
        say(f"  ! {assumption}")
    if rec.run_ids:
        used = "; ".join(f"{t}: {', '.join(f'{m:.0f}' for m in ms)}" for t, ms in rec.lengths_used.items())
        say(f"evidence: runs {', '.join(rec.run_ids)}; lengths (workload: measured) {used}")
    if rec.price_sheet:
        say(f"prices: {rec.price_sheet}")


def recommend_command(db: Path, workload_path: Path, run_ids: Sequence[str] | None = None) -> int:
    """What `ragvslc recommend` does; returns the exit code: 0 covered, 3 evidence does not cover
    the workload (partial or none), 2 unusable input. Nothing is extrapolated silently."""

    try:
        rec = recommend(db, load_workload(workload_path), run_ids)
    except (WorkloadError, PriceSheetError, ValueError) as exc:
        console.say(f"[red]error:[/red] {exc}")
        return 2
    print_recommendation(rec)
    return 0 if rec.coverage == "covered" else 3

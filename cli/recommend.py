"""`ragvslc recommend`'s terminal output and exit codes (the ranking is compare/analysis/recommend.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cli import console
from cli.common import NO_EVIDENCE, OK, PARTIAL_EVIDENCE
from compare.analysis.cost import PriceSheetError
from compare.analysis.recommend import COLUMNS, Recommendation, recommend
from compare.analysis.workload import WorkloadError, load_workload

# The table without --wide: the rank, what it is, how good, how fast, how costly, whether it fits.
NARROW = ("rank", "strategy", "n", "quality", "p95_ms", "usd_per_1k", "meets_floor", "meets_target")


def exit_code(rec: Recommendation) -> int:
    """`recommend`'s exit code from the evidence's coverage: 0 the runs cover the workload, 4
    PARTIAL (the ranking stands on the lengths that are covered; the caveats name the rest), 3
    NONE (no ranking). A script can act on 0, warn on 4 and stop on 3."""
    return {"covered": OK, "partial": PARTIAL_EVIDENCE}.get(rec.coverage, NO_EVIDENCE)


def print_recommendation(rec: Recommendation, *, wide: bool = False) -> None:
    """The CLI's output: coverage problems first, then the ranked table, verdict, reasons, evidence
    (`wide`: every column of the table; default the ones a choice is made on)."""

    wl, say = rec.workload, console.out.print
    for d in rec.decisions:  # issue 24: the same decision line as the run's output and the report
        say(f"decision (run {d.run_id}): {d.sentence}", markup=False, highlight=False)
    for sv in rec.strata:  # issue 30: the same rules per kind of question, each with its n
        say(f"  {sv.line}", markup=False, highlight=False)
    for m in rec.mix:  # issue 30: the per-stratum scores weighed by the workload's strata_mix
        say(f"  {m.line}", markup=False, highlight=False)
    if rec.coverage != "covered":
        console.say(f"[red]evidence {rec.coverage.upper()}[/red] for workload {wl.name!r} "
                    f"(model {rec.model or '?'}):")
        for note in rec.coverage_notes:
            console.say(f"  - {note}")
    if rec.rows:
        title = (f"{wl.name}: {wl.questions_per_doc} q/doc, {wl.requests_per_s:g} req/s, p95 "
                 f"{wl.latency.metric} <= {wl.latency.p95_ms:,.0f} ms, {wl.quality_metric} >= "
                 f"{wl.quality_floor}")
        narrow = (*NARROW, "replicas") if any(r.get("replicas") is not None for r in rec.rows) else NARROW
        columns = [c for c in (COLUMNS if wide else narrow) if c in COLUMNS]
        console.table(rec.rows, [c for c in columns if c != "usd_per_1k" or rec.price_sheet], title=title)
    say(f"recommendation: {rec.winner or 'none'}")
    for reason in rec.reasons:
        say(f"  - {reason}")
    for assumption in rec.assumptions:
        say(f"  ! {assumption}")
    for row in rec.rows:  # issue 28: replicas at the workload's rate, from a load sweep
        if row.get("replicas_note"):
            say(f"replicas, {row['strategy']}: {row['replicas_note']}", markup=False, highlight=False)
    for regret in rec.regret:  # issue 30: each router against the per-question oracle
        say(regret["line"], markup=False, highlight=False)
    if rec.cache_basis and rec.cache_basis not in rec.assumptions:  # said once
        say(f"cache: {rec.cache_basis}", markup=False, highlight=False)
    if rec.run_ids:
        used = "; ".join(f"{t}: {', '.join(f'{m:.0f}' for m in ms)}" for t, ms in rec.lengths_used.items())
        say(f"evidence: runs {', '.join(rec.run_ids)}; lengths (workload: measured) {used}")
    if rec.price_sheet:
        say(f"prices: {rec.price_sheet}")


def recommend_command(db: Path, workload_path: Path, run_ids: Sequence[str] | None = None) -> int:
    """What `ragvslc recommend` does; returns the exit code (`exit_code`; 2 unusable input).
    Nothing is extrapolated silently."""

    try:
        rec = recommend(db, load_workload(workload_path), run_ids)
    except (WorkloadError, PriceSheetError, ValueError) as exc:
        console.say(f"[red]error:[/red] {exc}")
        return 2
    print_recommendation(rec)
    return exit_code(rec)

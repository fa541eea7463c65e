"""Commands that read stored results: list, report, price, recommend, rescore, export; and the
retrieval-only evaluation, which stores its own rows beside the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import console, jsonout
from cli.common import NO_EVIDENCE, DataOpt, DbOpt, JsonOpt, csv_list, fail, interruptible

RunOpt = Annotated[list[str] | None, typer.Option("--run", help="Run id(s); repeatable. Default: all.")]


def runs_cmd(db: DbOpt = Path("results.duckdb"), as_json: JsonOpt = False) -> None:
    """List the runs stored in a database."""
    from compare.store.db import Store, StoreBusyError

    if not db.exists():
        fail(f"no database at {db}")
    try:
        with Store(db, read_only=True) as store:
            rows = store.runs()
    except StoreBusyError as exc:
        fail(str(exc))
    if as_json:
        console.emit_json({"db": str(db), "runs": [jsonout.pick(r, jsonout.RUN_FIELDS) for r in rows]})
        return
    console.table(rows, list(jsonout.RUN_FIELDS))


def report_cmd(
    db: DbOpt = Path("results.duckdb"),
    out: Annotated[Path, typer.Option(help="Folder for report.html and the chart images.")] = Path("report"),
    run: Annotated[list[str] | None, typer.Option("--run", help="Run id(s); default the latest.")] = None,
    price_sheet: Annotated[
        Path | None, typer.Option(help="Price sheet (TOML); default: the run's stored one, else the example.")
    ] = None,
    queries_per_doc: Annotated[str, typer.Option(help="Queries per document, e.g. 1,10,100,1000.")] = (
        "1,10,100,1000"
    ),
    frontier_q: Annotated[int, typer.Option(min=1, help="Queries per document for the frontier.")] = 10,
    no_images: Annotated[bool, typer.Option("--no-images", help="Write report.html only.")] = False,
) -> None:
    """Write report.html (offline, one file) plus PNG and SVG of each chart."""
    from compare.report.assemble import write_report

    if not db.exists():
        fail(f"no database at {db}")
    try:
        with interruptible():
            files = write_report(
                db, out, run or None, price_sheet=price_sheet,
                queries_per_doc=csv_list(queries_per_doc, int) or [1, 10, 100, 1000],
                frontier_q=frontier_q, images=not no_images,
            )
    except ValueError as exc:
        fail(str(exc))
    console.out.print(f"report: {files.html}")


def cost_cmd(
    price_sheet: Annotated[Path, typer.Option(help="Price sheet (TOML), e.g. prices/example-api.toml.")],
    db: DbOpt = Path("results.duckdb"),
    queries_per_doc: Annotated[str, typer.Option(help="Queries per document, e.g. 1,10,100.")] = "1,10,100",
    run: RunOpt = None,
    queries_per_doc_per_hour: Annotated[float | None, typer.Option(
        help="How often each document is asked about: on a sheet with a cache TTL, a later question "
             "finds the cache expired with p = exp(-rate x TTL) and pays the write again. "
             "Default: not stated (no expiry).")] = None,
    cache_hold_hours: Annotated[float | None, typer.Option(
        help="Hours a document stays cached (storage fees); default the sheet's.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Cost per query as a function of queries per document, and the break-even points."""
    from compare.analysis import cost
    from compare.analysis.cache_terms import CacheUse
    from compare.store.db import Store, StoreBusyError

    try:
        qs = csv_list(queries_per_doc, int) or [1]
        use = CacheUse(queries_per_doc_per_hour, cache_hold_hours)
        rows = cost.cost_report(db, run or None, price_sheet, qs, use)
        sheet = cost.load_price_sheet(price_sheet)
        with Store(db) as store:  # the sheet used is kept with each run it priced
            for run_id in sorted({str(r["run_id"]) for r in rows}):
                store.add_price_sheet(run_id, sheet.name, cost.sheet_json(sheet))
    except (ValueError, StoreBusyError) as exc:
        fail(str(exc))
    even = cost.break_even(rows)
    if as_json:
        console.emit_json(jsonout.cost_json(rows, even, sheet, price_sheet, qs, use))
        return
    columns = [c for c in cost.cost_columns(qs) if c != "caveats"]  # printed below, one per line
    console.table(rows, columns, title=f"cost per query: {sheet.name} ({sheet.date})")
    console.table(even, cost.BREAK_EVEN_COLUMNS, title="break-even (queries per document)")
    for caveat in jsonout.caveats(rows):
        console.out.print(f"caveat: {caveat}")


def recommend_cmd(
    workload: Annotated[Path, typer.Option("--workload", help="Workload TOML (see workloads/).")],
    db: DbOpt = Path("results.duckdb"),
    run: Annotated[list[str] | None, typer.Option("--run", help="Evidence run id(s); default all.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Long context, RAG or a router for this workload, from measured runs (exit 3: no evidence)."""
    from cli.recommend import print_recommendation
    from compare.analysis.cost import PriceSheetError
    from compare.analysis.recommend import recommend
    from compare.analysis.workload import WorkloadError, load_workload

    try:
        rec = recommend(db, load_workload(workload), run or None)
    except (WorkloadError, PriceSheetError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        console.emit_json(jsonout.recommendation_json(rec))
    else:
        print_recommendation(rec)
    if rec.coverage != "covered":
        raise typer.Exit(NO_EVIDENCE)


def retrieval_cmd(
    spec: Annotated[Path | None, typer.Option(help="Run spec (TOML): its corpus and RAG pipelines.")] = None,
    lengths: Annotated[str | None, typer.Option(help="Needle lengths in tokens, e.g. 2000,8000.")] = None,
    top_k: Annotated[str, typer.Option("--top-k", help="top_k values, e.g. 1,2,4,8.")] = "1,2,4,8",
    k_alias: Annotated[str | None, typer.Option("--k", hidden=True)] = None,  # the old name
    budget_tokens: Annotated[
        str | None, typer.Option("--budget-tokens", help="Token budgets (budget_tokens), e.g. 500,2000.")
    ] = None,
    budget_alias: Annotated[str | None, typer.Option("--budget", hidden=True)] = None,
    db: DbOpt = Path("results.duckdb"),
    data_dir: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval alone (no LLM): recall@k and MRR from evidence spans, stored for the report."""
    import asyncio

    from compare.run.retrieval_eval import format_rows
    from compare.run.retrieval_run import evaluate, store_rows
    from compare.run.spec import SpecError, load_spec, validate_spec

    try:
        data = load_spec(spec).model_dump(mode="json") if spec else {}
        if lengths:
            data.setdefault("corpus", {"kind": "needle"})["lengths"] = csv_list(lengths, int)
        run_spec = validate_spec(data, source=str(spec or "options"))
        ks = csv_list(k_alias or top_k, int) or [4]
        budgets = csv_list(budget_tokens or budget_alias, int) or []
        with interruptible(), console.index_progress():
            rows, corpus, params = asyncio.run(evaluate(run_spec, ks, budgets, data_dir))
        eval_id = store_rows(db, rows, corpus, params)
    except (SpecError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc))
    if as_json:
        console.emit_json({"eval_id": eval_id, "db": str(db),
                           "rows": [jsonout.pick(r, jsonout.RETRIEVAL_FIELDS) for r in rows]})
        return
    console.out.print(format_rows(rows), highlight=False, markup=False)
    console.out.print(f"stored as {eval_id} in {db}")


def score_cmd(
    db: DbOpt = Path("results.duckdb"),
    run: RunOpt = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Metric(s); default all.")] = None,
    refresh: Annotated[bool, typer.Option(
        "--refresh/--no-refresh",
        help="First rebuild each run's corpus and update examples whose gold answers, evidence or "
             "tags changed while their questions and documents did not.")] = True,
) -> None:
    """Recompute scores from stored predictions (no model calls)."""
    from compare.core.metrics import METRICS
    from compare.run.refresh import refresh_examples
    from compare.run.rescore import rescore
    from compare.store.db import Store, StoreBusyError

    if not db.exists():
        fail(f"no database at {db}")
    try:
        with interruptible(), Store(db) as store:
            for found in refresh_examples(store, run or None) if refresh else []:
                console.say(found.line())
            n = rescore(store, run or None, metric or list(METRICS))
    except (StoreBusyError, ValueError) as exc:
        fail(str(exc))
    console.out.print(f"rescored {n} predictions")


def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for one file per table.")] = Path("export"),
    db: DbOpt = Path("results.duckdb"),
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    as_json: JsonOpt = False,
) -> None:
    """Every table (runs, predictions, scores, server_stats, ...) as Parquet or CSV files."""
    from compare.store.db import StoreBusyError
    from compare.store.export import FORMATS, export_tables

    chosen = next((f for f in FORMATS if f == fmt), None)
    if chosen is None:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        with interruptible():
            done = export_tables(db, out, chosen)
    except (ValueError, StoreBusyError) as exc:
        fail(str(exc))
    rows = [{"table": e.table, "path": str(e.path), "rows": e.rows} for e in done]
    if as_json:
        console.emit_json({"db": str(db), "format": fmt, "out": str(out), "tables": rows})
        return
    console.table(rows, list(jsonout.EXPORT_FIELDS), title=f"{db} -> {out} ({fmt})")

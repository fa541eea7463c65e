"""Commands that read stored results: list, report, price, recommend, rescore, export; and the
retrieval-only evaluation, which stores its own rows beside the runs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import console, jsonout
from cli.common import (
    COUNTS,
    LENGTHS,
    DataOpt,
    DbOpt,
    JsonOpt,
    WideOpt,
    fail,
    interruptible,
    list_option,
)
from cli.stored import checked_db

RunOpt = Annotated[
    list[str] | None,
    typer.Option("--run", help="Run id(s), or a unique prefix of one; repeatable. Default: all."),
]
# `runs` without --wide: what a run is and how it went, the ids whole.
NARROW_RUNS = ("run_id", "created_at", "status", "load", "corpus", "pipelines", "predictions", "errors")
# `cost` without --wide: the strategy, its price view, then $ per query at each q.
NARROW_COST = ("label", "view", "n")


class ExportFormat(StrEnum):
    """`export --format` (compare/store/export.py FORMATS; a test checks the two agree)."""

    parquet = "parquet"
    csv = "csv"


def runs_cmd(
    db: DbOpt = Path("results.duckdb"),
    last: Annotated[int | None, typer.Option("-n", "--last", min=1, help="Only the N latest runs.")] = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """List the runs stored in a database, oldest first: corpus, pipelines and each one's headline."""
    import duckdb

    from compare.analysis.summary import headline_metric, pipeline_summary
    from compare.store.db import Store, StoreBusyError

    checked_db(db)
    try:
        with Store(db, read_only=True) as store:
            rows = store.runs()
            rows = rows[-last:] if last else rows
            summary = pipeline_summary(store.con, [str(r["run_id"]) for r in rows]) if rows else []
            # Per run: `headline`, or for a run stored before it (never rescored) the answer
            # metric it did score, named, as the report reads it.
            metric = {str(r["run_id"]): headline_metric(store.con, [str(r["run_id"])]) for r in rows}
            steps = _load_steps(store.con)
    except (StoreBusyError, duckdb.Error) as exc:
        fail(str(exc))
    for r in rows:
        m = metric[str(r["run_id"])]
        mine = [s for s in summary if s["run_id"] == r["run_id"]]
        r["pipelines"] = [{"label": s["label"], "metric": m, "headline": s.get(m)} for s in mine]
        r["load"] = steps.get(str(r["run_id"]))
    if as_json:
        console.emit_json({"db": str(db), "runs": [jsonout.pick(r, jsonout.RUN_FIELDS) for r in rows]})
        return
    shown = [{**r, "load": _load_text(r["load"]), "pipelines": "; ".join(
        f"{p['label']} {_score(p['headline'], p['metric'])}" for p in r["pipelines"])} for r in rows]
    console.table(shown, jsonout.RUN_FIELDS if wide else NARROW_RUNS)


def _load_steps(con: Any) -> dict[str, dict[str, int]]:
    """A load run's steps by status (`ragvslc load`: its headline is quality under traffic, not
    an idle comparison); idle runs have none. A store from before load runs has no table."""
    import duckdb

    try:
        got = con.execute("SELECT run_id, status, count(*) FROM load_steps GROUP BY ALL").fetchall()
    except duckdb.CatalogException:
        return {}
    out: dict[str, dict[str, int]] = {}
    for run_id, status, n in got:
        out.setdefault(str(run_id), {"steps": 0})[str(status)] = int(n)
        out[str(run_id)]["steps"] += int(n)
    return out


def _load_text(load: dict[str, int] | None) -> str:
    """A load run's tag, e.g. `load: 6 steps (1 saturated)`; nothing for an idle run."""
    if not load:
        return ""
    odd = [f"{n} {s}" for s, n in sorted(load.items()) if s not in ("steps", "done")]
    return f"load: {load['steps']} steps" + (f" ({', '.join(odd)})" if odd else "")


def _score(value: float | None, metric: str) -> str:
    text = "-" if value is None else f"{value:.2f}"
    return text if metric == "headline" else f"{text} ({metric})"


def report_cmd(
    db: DbOpt = Path("results.duckdb"),
    out: Annotated[Path, typer.Option(help="Folder for report.html and the chart images.")] = Path("report"),
    run: Annotated[list[str] | None, typer.Option(
        "--run", help="Run id(s) or unique prefixes; default the latest.")] = None,
    price_sheet: Annotated[
        Path | None, typer.Option(help="Price sheet (TOML); default: the run's stored one, else the example.")
    ] = None,
    queries_per_doc: Annotated[
        Any, list_option(COUNTS, "Queries per document, e.g. 1,10,100,1000.")
    ] = "1,10,100,1000",
    frontier_q: Annotated[int, typer.Option(min=1, help="Queries per document for the frontier.")] = 10,
    no_images: Annotated[bool, typer.Option("--no-images", help="Write report.html only.")] = False,
) -> None:
    """Write report.html (offline, one file) plus PNG and SVG of each chart."""
    from compare.report.assemble import write_report

    run = checked_db(db, run)
    try:
        with interruptible():
            files = write_report(
                db, out, run or None, price_sheet=price_sheet,
                queries_per_doc=COUNTS.convert(queries_per_doc),
                frontier_q=frontier_q, images=not no_images,
            )
    except ValueError as exc:
        fail(str(exc))
    console.out.print(f"report: {files.html}")


def cost_cmd(
    price_sheet: Annotated[Path, typer.Option(help="Price sheet (TOML), e.g. prices/example-api.toml.")],
    db: DbOpt = Path("results.duckdb"),
    queries_per_doc: Annotated[Any, list_option(COUNTS, "Queries per document, e.g. 1,10,100.")] = "1,10,100",
    run: RunOpt = None,
    queries_per_doc_per_hour: Annotated[float | None, typer.Option(
        min=0, help="How often each document is asked about: on a sheet with a cache TTL, a later question "
        "finds the cache expired with p = exp(-rate x TTL) and pays the write again. "
        "Default: not stated (no expiry).")] = None,
    cache_hold_hours: Annotated[float | None, typer.Option(
        min=0, help="Hours a document stays cached (storage fees); default the sheet's.")] = None,
    kv_cache_tokens: Annotated[int | None, typer.Option(
        min=1, help="The deployment's KV cache in tokens: the self-hosted view then prices evictions "
        "from the cache model (LRU over 128-token blocks) over the runs' documents. Default: none.")] = None,
    documents: Annotated[int | None, typer.Option(
        min=1, help="With --kv-cache-tokens: documents sharing it (the runs' sizes in turn).")] = None,
    zipf: Annotated[float | None, typer.Option(
        min=0, max=10, help="With --kv-cache-tokens: Zipf popularity exponent (default uniform).")] = None,
    save_sheet: Annotated[bool, typer.Option(
        "--save-sheet", help="Store this sheet with each priced run: a later `report` and `recommend` "
        "then price those runs with it by default. Without it, cost only reads the database.")] = False,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Cost per query as a function of queries per document, and the break-even points."""
    from compare.analysis import cost
    from compare.analysis.cache_terms import CacheUse
    from compare.analysis.traffic_cache import KvCache
    from compare.store.db import Store, StoreBusyError

    run = checked_db(db, run)
    qs: list[int] = COUNTS.convert(queries_per_doc)
    try:
        use = CacheUse(queries_per_doc_per_hour, cache_hold_hours)
        if kv_cache_tokens is None and (documents is not None or zipf is not None):
            raise ValueError("--documents and --zipf describe the KV cache's traffic: give --kv-cache-tokens")
        kv = KvCache(kv_cache_tokens, zipf=zipf, documents=documents) if kv_cache_tokens else None
        rows = cost.cost_report(db, run or None, price_sheet, qs, use, kv)
        sheet = cost.load_price_sheet(price_sheet)
        if save_sheet:  # the one write, asked for: the sheet used is kept with each run it priced
            with Store(db) as store:
                for run_id in sorted({str(r["run_id"]) for r in rows}):
                    store.add_price_sheet(run_id, sheet.name, cost.sheet_json(sheet))
    except (ValueError, StoreBusyError) as exc:
        fail(str(exc))
    even = cost.break_even(rows)
    if as_json:
        console.emit_json(jsonout.cost_json(rows, even, sheet, price_sheet, qs, use))
        return
    columns = [c for c in cost.cost_columns(qs) if c != "caveats"]  # printed below, one per line
    if not wide:  # who, which price view, and the price at each q
        columns = [c for c in columns if c in NARROW_COST or c.startswith("usd_per_query_q")]
    console.table(rows, columns, title=f"cost per query: {sheet.name} ({sheet.date})")
    console.table(even, cost.BREAK_EVEN_COLUMNS, title="break-even (queries per document)")
    for caveat in jsonout.caveats(rows):
        console.out.print(f"caveat: {caveat}")
    if save_sheet:
        priced = ", ".join(sorted({str(r["run_id"]) for r in rows}))
        console.say(f"saved price sheet {sheet.name!r} with run(s) {priced}")


def recommend_cmd(
    workload: Annotated[Path, typer.Option("--workload", help="Workload TOML (see workloads/).")],
    db: DbOpt = Path("results.duckdb"),
    run: Annotated[list[str] | None, typer.Option(
        "--run", help="Evidence run id(s) or unique prefixes; default all.")] = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Long context, RAG or a router for this workload, from measured runs. Exit 0: the runs cover
    the workload; 4: a winner, but the runs cover only part of it (caveats say which); 3: no
    evidence for it (no winner)."""
    from cli.recommend import exit_code, print_recommendation
    from compare.analysis.cost import PriceSheetError
    from compare.analysis.recommend import recommend
    from compare.analysis.workload import WorkloadError, load_workload

    try:
        wl = load_workload(workload)
    except (WorkloadError, ValueError) as exc:
        fail(str(exc))
    run = checked_db(db, run)
    try:
        rec = recommend(db, wl, run or None)
    except (WorkloadError, PriceSheetError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        console.emit_json(jsonout.recommendation_json(rec))
    else:
        print_recommendation(rec, wide=wide)
    if code := exit_code(rec):
        raise typer.Exit(code)


def retrieval_cmd(
    spec: Annotated[Path | None, typer.Option(help="Run spec (TOML): its corpus and RAG pipelines.")] = None,
    lengths: Annotated[Any, list_option(LENGTHS, "Needle lengths in tokens, e.g. 2000,8000.")] = None,
    top_k: Annotated[Any, list_option(COUNTS, "top_k values, e.g. 1,2,4,8.", "--top-k")] = "1,2,4,8",
    k_alias: Annotated[Any, typer.Option("--k", parser=COUNTS.convert, hidden=True)] = None,  # the old name
    budget_tokens: Annotated[
        Any, list_option(COUNTS, "Token budgets (budget_tokens), e.g. 500,2000.", "--budget-tokens")
    ] = None,
    budget_alias: Annotated[Any, typer.Option("--budget", parser=COUNTS.convert, hidden=True)] = None,
    db: DbOpt = Path("results.duckdb"),
    data_dir: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval alone (no LLM): recall@k and MRR from evidence spans, stored for the report of
    the run the same spec makes (its run id)."""
    import asyncio

    from compare.run.retrieval_eval import format_rows
    from compare.run.retrieval_run import evaluate, store_rows
    from compare.run.spec import SpecError, load_spec

    try:
        run_spec = load_spec(spec, {"corpus.lengths": lengths})
        ks = COUNTS.convert(k_alias or top_k)
        budgets = COUNTS.convert(budget_tokens or budget_alias) if budget_tokens or budget_alias else []
        with interruptible(), console.index_progress():
            ev = asyncio.run(evaluate(run_spec, ks, budgets, data_dir))
        eval_id = store_rows(db, ev)
    except (SpecError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc))
    if as_json:
        console.emit_json({"eval_id": eval_id, "run_id": ev.run_id, "db": str(db),
                           "rows": [jsonout.pick(r, jsonout.RETRIEVAL_FIELDS) for r in ev.rows]})
        return
    console.out.print(format_rows(ev.rows), highlight=False, markup=False)
    console.out.print(f"stored as {eval_id} for run {ev.run_id} in {db}")


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

    run = checked_db(db, run)
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
    fmt: Annotated[ExportFormat, typer.Option("--format", help="File format.")] = ExportFormat.parquet,
    as_json: JsonOpt = False,
) -> None:
    """Every table (runs, predictions, scores, server_stats, ...) as Parquet or CSV files."""
    from compare import api
    from compare.store.db import StoreBusyError

    checked_db(db)  # a file that is not ours says so, instead of exporting empty tables
    try:
        with interruptible():  # the tables, `requests` (labels, $) and data_dictionary.csv
            done = api.export(db, out, fmt.value)
    except (ValueError, StoreBusyError) as exc:
        fail(str(exc))
    rows = [{"table": e.table, "path": str(e.path), "rows": e.rows} for e in done]
    if as_json:
        console.emit_json({"db": str(db), "format": fmt.value, "out": str(out), "tables": rows})
        return
    console.table(rows, list(jsonout.EXPORT_FIELDS), title=f"{db} -> {out} ({fmt.value})")

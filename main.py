"""ragvslc command line: parses options and delegates to the engine in compare/."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # weight-loading bars drown the run's own

import typer

from cli.common import SUMMARY_COLUMNS, DataOpt, DbOpt, csv_list, fail
from cli.data import corpora_app, models_app, serve_cmd, video_app
from compare import console
from compare.spec import SpecError

app = typer.Typer(help="Long context or RAG? Measure both on the same questions.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(corpora_app, name="corpora")
app.add_typer(video_app, name="video")


@app.command("run")
def run_cmd(
    spec: Annotated[Path | None, typer.Option(help="Run spec (TOML). Options below override it.")] = None,
    db: DbOpt = Path("results.duckdb"),
    base_url: Annotated[
        list[str] | None,
        typer.Option(help="Use running OpenAI-compatible server(s); repeat or comma-separate for replicas."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (registry name or local HF folder).")] = None,
    lengths: Annotated[str | None, typer.Option(help="Needle lengths in tokens, e.g. 2000,4000.")] = None,
    depths: Annotated[str | None, typer.Option(help="Needle depths 0..1, e.g. 0.1,0.5,0.9.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight at once (per server).")] = None,
    replicas: Annotated[
        int | None, typer.Option(min=1, help="Managed servers to start, each on its own cores/GPUs.")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help="Request order: prefix (reuse shared prefill) or given (corpus order).")
    ] = None,
    data_dir: DataOpt = None,
    retry_errors: Annotated[bool, typer.Option(help="Redo the rows that failed.")] = False,
) -> None:
    """Run a comparison; rerunning the same spec resumes it."""
    from compare.spec import load_spec, validate_spec

    try:
        data = load_spec(spec).model_dump(mode="json") if spec else {}
        corpus = data.setdefault("corpus", {"kind": "needle"})
        if lengths:
            corpus["lengths"] = csv_list(lengths, int)
        if depths:
            corpus["depths"] = csv_list(depths, float)
        if model:
            data.setdefault("server", {})["model"] = model
        if concurrency:
            data["concurrency"] = concurrency
        if replicas:
            data.setdefault("server", {})["replicas"] = replicas
        if schedule:
            data["schedule"] = schedule
        run_spec = validate_spec(data, source=str(spec or "options"))
    except SpecError as exc:
        fail(str(exc))
        return
    _run_and_summarise(run_spec, db, base_url, data_dir, retry_errors)


def _run_and_summarise(
    run_spec: Any, db: Path, base_url: list[str] | None, data_dir: Path | None, retry_errors: bool,
    shared: Any = None,
) -> str:
    from compare.app import execute
    from compare.models import ModelError
    from compare.runner import RunStopped
    from compare.serve import ServerError
    from compare.store import StoreBusyError
    from compare.summary import pipeline_summary

    try:
        with console.progress_bar() as progress:
            result = execute(
                run_spec, db, say=console.say, base_url=base_url, data_dir=data_dir,
                retry_errors=retry_errors, progress=progress, shared=shared,
            )
    except RunStopped as exc:
        fail(f"{exc}\nfinished rows are saved: fix the cause, then run the same command again "
             "(--retry-errors also redoes the failed rows)", code=1)
        raise  # unreachable: fail() exits
    except (StoreBusyError, ServerError, ModelError, FileNotFoundError, ValueError, RuntimeError) as exc:
        # Bad input and unusable tools (corpus, spec, video, OCR, a server that cannot be reached)
        # are user-facing errors, not crashes: one clear line, no traceback.
        fail(str(exc))
        raise  # unreachable: fail() exits
    except KeyboardInterrupt:
        console.say("interrupted: finished rows are saved; run the same command again to resume")
        raise typer.Exit(130) from None
    console.say(
        f"run {result.run_id}: {result.done} requests done, {result.skipped} already stored, "
        f"{result.errors} errors" + (" (resumed)" if result.resumed else "")
    )
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        rows = pipeline_summary(con, [result.run_id])
    console.table(rows, SUMMARY_COLUMNS, title=f"{result.run_id} ({db})")
    return result.run_id


@app.command("runs")
def runs_cmd(db: DbOpt = Path("results.duckdb")) -> None:
    """List the runs stored in a database."""
    from compare.store import Store

    if not db.exists():
        fail(f"no database at {db}")
    with Store(db, read_only=True) as store:
        rows = store.runs()
    console.table(rows, ["run_id", "created_at", "status", "corpus", "model", "predictions", "errors"])


@app.command("report")
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
    from compare.report import write_report

    if not db.exists():
        fail(f"no database at {db}")
    try:
        files = write_report(
            db, out, run or None, price_sheet=price_sheet,
            queries_per_doc=csv_list(queries_per_doc, int) or [1, 10, 100, 1000],
            frontier_q=frontier_q, images=not no_images,
        )
    except ValueError as exc:
        fail(str(exc))
        return
    console.out.print(f"report: {files.html}")


@app.command("cost")
def cost_cmd(
    price_sheet: Annotated[Path, typer.Option(help="Price sheet (TOML), e.g. prices/example-api.toml.")],
    db: DbOpt = Path("results.duckdb"),
    queries_per_doc: Annotated[str, typer.Option(help="Queries per document, e.g. 1,10,100.")] = "1,10,100",
    run: Annotated[list[str] | None, typer.Option("--run", help="Run id(s); default all.")] = None,
) -> None:
    """Cost per query as a function of queries per document, and the break-even points."""
    from compare import cost
    from compare.store import Store, StoreBusyError

    try:
        qs = csv_list(queries_per_doc, int) or [1]
        rows = cost.cost_report(db, run or None, price_sheet, qs)
        sheet = cost.load_price_sheet(price_sheet)
        with Store(db) as store:  # the sheet used is kept with each run it priced
            for run_id in sorted({str(r["run_id"]) for r in rows}):
                store.add_price_sheet(run_id, sheet.name, cost.sheet_json(sheet))
    except (ValueError, StoreBusyError) as exc:
        fail(str(exc))
        return
    columns = [c for c in cost.cost_columns(qs) if c != "caveats"]  # printed below, one per line
    console.table(rows, columns, title=f"cost per query: {sheet.name} ({sheet.date})")
    console.table(cost.break_even(rows), cost.BREAK_EVEN_COLUMNS, title="break-even (queries per document)")
    for caveat in sorted({c for r in rows for c in str(r.get("caveats") or "").split("; ") if c}):
        console.out.print(f"caveat: {caveat}")


@app.command("recommend")
def recommend_cmd(
    workload: Annotated[Path, typer.Option("--workload", help="Workload TOML (see workloads/).")],
    db: DbOpt = Path("results.duckdb"),
    run: Annotated[list[str] | None, typer.Option("--run", help="Evidence run id(s); default all.")] = None,
) -> None:
    """Long context, RAG or a router for this workload, from measured runs (exit 3: no evidence)."""
    from compare.recommend import recommend_command

    code = recommend_command(db, workload, run or None)
    if code:
        raise typer.Exit(code)


@app.command("retrieval")
def retrieval_cmd(
    spec: Annotated[Path | None, typer.Option(help="Run spec (TOML): its corpus and RAG pipelines.")] = None,
    lengths: Annotated[str | None, typer.Option(help="Needle lengths in tokens, e.g. 2000,8000.")] = None,
    k: Annotated[str, typer.Option("--k", help="k values, e.g. 1,2,4,8.")] = "1,2,4,8",
    budget: Annotated[str | None, typer.Option(help="Token budgets, e.g. 500,2000.")] = None,
    db: DbOpt = Path("results.duckdb"),
    data_dir: DataOpt = None,
) -> None:
    """Retrieval alone (no LLM): recall@k and MRR from evidence spans, stored for the report."""
    import asyncio

    from compare.offline import evaluate, store_rows
    from compare.retrieval import format_rows
    from compare.spec import load_spec, validate_spec

    try:
        data = load_spec(spec).model_dump(mode="json") if spec else {}
        if lengths:
            data.setdefault("corpus", {"kind": "needle"})["lengths"] = csv_list(lengths, int)
        run_spec = validate_spec(data, source=str(spec or "options"))
        rows, corpus, params = asyncio.run(
            evaluate(run_spec, csv_list(k, int) or [4], csv_list(budget, int) or [], data_dir)
        )
        eval_id = store_rows(db, rows, corpus, params)
    except (SpecError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    console.out.print(format_rows(rows), highlight=False, markup=False)
    console.out.print(f"stored as {eval_id} in {db}")


@app.command("score")
def score_cmd(
    db: DbOpt = Path("results.duckdb"),
    run: Annotated[list[str] | None, typer.Option("--run", help="Run id(s); default all.")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Metric(s); default all.")] = None,
) -> None:
    """Recompute scores from stored predictions (no model calls)."""
    from compare.metrics import METRICS
    from compare.rescore import rescore
    from compare.store import Store, StoreBusyError

    if not db.exists():
        fail(f"no database at {db}")
    try:
        with Store(db) as store:
            n = rescore(store, run or None, metric or list(METRICS))
    except (StoreBusyError, ValueError) as exc:
        fail(str(exc))
        return
    console.out.print(f"rescored {n} predictions")


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for results.duckdb and the report.")] = Path(
        "demo-output"
    ),
    base_url: Annotated[
        list[str] | None, typer.Option(help="Use running server(s), not a managed one; repeatable.")
    ] = None,
    data_dir: DataOpt = None,
) -> None:
    """A needle grid and a real document with several questions, both pipelines, then the report."""
    from compare import demo
    from compare.app import serving
    from compare.models import ModelError
    from compare.report import write_report
    from compare.serve import ServerError

    out.mkdir(parents=True, exist_ok=True)
    db = out / "results.duckdb"
    specs = demo.demo_specs()
    console.say(demo.describe())
    try:
        with serving(specs[0], console.say, base_url) as srv:  # one server start for both runs
            run_ids = [_run_and_summarise(s, db, base_url, data_dir, False, shared=srv) for s in specs]
    except (ServerError, ModelError) as exc:
        fail(str(exc))
        return
    files = write_report(db, out / "report", run_ids)
    console.out.print(f"results: {db}\nreport:  {files.html}")


app.command("serve")(serve_cmd)


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM takes the same clean path as Ctrl-C: rows flushed, managed server stopped."""
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _sigterm_as_interrupt)

if __name__ == "__main__":
    sys.exit(app())

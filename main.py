"""ragvslc command line: parses options and delegates to the engine in compare/."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import console, jsonout
from cli.common import (
    INTERRUPTED,
    RUN_STOPPED,
    SUMMARY_COLUMNS,
    BaseUrlOpt,
    DataOpt,
    DbOpt,
    JsonOpt,
    csv_list,
    fail,
    version_text,
)
from cli.data import corpora_app, models_app, serve_cmd, video_app
from cli.judge import judge_cmd
from cli.results import cost_cmd, export_cmd, recommend_cmd, report_cmd, retrieval_cmd, runs_cmd, score_cmd

app = typer.Typer(
    help="Long context or RAG? Measure both on the same questions.",
    epilog="Environment: RAGVSLC_HOME (--home), RAGVSLC_DATA (--data-dir), RAGVSLC_DB (--db), "
    "RAGVSLC_BASE_URL (--base-url), OPENAI_API_KEY (the key sent to a --base-url server). "
    "Exit codes: 0 ok, 1 run stopped, 2 bad input, 3 no evidence, 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold whole documents, or a key
)
app.add_typer(models_app, name="models")
app.add_typer(corpora_app, name="corpora")
app.add_typer(video_app, name="video")


def _print_version(value: bool) -> None:
    if value:
        console.out.print(version_text(Path(__file__).resolve().parent), highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Version (and git commit)."),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(envvar="RAGVSLC_HOME", help="Cache root: models, RAG indexes, video timelines "
                     "(default ~/.cache/ragvslc)."),
    ] = None,
) -> None:
    # Set when a command runs, not when main is imported (importing it changes nothing).
    from compare.core.offline import offline_defaults

    offline_defaults()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if home is not None:  # the engine reads the variable where it needs the folder
        os.environ["RAGVSLC_HOME"] = str(home)


@app.command("run")
def run_cmd(
    spec: Annotated[Path | None, typer.Option(help="Run spec (TOML). Options below override it.")] = None,
    db: DbOpt = Path("results.duckdb"),
    base_url: BaseUrlOpt = None,
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
    router: Annotated[
        str | None, typer.Option(help="How replicas are reached: cache_aware (default with --replicas), "
                                 "consistent_hash, round_robin, power_of_two (vllm-router), or client.")
    ] = None,
    data_dir: DataOpt = None,
    retry_errors: Annotated[bool, typer.Option(help="Redo the rows that failed.")] = False,
    fail_on_error: Annotated[
        bool, typer.Option("--fail-on-error", help="Exit 1 if any row of the run failed (for CI).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a comparison; rerunning the same spec resumes it."""
    from compare.run.spec import SpecError, load_spec, validate_spec

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
        if router:
            data.setdefault("server", {})["router"] = router
        run_spec = validate_spec(data, source=str(spec or "options"))
    except SpecError as exc:
        fail(str(exc))
    _run_and_summarise(
        run_spec, db, base_url, data_dir, retry_errors, as_json=as_json, fail_on_error=fail_on_error
    )


def _run_and_summarise(
    run_spec: Any, db: Path, base_url: list[str] | None, data_dir: Path | None, retry_errors: bool,
    shared: Any = None, *, as_json: bool = False, fail_on_error: bool = False,
) -> str:
    """Run, then print the summary (a table, or with `as_json` the `run` JSON object); exit 1
    after the summary if `fail_on_error` and any row of the run (also a resumed one) failed."""
    from compare.analysis.summary import pipeline_summary
    from compare.run.execute import execute
    from compare.run.runner import RunStopped
    from compare.serving.server import ServerError
    from compare.serving.weights import ModelError
    from compare.store.db import StoreBusyError

    try:
        with console.progress_bar() as progress:
            result = execute(
                run_spec, db, say=console.say, base_url=base_url, data_dir=data_dir,
                retry_errors=retry_errors, progress=progress, shared=shared,
            )
    except RunStopped as exc:
        fail(f"{exc}\nfinished rows are saved: fix the cause, then run the same command again "
             "(--retry-errors also redoes the failed rows)", code=RUN_STOPPED)
    except (StoreBusyError, ServerError, ModelError, FileNotFoundError, ValueError, RuntimeError) as exc:
        # Bad input and unusable tools (corpus, spec, video, OCR, a server that cannot be reached)
        # are user-facing errors, not crashes: one clear line, no traceback.
        fail(str(exc))
    except KeyboardInterrupt:
        console.say("interrupted: finished rows are saved; run the same command again to resume")
        raise typer.Exit(INTERRUPTED) from None
    console.say(
        f"run {result.run_id}: {result.done} requests done, {result.skipped} already stored, "
        f"{result.errors} errors" + (" (resumed)" if result.resumed else "")
    )
    import duckdb

    from compare.analysis.verdict import verdict_for
    from compare.core.metrics import METRICS

    with duckdb.connect(str(db), read_only=True) as con:
        rows = pipeline_summary(con, [result.run_id])
        verdict = verdict_for(con, result.run_id) if rows else None
    if as_json:
        console.emit_json(jsonout.run_json(result, db, jsonout.summary_json(rows, METRICS), verdict))
    else:
        if verdict:  # the answer first, then the evidence
            eff = "; ".join(e.words() for e in verdict.effective)
            lines = [*verdict.lines, *([f"effective length (keeps 85%): {eff}"] if eff else []),
                     *(f"! {c}" for c in verdict.caveats)]
            console.out.print("verdict: " + "\n  ".join(lines), markup=False, highlight=False)
        console.table(rows, SUMMARY_COLUMNS, title=f"{result.run_id} ({db})")
    failed = sum(int(r.get("errors") or 0) for r in rows)
    if fail_on_error and failed:
        fail(f"{failed} row(s) of run {result.run_id} failed (see predictions.error)", code=RUN_STOPPED)
    return result.run_id


app.command("runs")(runs_cmd)
app.command("report")(report_cmd)
app.command("cost")(cost_cmd)
app.command("recommend")(recommend_cmd)
app.command("retrieval")(retrieval_cmd)
app.command("score")(score_cmd)
app.command("judge")(judge_cmd)
app.command("export")(export_cmd)


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
    from compare.report.assemble import write_report
    from compare.run import demo
    from compare.run.execute import serving
    from compare.serving.server import ServerError
    from compare.serving.weights import ModelError

    out.mkdir(parents=True, exist_ok=True)
    db = out / "results.duckdb"
    specs = demo.demo_specs()
    console.say(demo.describe())
    try:
        with serving(specs[0], console.say, base_url) as srv:  # one server start for both runs
            run_ids = [_run_and_summarise(s, db, base_url, data_dir, False, shared=srv) for s in specs]
    except (ServerError, ModelError) as exc:
        fail(str(exc))
    files = write_report(db, out / "report", run_ids)
    console.out.print(f"results: {db}\nreport:  {files.html}")


app.command("serve")(serve_cmd)


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM takes the same clean path as Ctrl-C: rows flushed, managed server stopped."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(app())

"""`ragvslc run` and `ragvslc demo`: the options become one spec (the file with the command line
put in, validated once: compare.run.spec.load_spec), the Python API runs it (compare.api.run, the
same door a notebook uses), and the summary is printed with the exit codes of cli/common.py."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import console, jsonout
from cli.common import (
    DEPTHS,
    INTERRUPTED,
    LENGTHS,
    RUN_STOPPED,
    SUMMARY_COLUMNS,
    BaseUrlOpt,
    DataOpt,
    DbOpt,
    JsonOpt,
    WideOpt,
    fail,
    list_option,
)

if TYPE_CHECKING:  # the engine is loaded when a command runs, not for `--help`
    from compare.run.execute import Serving
    from compare.run.spec import RunSpec


class Schedule(StrEnum):
    """Request order (RunSpec.schedule; tests check the two lists agree)."""

    prefix = "prefix"
    given = "given"


class RouterPolicy(StrEnum):
    """How replicas are reached (ServerSpec.router)."""

    cache_aware = "cache_aware"
    consistent_hash = "consistent_hash"
    round_robin = "round_robin"
    power_of_two = "power_of_two"
    client = "client"


# The summary's columns without --wide: who, how many, how good, how fast, how much context.
NARROW_SUMMARY = ("label", "asked", "answered", "headline", "total_p50_ms", "context_tokens_mean",
                  "cached_tokens_mean")


def run_cmd(
    spec: Annotated[Path | None, typer.Option(help="Run spec (TOML). Options below override it.")] = None,
    db: DbOpt = Path("results.duckdb"),
    base_url: BaseUrlOpt = None,
    model: Annotated[str | None, typer.Option(help="Model name (registry name or local HF folder).")] = None,
    lengths: Annotated[
        Any, list_option(LENGTHS, "Needle lengths in tokens, comma-separated, e.g. 2000,4000.")
    ] = None,
    depths: Annotated[Any, list_option(DEPTHS, "Needle depths 0..1, comma-separated, e.g. 0.1,0.5,0.9.")]
    = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Requests in flight at once (per server).")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(min=1, help="Managed servers to start, each on its own cores/GPUs.")
    ] = None,
    schedule: Annotated[
        Schedule | None,
        typer.Option(help="Request order: prefix (reuse shared prefill) or given (corpus order)."),
    ] = None,
    router: Annotated[
        RouterPolicy | None, typer.Option(help="How replicas are reached: cache_aware (default with "
                                          "--replicas), consistent_hash, round_robin, power_of_two "
                                          "(vllm-router), or client.")
    ] = None,
    data_dir: DataOpt = None,
    retry_errors: Annotated[bool, typer.Option(help="Redo the rows that failed.")] = False,
    fail_on_error: Annotated[
        bool, typer.Option("--fail-on-error", help="Exit 1 if any row of the run failed (for CI).")
    ] = False,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Run a comparison; rerunning the same spec resumes it."""
    run_and_summarise(spec, db, base_url, data_dir, retry_errors, as_json=as_json,
                      fail_on_error=fail_on_error, wide=wide, overrides={
                          "corpus.lengths": lengths, "corpus.depths": depths, "server.model": model,
                          "concurrency": concurrency, "server.replicas": replicas,
                          "schedule": schedule.value if schedule else None,
                          "server.router": router.value if router else None,
                      })


def run_and_summarise(
    source: RunSpec | Path | None, db: Path, base_url: list[str] | None, data_dir: Path | None,
    retry_errors: bool, shared: Serving | None = None, *, as_json: bool = False, fail_on_error: bool = False,
    wide: bool = False, overrides: Mapping[str, Any] | None = None,
) -> str:
    """Run a spec through the Python API, then print the summary (a table, or with `as_json` the
    `run` JSON object); exit 1 after the summary if `fail_on_error` and any row of the run (also a
    resumed one) failed. `source` is a RunSpec, or a spec file (None: the defaults) that gets the
    command line's `overrides` and is validated once, here, before anything starts."""
    from compare import api
    from compare.run.runner import RunStopped
    from compare.run.spec import RunSpec, SpecError, load_spec
    from compare.serving.server import ServerError
    from compare.serving.weights import ModelError
    from compare.store.db import StoreBusyError

    try:
        run_spec = source if isinstance(source, RunSpec) else load_spec(source, overrides)
    except SpecError as exc:
        fail(str(exc))
    try:
        with console.progress_bar() as progress:
            result = api.run(run_spec, db, say=console.say, base_url=base_url, data_dir=data_dir,
                             retry_errors=retry_errors, progress=progress, shared=shared)
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
    remember(db, "run", [result.run_id])  # `report` without --run shows it (demo: both runs)
    rows = _summarise(result, db, as_json=as_json, wide=wide)
    failed = sum(int(r.get("errors") or 0) for r in rows)
    if fail_on_error and failed:
        fail(f"{failed} row(s) of run {result.run_id} failed (see predictions.error)", code=RUN_STOPPED)
    return result.run_id


def _summarise(result: Any, db: Path, *, as_json: bool, wide: bool) -> list[dict[str, Any]]:
    """The verdict first, then the evidence; returns the summary rows."""
    import duckdb

    from compare.analysis.summary import pipeline_summary
    from compare.analysis.verdict import verdict_for
    from compare.core.metrics import METRICS

    with duckdb.connect(str(db), read_only=True) as con:
        rows = pipeline_summary(con, [result.run_id])
        verdict = verdict_for(con, result.run_id) if rows else None
    if as_json:
        console.emit_json(jsonout.run_json(result, db, jsonout.summary_json(rows, METRICS), verdict))
        return rows
    if verdict:
        if verdict.decision is not None:  # the one decision line first (issue 24 item 12; helper A)
            console.out.print("decision: " + verdict.decision.sentence, markup=False, highlight=False)
        eff = "; ".join(e.words() for e in verdict.effective)
        lines = [*verdict.lines, *([f"effective length (keeps 85%): {eff}"] if eff else []),
                 *(f"! {c}" for c in verdict.caveats)]
        console.out.print("verdict: " + "\n  ".join(lines), markup=False, highlight=False)
    console.table(rows, SUMMARY_COLUMNS if wide else NARROW_SUMMARY, title=f"{result.run_id} ({db})")
    return rows


def remember(db: Path, command: str, run_ids: list[str]) -> None:
    """Record what this command produced: `ragvslc report` without --run shows it (issue 29.5)."""
    from compare.store.db import Store

    with Store(db) as store:
        store.record_command(command, run_ids)


def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for results.duckdb and the report.")] = Path(
        "demo-output"
    ),
    base_url: Annotated[
        list[str] | None, typer.Option(help="Use running server(s), not a managed one; repeatable.")
    ] = None,
    data_dir: DataOpt = None,
    wide: WideOpt = False,
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
            run_ids = [run_and_summarise(s, db, base_url, data_dir, False, shared=srv, wide=wide)
                       for s in specs]
    except (ServerError, ModelError) as exc:
        fail(str(exc))
    remember(db, "demo", run_ids)
    files = write_report(db, out / "report", run_ids)
    console.out.print(f"results: {db}\nreport:  {files.html}")
    _end_with_decisions(db, run_ids)


def _end_with_decisions(db: Path, run_ids: list[str]) -> None:
    """The demo ends with each run's decision line, as the report opens with it (issue 24; helper A)."""
    import duckdb

    from compare.analysis.decision import decision_for

    with duckdb.connect(str(db), read_only=True) as con:
        for run_id in run_ids:
            line = decision_for(con, run_id).sentence
            console.out.print(f"decision ({run_id}): {line}", markup=False, highlight=False)

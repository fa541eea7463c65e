"""`ragvslc load`: each pipeline of a spec under open-loop traffic, a step per rate (issue 28).

The engine is compare/run/load.py (traffic, rows, step records) and compare/analysis/load.py
(what each step measured); this module parses, checks the input and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli import console
from cli.common import INTERRUPTED, RUN_STOPPED, BaseUrlOpt, DataOpt, DbOpt, JsonOpt, csv_list, fail

# The table's columns (every field is in --json: compare/analysis/load.py STEP_FIELDS).
COLUMNS = (
    "pipeline", "step", "status", "sent", "answered", "achieved_rps", "ttft_p50_ms", "ttft_p99_ms",
    "e2e_p50_ms", "e2e_p99_ms", "slo_attainment", "goodput_rps", "hit_rate", "quality", "quality_idle",
)
TOP_LEVEL = ("run_id", "idle_run_id", "db", "slos", "probes", "steps")


def _positive(name: str, values: list[Any] | None) -> list[Any] | None:
    for v in values or []:
        if not v > 0:
            fail(f"{name}: every value must be > 0 (got {v:g})")
    return values


def _slo(name: str, value: float | None) -> float | None:
    if value is not None and not value > 0:
        fail(f"{name}: an SLO must be > 0 ms (got {value:g})")
    return value


def load_cmd(
    spec: Annotated[
        Path, typer.Option(help="Run spec (TOML) with the corpus, pipelines and a [load] section.")],
    rates: Annotated[str | None, typer.Option(
        help="Request rates (requests/s), one step each, e.g. 0.5,1; or auto: a saturation probe, "
             "then rates spread up to its throughput.")] = None,
    concurrency: Annotated[
        str | None, typer.Option(help="Fixed-concurrency steps (closed loop), e.g. 1,4.")] = None,
    requests: Annotated[int | None, typer.Option(help="Requests per step and pipeline.")] = None,
    trace: Annotated[Path | None, typer.Option(
        help="A timestamped JSONL trace replayed as one more step (timestamp in ms, doc_id / "
             "doc_index / hash_ids).")] = None,
    trace_time_scale: Annotated[float | None, typer.Option(
        help="The trace's offsets times this (0.5: twice as fast).")] = None,
    workload: Annotated[Path | None, typer.Option(
        help="A workload TOML: its questions_per_doc sets each document's question mix.")] = None,
    slo_ttft_ms: Annotated[float | None, typer.Option(help="SLO: time to first token, ms.")] = None,
    slo_e2e_ms: Annotated[float | None, typer.Option(help="SLO: end-to-end latency, ms.")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="SLO: time per output token, ms.")] = None,
    db: DbOpt = Path("results.duckdb"),
    base_url: BaseUrlOpt = None,
    data_dir: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each pipeline under traffic, step by step: goodput, SLOs, cache hits, quality; resumable."""
    from compare.run.load import load, with_traffic
    from compare.run.runner import RunStopped
    from compare.run.spec import SpecError, load_spec
    from compare.serving.server import ServerError
    from compare.serving.weights import ModelError
    from compare.store.db import StoreBusyError

    try:
        rate_list: list[Any] | str | None = (
            "auto" if rates is not None and rates.strip().lower() == "auto"
            else _positive("--rates", csv_list(rates, float)))
        conc_list = _positive("--concurrency", csv_list(concurrency, int))
    except ValueError as exc:  # "0.5,x": not a number
        fail(f"--rates/--concurrency: {exc}")
    _positive("--requests", [requests] if requests is not None else None)
    _positive("--trace-time-scale", [trace_time_scale] if trace_time_scale is not None else None)
    try:
        run_spec = with_traffic(
            load_spec(spec), str(spec), rates=rate_list, concurrency=conc_list, requests=requests,
            trace=str(trace.resolve()) if trace else None, trace_time_scale=trace_time_scale,
            workload=str(workload.resolve()) if workload else None,
            slo_ttft_ms=_slo("--slo-ttft-ms", slo_ttft_ms), slo_e2e_ms=_slo("--slo-e2e-ms", slo_e2e_ms),
            slo_tpot_ms=_slo("--slo-tpot-ms", slo_tpot_ms))
    except SpecError as exc:
        fail(str(exc))
    try:
        with console.progress_bar() as progress:
            result = load(run_spec, db, say=console.say, base_url=base_url, data_dir=data_dir,
                          progress=progress)
    except RunStopped as exc:
        fail(f"{exc}\nfinished rows are saved: fix the cause, then run the same command again",
             code=RUN_STOPPED)
    except (StoreBusyError, ServerError, ModelError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.say("interrupted: finished rows are saved and the step is marked incomplete; "
                    "run the same command again to resume")
        raise typer.Exit(INTERRUPTED) from None
    print_steps(db, result.run_id, result.idle_run_id, run_spec.load.slos() if run_spec.load else {}, as_json,
                result.probes)


def print_steps(db: Path, run_id: str, idle_run_id: str, slos: dict[str, float], as_json: bool,
                probes: dict[str, dict[str, Any]] | None = None) -> None:
    """The steps' table (or --json); `probes`: an automatic sweep's probe per pipeline
    (probe_rps, probe_concurrency, the rates derived from it)."""
    import duckdb

    from compare.analysis.load import step_metrics
    from compare.analysis.load_verdict import load_verdicts

    with duckdb.connect(str(db), read_only=True) as con:
        rows = step_metrics(con, run_id, slos)
    verdicts = load_verdicts(rows)
    if as_json:
        console.emit_json({"run_id": run_id, "idle_run_id": idle_run_id, "db": str(db), "slos": slos,
                           "probes": probes or {}, "steps": rows,
                           "verdict": [{"at": v.step, "winner": v.winner, "fisher_p": v.p, "line": v.text}
                                       for v in verdicts]})
        return
    slo_text = ", ".join(f"{k} <= {v:g} ms" for k, v in slos.items()) or "none given (every answer is good)"
    console.table(rows, COLUMNS, title=f"{run_id} ({db}); SLOs: {slo_text}")
    for name, probe in (probes or {}).items():
        console.say(f"{name}: saturation probe {probe['probe_rps']:.3g} requests/s at concurrency "
                    f"{probe['probe_concurrency']} -> rates {', '.join(f'{r:g}' for r in probe['rates'])}")
    for r in rows:
        if not r["steady"]:
            note = f" ({r['note']})" if r["note"] else ""
            console.say(f"! {r['pipeline']} {r['step']}: {r['status']}{note}: "
                        "not steady, no throughput or goodput")
    if rows and all(r.get("quality_idle") is None for r in rows):  # a null column, said in words
        console.say(f"quality_idle is empty: the spec's idle run ({idle_run_id}) is not in {db}; "
                    "`ragvslc run` the same spec into it to compare quality under load with idle")
    for v in verdicts:  # the claim, rate by rate (compare/analysis/load_verdict.py)
        console.say(v.text)

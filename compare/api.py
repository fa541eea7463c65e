"""The Python API: what the CLI does, for a notebook or a script.

    from compare import api                  # `import ragvslc` is the public face of this module
    result = api.run("my-spec.toml", db="results.duckdb")       # or a RunSpec, or a dict
    rep = api.report("results.duckdb", [result.run_id])
    rep.charts["latency_percentiles"]                            # an Altair chart
    rep.write("report/")                                         # report.html and chart images

Importing it changes nothing (no environment variable, no signal handler); `run` sets the
offline defaults the house rules need (no model hub) before it loads a model. It is safe inside a
running event loop (Jupyter's): the run then goes on a worker thread with its own loop, and
`run_async` awaits it without blocking the caller's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compare.analysis.decision import Decision
from compare.core.offline import offline_defaults
from compare.report.assemble import Report, build_report
from compare.run.execute import Serving, execute
from compare.run.runner import Progress, RunResult
from compare.run.spec import RunSpec, load_spec, validate_spec
from compare.store.export import Exported, Format

__all__ = ["Decision", "Report", "RunResult", "RunSpec", "decision", "export", "offline_defaults", "report",
           "run", "run_async", "spec"]

def spec(source: RunSpec | Mapping[str, Any] | str | Path) -> RunSpec:
    """A RunSpec from a spec, a dict shaped like the TOML file, or the file's path."""
    if isinstance(source, RunSpec):
        return source
    if isinstance(source, Mapping):
        return validate_spec(dict(source))
    return load_spec(Path(source))


def run(
    source: RunSpec | Mapping[str, Any] | str | Path,
    db: str | Path = "results.duckdb",
    *,
    base_url: str | Sequence[str] | None = None,
    data_dir: Path | None = None,
    retry_errors: bool = False,
    say: Callable[[str], None] = print,
    shared: Serving | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run a spec end to end (server up unless `base_url`, every request stored in `db`); the
    CLI's `run` and `demo` come through here. `progress(label, done, total)` hears each stored row."""
    offline_defaults()
    the_spec = source if isinstance(source, RunSpec) else spec(source)  # validated once, here or before
    go = functools.partial(execute, the_spec, Path(db), say=say, base_url=base_url, data_dir=data_dir,
                           retry_errors=retry_errors, shared=shared, progress=progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return go()  # no loop in this thread: the run owns one
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ragvslc-run") as pool:
        return pool.submit(go).result()


async def run_async(
    source: RunSpec | Mapping[str, Any] | str | Path,
    db: str | Path = "results.duckdb",
    **kwargs: Any,
) -> RunResult:
    """`run`, awaited: the run goes on a worker thread and the caller's loop stays free."""
    return await asyncio.to_thread(run, source, db, **kwargs)


def report(db: str | Path, runs: Sequence[str] | None = None, *, price_sheet: Path | None = None) -> Report:
    """The report of these runs (default: what the last `run`/`demo` produced, else the latest
    run) in memory: `charts`, `summary`, `notes`; `write(folder)`, and a notebook displays it."""
    return build_report(Path(db), list(runs) if runs else None, price_sheet=price_sheet)


def decision(db: str | Path, run_id: str, *, q: int = 10) -> Decision:
    """The run's one decision line at q questions per document (issue 24; helper A), built by the
    same function as the run's output, the report's top and `recommend`: `.sentence`, and
    `.to_dict()` is what `run --json` (`decision`) and `recommend --json` (`decisions`) carry."""
    import duckdb

    from compare.analysis.decision import decision_for

    with duckdb.connect(str(db), read_only=True) as con:
        return decision_for(con, run_id, q)


def export(db: str | Path, out: str | Path, fmt: Format = "parquet") -> list[Exported]:
    """What `ragvslc export` writes: every table (times as UTC), plus `requests` (one row per
    request with its pipeline label and $ in both views: compare.analysis.samples) and
    `data_dictionary.csv` (each requests column's unit and meaning)."""
    import duckdb

    from compare.analysis.samples import COLUMNS, samples
    from compare.store.export import export_tables, write_dictionary, write_frame

    done = export_tables(Path(db), Path(out), fmt)
    with duckdb.connect(str(db), read_only=True) as con:
        frame = samples(con)
    done.append(write_frame(frame, Path(out), "requests", fmt))
    write_dictionary(Path(out), COLUMNS)
    return done

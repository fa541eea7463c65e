"""The Python API: what the CLI does, for a notebook or a script.

    from compare import api
    result = api.run("specs/demo.toml", db="results.duckdb")   # or a RunSpec, or a dict
    rep = api.report("results.duckdb", [result.run_id])
    rep.charts["latency_cdf"]                                    # an Altair chart

Importing it changes nothing (no environment variable, no signal handler); `run` sets the
offline defaults the house rules need (no model hub) before it loads a model. It is safe inside a
running event loop (Jupyter's): the run then goes on a worker thread with its own loop, and
`run_async` awaits it without blocking the caller's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from compare.core.offline import offline_defaults
from compare.report.assemble import Report, build_report
from compare.run.execute import Serving, execute
from compare.run.runner import RunResult
from compare.run.spec import RunSpec, load_spec, validate_spec

__all__ = ["Report", "RunResult", "RunSpec", "offline_defaults", "report", "run", "run_async", "spec"]

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
) -> RunResult:
    """Run a spec end to end (server up unless `base_url`, every request stored in `db`)."""
    offline_defaults()
    the_spec = spec(source)

    def go() -> RunResult:
        return execute(the_spec, Path(db), say=say, base_url=base_url, data_dir=data_dir,
                       retry_errors=retry_errors, shared=shared)

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
    """The report of these runs (default: the latest) in memory: `charts`, `summary`, `notes`."""
    return build_report(Path(db), list(runs) if runs else None, price_sheet=price_sheet)

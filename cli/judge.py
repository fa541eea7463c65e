"""`ragvslc judge`: grade stored free-text answers with a judge model (parsing only; the work is
compare/run/judge.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from cli import console
from cli.common import DbOpt, fail


def judge_cmd(
    db: DbOpt = Path("results.duckdb"),
    run: Annotated[list[str] | None, typer.Option("--run", help="Run id(s); default every run.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="OpenAI-compatible server of the judge; default a managed vLLM."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Judge model; default the model the runs were made with.")
    ] = None,
) -> None:
    """Ask a judge model whether each free-text answer is correct (once per row and judge;
    `ragvslc score` reuses the stored verdicts), then print its agreement with token F1."""
    from compare.analysis.judgements import agreement
    from compare.run.execute import server_for
    from compare.run.judge import judge_runs
    from compare.run.spec import validate_spec
    from compare.serving.client import HttpBackend
    from compare.store.db import Store, StoreBusyError

    if not db.exists():
        fail(f"no database at {db}")
    try:
        with Store(db) as store:
            where = "WHERE list_contains(?, run_id)" if run else ""
            models = [str(r[0]) for r in store.con.execute(
                f"SELECT DISTINCT model FROM runs {where} ORDER BY 1", [run] if run else []).fetchall()]
            if model is None and len(models) != 1:
                fail(f"runs of {len(models)} models ({', '.join(models) or 'none'}): pass --model or --run")
            name = model or models[0]
            with server_for(validate_spec({"server": {"model": name}}), console.say, base_url) as (url, _, _):
                first = url if isinstance(url, str) else url[0]

                async def go() -> object:
                    async with HttpBackend(first, name) as backend:
                        return await judge_runs(store, backend, run or None)

                result = asyncio.run(go())
            console.out.print(result)
            runs = run or [str(r[0]) for r in store.con.execute("SELECT run_id FROM runs").fetchall()]
            rows = agreement(store.con, runs).to_dict("records")
    except (StoreBusyError, ValueError) as exc:
        fail(str(exc))
        return
    cols = ["run_id", "pipeline", "n", "judge_mean", "token_f1_mean", "agreement", "correlation"]
    console.table(rows, cols, title="judge vs token F1")

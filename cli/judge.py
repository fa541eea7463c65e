"""`ragvslc judge`: grade stored answers with a judge model, checked on controls first (parsing
and printing only; the work is compare/run/judge.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import console
from cli.common import DbOpt, JsonOpt, fail

if TYPE_CHECKING:
    from compare.core.secrets import HeaderValue


def judge_cmd(
    db: DbOpt = Path("results.duckdb"),
    run: Annotated[list[str] | None, typer.Option("--run", help="Run id(s); default every run.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="OpenAI-compatible server of the judge; default a managed vLLM."),
    ] = None,
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", metavar="VAR", help="The variable holding the judge "
                          "endpoint's key (as [server] api_key_env; the key itself is never an option).")
    ] = "OPENAI_API_KEY",
    header: Annotated[
        list[str] | None, typer.Option("--header", metavar="NAME=${VAR}", help="An extra header for the "
                                       "judge's endpoint, its value read from the environment (as [server] "
                                       "headers); repeatable. Never stored.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Judge model; default another installed chat model than "
                                 "the one that wrote the answers (with --base-url: the runs' model).")
    ] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Judge the questions scored by this answer metric "
                                 "(default: free text, token_f1 or judge).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Judge every question with a gold answer.")] = False,
    controls: Annotated[
        int, typer.Option("--controls", min=1, help="Questions per run whose controls check the judge first.")
    ] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Check a judge model on controls built from the corpus, then ask it whether each answer is
    correct (once per row and judge; `ragvslc score` reuses the stored verdicts). Prints its
    control accuracy, what it skipped and why, then its agreement with token F1."""
    from compare.analysis.judgements import agreement, judge_notes
    from compare.core.endpoints import Endpoint
    from compare.run.execute import server_for
    from compare.run.judge import ALL, JudgeResult, check_scope, default_judge, describe, judge_runs
    from compare.run.spec import validate_spec
    from compare.serving.client import HttpBackend
    from compare.serving.endpoint import AuthError
    from compare.store.db import Store, StoreBusyError

    if metric and every:
        fail("give --metric or --all, not both")
    headers = _headers(header or [])
    scope = ALL if every else metric
    try:
        check_scope(scope)
    except ValueError as exc:
        fail(str(exc))
    if not db.exists():
        fail(f"no database at {db}")
    try:
        with Store(db) as store:
            where = "WHERE list_contains(?, run_id)" if run else ""
            models = [str(r[0]) for r in store.con.execute(
                f"SELECT DISTINCT model FROM runs {where} ORDER BY 1", [run] if run else []).fetchall()]
            if model is None and len(models) != 1:
                fail(f"runs of {len(models)} models ({', '.join(models) or 'none'}): pass --model or --run")
            # a named judge, or the runs' model on a given server, else another installed model
            if model or base_url:
                name, note = model or models[0], None
            else:
                name, note = default_judge(models[0])
            if note:
                console.say(note)
            with server_for(validate_spec({"server": {"model": name}}), console.say, base_url) as (url, _, _):
                first = url if isinstance(url, str) else url[0]

                async def go() -> JudgeResult:
                    async with HttpBackend(Endpoint(first, api_key_env, headers), name) as backend:
                        return await judge_runs(store, backend, run or None, scope,
                                                control_questions=controls)

                result = asyncio.run(go())
            runs = run or [str(r[0]) for r in store.con.execute("SELECT run_id FROM runs").fetchall()]
            rows = agreement(store.con, runs).to_dict("records")
            notes = judge_notes(store.con, runs)
    except (StoreBusyError, ValueError, AuthError) as exc:  # a key variable unset or refused: one line
        fail(str(exc))
        return
    if as_json:
        console.emit_json({**describe(result), "notes": notes, "agreement": rows})
        return
    lines = result.lines()
    # then each run's scoring judge where it is not the one just checked (an earlier judge's)
    for line in [*lines, *(n for n in notes if n not in lines)]:
        console.out.print(line, highlight=False, markup=False, soft_wrap=True)
    cols = ["run_id", "pipeline", "n", "judge_mean", "token_f1_mean", "agreement", "correlation"]
    console.table(rows, cols, title="judge vs token F1")


def _headers(given: list[str]) -> dict[str, HeaderValue]:
    """`NAME=${VAR}` per --header, as `[server] headers` spells a value from the environment. A
    secret-looking literal is refused: on a command line it sits in the shell's history and `ps`."""
    from compare.core.secrets import HeaderValue, literal_secrets

    out: dict[str, HeaderValue] = {}
    for item in given:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            fail(f"--header {name!r}: give NAME=${{VAR}} (the value read from $VAR)")
        out[name.strip()] = HeaderValue.parse(value)
    if found := literal_secrets(out):
        fail(f"--header {', '.join(found)}: a secret-looking literal value; give NAME=${{VAR}} and set $VAR")
    return out

"""What every command shares: option types, the one way to fail, exit codes, list parsing."""

from __future__ import annotations

import importlib.metadata
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from cli import console

# Exit codes, the same for every command (README "Exit codes").
OK, RUN_STOPPED, BAD_INPUT, NO_EVIDENCE, INTERRUPTED = 0, 1, 2, 3, 130

DbOpt = Annotated[
    Path, typer.Option("--db", envvar="RAGVSLC_DB", help="DuckDB file holding runs and results.")
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="RAGVSLC_DATA", help="Data directory (default ../shared/data)."),
]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option(
        envvar="RAGVSLC_BASE_URL",
        help="Use running OpenAI-compatible server(s), not a managed vLLM; repeat or comma-separate "
        "for replicas (in the variable: separated by spaces or commas). The API key, if the server "
        "wants one, is read from $OPENAI_API_KEY.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON object on stdout (fields: README).")
]
SUMMARY_COLUMNS = (
    "label", "asked", "answered", "headline", "contains", "exact_match", "evidence_recall",
    "ttft_p50_ms", "e2e_p50_ms", "total_p50_ms", "context_tokens_mean", "cached_tokens_mean",
)


def fail(msg: str, code: int = BAD_INPUT) -> NoReturn:
    # Escaped: a message may hold brackets ("the [video] extra") that rich would eat as markup.
    console.console.print(f"[red]error:[/red] {escape(msg)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C (or SIGTERM, which main.py turns into it) exits 130 with one line, as `run` does;
    click's own handling would print "Aborted!" and exit 1, the code of a stopped run."""
    try:
        yield
    except KeyboardInterrupt:
        console.say("interrupted")
        raise typer.Exit(INTERRUPTED) from None


def csv_list(value: str | None, cast: type) -> list[Any] | None:
    return [cast(x) for x in value.split(",") if x.strip()] if value else None


def source_commit(folder: Path) -> str | None:
    """The git commit of a source checkout the CLI runs from (with "-dirty" for local changes);
    None for an installed copy, even one whose site-packages sits inside some repository."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=5, check=True)
        except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: no commit
            return None
        return done.stdout.strip() or None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != folder.resolve():
        return None
    return git("describe", "--always", "--dirty", "--abbrev=12")


def version_text(folder: Path) -> str:
    try:
        version = importlib.metadata.version("ragvslc")
    except importlib.metadata.PackageNotFoundError:  # run as `python main.py` without an install
        version = "unknown (not installed)"
    commit = source_commit(folder)
    return f"ragvslc {version}" + (f" (git {commit})" if commit else "")

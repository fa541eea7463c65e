"""What every command shares: option types, the one way to fail, exit codes, list parsing."""

from __future__ import annotations

import importlib.metadata
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from cli import console

# Exit codes, the same for every command (docs/reference.md "Exit codes"). PARTIAL_EVIDENCE:
# `recommend` names a winner, but the runs cover only part of the workload (its caveats say which).
OK, RUN_STOPPED, BAD_INPUT, NO_EVIDENCE, PARTIAL_EVIDENCE, INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = ("Exit codes: 0 ok, 1 run stopped, 2 bad input, 3 no evidence, 4 partial evidence (recommend: "
              "a winner with caveats), 130 interrupted.")
# -h as well as --help on every command and group.
CONTEXT = {"help_option_names": ["-h", "--help"]}

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
    bool, typer.Option("--json", help="Print the result as one JSON object on stdout "
                       "(fields: docs/reference.md).")
]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column (default: the ones that matter most).")]
SUMMARY_COLUMNS = (
    "label", "asked", "answered", "headline", "contains", "exact_match", "evidence_recall",
    "ttft_p50_ms", "e2e_p50_ms", "total_p50_ms", "context_tokens_mean", "cached_tokens_mean",
)


def fail(msg: str, code: int = BAD_INPUT) -> NoReturn:
    # Escaped: a message may hold brackets ("the [video] extra") that rich would eat as markup.
    from compare.core.secrets import scrub  # lazy: the CLI starts without pydantic

    # Scrubbed: an error a server sent back may echo a key or a header's value (issue 32).
    console.console.print(f"[red]error:[/red] {escape(scrub(msg))}", highlight=False)
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


class CommaList:
    """A comma-separated list option ("2000,4000"), each item checked by `item`: a bad one is a
    usage error naming the option and the item (exit 2), never a traceback from deep inside."""

    def __init__(self, item: Callable[[str], Any], what: str, example: str, metavar: str) -> None:
        self.item, self.what, self.example, self.name = item, what, example, metavar

    def convert(self, value: Any) -> list[Any]:
        """The list, or typer.BadParameter with one line. typer 0.29 has no `click_type=`; it runs a
        `parser=` inside pydantic, which passes typer.BadParameter through untouched (a ValueError
        would gain pydantic's "Value error, " prefix), and typer names the option in the error."""
        if isinstance(value, list):  # a default, already a list
            return value
        out = []
        for part in (p.strip() for p in str(value).split(",")):
            if not part:
                continue
            try:
                out.append(self.item(part))
            except ValueError:
                raise typer.BadParameter(f"{part!r} is not {self.what} (e.g. {self.example})") from None
        if not out:
            raise typer.BadParameter(f"no values given (e.g. {self.example})")
        return out


def _count(text: str) -> int:
    n = int(text)
    if n < 1:
        raise ValueError(text)
    return n


def _length(text: str) -> int | str:
    return "full" if text == "full" else _count(text)


def _share(text: str) -> float:
    x = float(text)
    if not 0.0 <= x <= 1.0:
        raise ValueError(text)
    return x


COUNTS = CommaList(_count, "a whole number >= 1", "1,10,100", "N,N,...")
LENGTHS = CommaList(_length, "a whole number of tokens (or full)", "2000,4000", "TOKENS,...")
DEPTHS = CommaList(_share, "a depth between 0 and 1", "0.1,0.5,0.9", "DEPTH,...")


def list_option(kind: CommaList, help_text: str, *names: str) -> Any:
    """A typed comma-separated list option (`kind` says what each item is)."""
    return typer.Option(*names, parser=kind.convert, metavar=kind.name, help=help_text)


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

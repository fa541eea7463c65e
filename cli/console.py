"""Terminal output: progress while a run goes, tables or JSON after it. Nothing here computes
results. Results go to stdout, everything else (messages, progress, errors) to stderr, so
`ragvslc ... --json | jq` sees only the JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:  # the runner (openai, duckdb, ...) is not loaded for `--version` or a listing
    from compare.run.runner import Progress as ProgressFn

console = Console(stderr=True, soft_wrap=True)  # messages must stay greppable, unwrapped
# Piped output (files, CI logs) gets wide tables instead of folded cells.
out = Console(width=None if sys.stdout.isatty() else 200)


def say(msg: str) -> None:
    console.print(msg, highlight=False)


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@contextmanager
def progress_bar() -> Iterator[ProgressFn]:
    """A progress callback for the runner: a bar on a terminal, one line per request elsewhere
    (logs, CI, a supervising process that watches how far a run got). Index builds inside the
    block show their embedding progress too (see `index_progress`)."""
    with index_progress() as bar:
        if bar is None:

            def line(label: str, done: int, total: int) -> None:
                if done:
                    console.print(f"[{done}/{total}] {label}", highlight=False, markup=False)

            yield line
            return
        task = bar.add_task("requests", total=None)

        def update(label: str, done: int, total: int) -> None:
            bar.update(task, description=label[:48], completed=done, total=total)

        yield update


@contextmanager
def index_progress() -> Iterator[Progress | None]:
    """Embedding progress of the RAG indexes built inside the block (minutes per book on a CPU),
    for commands without a run's progress bar (`ragvslc retrieval`): on a terminal a bar (given
    to the block, which may add its own tasks to it), elsewhere log lines (and None)."""
    if not console.is_terminal:
        with _embedding_lines():
            yield None
        return
    with _bar() as bar, _embedding_task(bar):
        yield bar


@contextmanager
def _embedding_task(bar: Progress) -> Iterator[None]:
    from pipelines.embedder import embed_progress  # lazy: faiss and torch load only for a build

    task = bar.add_task("embedding", total=None, visible=False)

    def update(what: str, done: int, total: int) -> None:
        if done == 0:  # a new index: its own clock
            bar.reset(task, description=f"embedding {what}"[:48], total=total, visible=total > 0)
        else:
            bar.update(task, completed=done, visible=done < total)

    with embed_progress(update):
        yield


@contextmanager
def _embedding_lines(every_s: float = 5.0, quiet_s: float = 2.0) -> Iterator[None]:
    """Logs get a line every `every_s` while a build goes and one at its end; builds shorter
    than `quiet_s` (a needle haystack: one batch) stay silent."""
    from pipelines.embedder import embed_progress

    started = last = 0.0

    def line(what: str, done: int, total: int) -> None:
        nonlocal started, last
        now = time.monotonic()
        if done == 0:
            started = last = now
            return
        if (done < total and now - last >= every_s) or (done == total and now - started >= quiet_s):
            last = now
            console.print(f"embedding {what}: {done}/{total} chunks, {now - started:.0f} s",
                          highlight=False, markup=False)

    with embed_progress(line):
        yield


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def jsonable(value: Any) -> Any:
    """Plain JSON types: timestamps as ISO 8601 strings, NaN and infinities as null, numpy and
    pandas scalars as Python numbers, paths as strings, dataclasses and pydantic models as
    objects (JSON has no NaN: `jq` and most parsers reject Python's bare NaN)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value.__class__.__name__ in ("NaTType", "NAType"):  # pandas' missing values (NaT is a datetime)
        return None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return jsonable(float(value))
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    dump: Callable[..., Any] | None = getattr(value, "model_dump", None)  # pydantic
    if dump is not None:
        return jsonable(dump(mode="json"))
    item: Callable[[], Any] | None = getattr(value, "item", None)  # numpy / pandas scalars
    if item is not None:
        return jsonable(item())
    raise TypeError(f"cannot write {type(value).__name__} as JSON: {value!r}")


def emit_json(data: Any) -> None:
    """A command's result as one JSON document on stdout (not through rich: no markup, no
    wrapping, no colour codes)."""
    sys.stdout.write(json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str = "") -> None:
    """Rows as a table whose ids and numbers are never broken: such a column is as wide as its
    widest cell and does not wrap ("0.000389" folded at a narrow terminal read as "0.00"); only
    text columns (labels, notes) wrap to make room."""
    t = Table(title=title or None)
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    for i, c in enumerate(columns):
        if _whole(c, [r.get(c) for r in rows]):
            widest = max([len(c), *(len(line[i]) for line in cells)])
            t.add_column(c, no_wrap=True, overflow="ignore", min_width=widest)
        else:
            t.add_column(c, overflow="fold")
    for line in cells:
        t.add_row(*line)
    out.print(t)


def _whole(column: str, values: Sequence[Any]) -> bool:
    """Ids, hashes, numbers and timestamps: cells that mean nothing once split across lines."""
    if column.endswith("_id") or column in ("params_hash", "created_at"):
        return True
    return all(v is None or (isinstance(v, int | float | Decimal) and not isinstance(v, bool))
               for v in values)

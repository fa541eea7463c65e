"""Terminal output: progress while a run goes, tables after it. Nothing here computes results."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compare.runner import Progress as ProgressFn

console = Console(stderr=True, soft_wrap=True)  # messages must stay greppable, unwrapped
# Piped output (files, CI logs) gets wide tables instead of folded cells.
out = Console(width=None if sys.stdout.isatty() else 200)


def say(msg: str) -> None:
    console.print(msg, highlight=False)


@contextmanager
def progress_bar() -> Iterator[ProgressFn]:
    """A progress callback for the runner: a bar on a terminal, one line per request elsewhere
    (logs, CI, a supervising process that watches how far a run got)."""
    if not console.is_terminal:

        def line(label: str, done: int, total: int) -> None:
            if done:
                console.print(f"[{done}/{total}] {label}", highlight=False, markup=False)

        yield line
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("requests", total=None)

        def update(label: str, done: int, total: int) -> None:
            bar.update(task, description=label[:48], completed=done, total=total)

        yield update


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str = "") -> None:
    t = Table(title=title or None)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(_fmt(r.get(c)) for c in columns))
    out.print(t)

"""What every command shares: option types, the one way to fail, list parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from compare import console

DbOpt = Annotated[Path, typer.Option("--db", help="DuckDB file holding runs and results.")]
DataOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default $RAGVSLC_DATA or ../shared/data).")
]
SUMMARY_COLUMNS = (
    "label", "n", "errors", "contains", "exact_match", "evidence_recall",
    "ttft_p50_ms", "e2e_p50_ms", "total_p50_ms", "context_tokens_mean", "cached_tokens_mean",
)


def fail(msg: str, code: int = 2) -> None:
    console.console.print(f"[red]error:[/red] {msg}", highlight=False)
    raise typer.Exit(code)


def csv_list(value: str | None, cast: type) -> list[Any] | None:
    return [cast(x) for x in value.split(",") if x.strip()] if value else None

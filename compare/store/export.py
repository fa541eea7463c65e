"""Every table of a results file as Parquet or CSV files, for tools that do not speak DuckDB.

DuckDB writes them itself (`COPY ... TO`), so types survive as far as the format allows:
Parquet keeps timestamps, integers, lists and structs; JSON columns (spans, params, the spec)
stay JSON text in both formats. Nothing is recomputed: a file holds exactly the table's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from compare.store.db import Store

Format = Literal["parquet", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "csv")
_OPTIONS: dict[Format, str] = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER true"}


@dataclass(frozen=True)
class Exported:
    table: str
    path: Path
    rows: int


def _sql_string(text: str) -> str:
    """A SQL string literal: COPY takes its target as a literal, not as a bound parameter."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def export_tables(db: Path, out: Path, fmt: Format = "parquet") -> list[Exported]:
    """Write each table of `db` to `out/<table>.<fmt>` (replacing older copies); one per table,
    in name order, with the row count DuckDB reports for what it wrote."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not db.exists():
        raise ValueError(f"no database at {db}")
    out.mkdir(parents=True, exist_ok=True)
    done = []
    with Store(db, read_only=True) as store:
        tables = [
            str(r[0]) for r in store.con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' ORDER BY table_name"
            ).fetchall()
        ]
        for table in tables:
            path = out / f"{table}.{fmt}"
            row = store.con.execute(
                f"COPY {_ident(table)} TO {_sql_string(str(path))} ({_OPTIONS[fmt]})"
            ).fetchone()
            done.append(Exported(table, path, int(row[0]) if row else 0))
    return done

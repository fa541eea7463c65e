"""Every table of a results file as Parquet or CSV files, for tools that do not speak DuckDB.

DuckDB writes them itself (`COPY ... TO`), so types survive as far as the format allows:
Parquet keeps timestamps, integers, lists and structs; JSON columns (spans, params, the spec)
stay JSON text in both formats. Nothing is recomputed: a file holds exactly the table's rows.
Timestamps are stored as UTC without a zone; the files say so (TIMESTAMP WITH TIME ZONE, UTC),
so pandas reads them as aware times. The derived frames a reader wants (one row per request
with its label and $: compare.analysis.samples) are written beside them by the layer above
(`write_frame`, `write_dictionary`; compare/api.py `export`): the store does not import the
analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd

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
        store.con.execute("SET TimeZone = 'UTC'")  # the zone the stored times are in
        for table in tables:
            path = out / f"{table}.{fmt}"
            row = store.con.execute(
                f"COPY (SELECT {_zoned_columns(store.con, table)} FROM {_ident(table)}) "
                f"TO {_sql_string(str(path))} ({_OPTIONS[fmt]})"
            ).fetchone()
            done.append(Exported(table, path, int(row[0]) if row else 0))
    return done


def _zoned_columns(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The table's columns in order, each stored time (UTC, no zone) marked as UTC."""
    cols = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ? ORDER BY column_index", [table]).fetchall()
    return ", ".join(
        f"{_ident(c)}::TIMESTAMPTZ AS {_ident(c)}" if t == "TIMESTAMP" else _ident(c) for c, t in cols
    )


def write_frame(df: pd.DataFrame, out: Path, name: str, fmt: Format = "parquet") -> Exported:
    """A derived frame (e.g. the requests) as `out/<name>.<fmt>`, beside the tables."""
    path = out / f"{name}.{fmt}"
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z")
    return Exported(name, path, len(df))


def write_dictionary(out: Path, columns: dict[str, tuple[str, str]], name: str = "requests") -> Path:
    """`data_dictionary.csv`: for each column of the `name` file, its unit and meaning."""
    path = out / "data_dictionary.csv"
    pd.DataFrame([{"file": name, "column": c, "unit": u, "meaning": m} for c, (u, m) in columns.items()]
                 ).to_csv(path, index=False)
    return path

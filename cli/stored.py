"""The results database a command reads, checked before the engine opens it, and run ids by
unique prefix.

Every reading command (runs, report, cost, recommend, score, export) starts here, so a missing
file, a file that is not DuckDB, a DuckDB file that is not ours, a database another process holds
and a run id that matches nothing or several runs are each one line and exit 2, never a
traceback from inside the analysis (and never an export of empty tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cli.common import fail

# Tables every ragvslc results file has had since its first migration.
OUR_TABLES = ("runs", "predictions", "schema_migrations")


def checked_db(db: Path, runs: Sequence[str] | None = None) -> list[str] | None:
    """Exit 2 with one line unless `db` is a ragvslc results database; return the full run ids
    `runs` name (each an id or a unique prefix, with or without "run-"), None for none given."""
    import duckdb

    if not db.exists():
        fail(f"no database at {db}")
    if db.is_dir():
        fail(f"{db} is a folder, not a results database (give the .duckdb file)")
    if db.stat().st_size == 0:
        fail(f"{db} is an empty file, not a results database")
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        text = str(exc)
        if "lock" in text.lower():
            fail(f"database {db} is in use by another process; wait for it to finish or use another --db")
        fail(f"{db} is not a DuckDB database ({text.splitlines()[0][:160]})")
    with con:
        tables = {str(r[0]) for r in
                  con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        missing = [t for t in OUR_TABLES if t not in tables]
        if missing:
            fail(f"{db} is a DuckDB file but not a ragvslc results database (no {', '.join(missing)} "
                 "table); `ragvslc run` or `ragvslc demo` writes one")
        if not runs:
            return None
        known = [str(r[0]) for r in con.execute("SELECT run_id FROM runs ORDER BY created_at").fetchall()]
    return [resolve_run(given, known, db) for given in runs]


def resolve_run(given: str, known: Sequence[str], db: Path | str = "the database") -> str:
    """The one stored run id `given` names: itself, or the only id starting with it (a bare hash
    prefix matches "run-<hash>" too)."""
    if given in known:
        return given
    found = [k for k in known if k.startswith(given) or k.startswith(f"run-{given}")]
    if len(found) == 1:
        return found[0]
    if not found:
        fail(f"no run {given!r} in {db} (`ragvslc runs --db {db}` lists them)")
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    fail(f"run id prefix {given!r} is ambiguous: it matches {shown}; give more characters")

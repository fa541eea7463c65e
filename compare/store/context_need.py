"""The `context_need` table's reader and writer (issue 30): a question's measured context need,
stored once per corpus content hash and reused by every run of that corpus, and the retrieval
probe's requests (`context_probe_requests`, kind 'context_probe': never in `predictions`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

from compare.core.secrets import scrub
from compare.store import views

NEED_COLUMNS = ("corpus_key", "example_id", "source", "context_need", "stratum", "spread_chars",
                "chunk_tokens", "ks", "requests", "prompt_tokens", "output_tokens", "e2e_ms", "model",
                "measured_at")


def read_needs(con: duckdb.DuckDBPyConnection, corpus_key: str, source: str | None = None
               ) -> dict[str, dict[str, Any]]:
    """Per example id: its stored row for this corpus (the probe's where a source is not given and
    several exist)."""
    if not views.has_table(con, "context_need"):
        return {}
    where = "corpus_key = ?" + (" AND source = ?" if source else "")
    rows = con.execute(f"SELECT {', '.join(NEED_COLUMNS)} FROM context_need WHERE {where} "
                       "ORDER BY source = 'probe'", [corpus_key, *([source] if source else [])]).fetchall()
    return {str(r[1]): dict(zip(NEED_COLUMNS, r, strict=True)) for r in rows}


def write_needs(con: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace rows (a re-measurement of the same corpus and source replaces the old)."""
    for r in rows:
        con.execute("DELETE FROM context_need WHERE corpus_key = ? AND example_id = ? AND source = ?",
                    [r["corpus_key"], r["example_id"], r["source"]])
        cols = [c for c in NEED_COLUMNS if c in r]
        con.execute(f"INSERT INTO context_need ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [r[c] for c in cols])


def write_probe_requests(con: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    for r in rows:
        con.execute("DELETE FROM context_probe_requests WHERE corpus_key = ? AND example_id = ? AND k = ? "
                    "AND params_hash = ?", [r["corpus_key"], r["example_id"], r["k"], r["params_hash"]])
        cols = list(r)
        con.execute(f"INSERT INTO context_probe_requests ({', '.join(cols)}) "
                    f"VALUES ({', '.join('?' * len(cols))})",  # a reply never stores a secret
                    [scrub(v) if isinstance(v, str) else v for v in (r[c] for c in cols)])

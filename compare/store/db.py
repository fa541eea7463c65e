"""DuckDB store: every run, example, request and score, written as soon as it is known.

The store doubles as the resume log: a prediction's key is (run_id, example_id, pipeline,
params_hash), so a rerun of the same spec skips what is already there. Each write is its own
transaction, so a killed process loses at most the request that was in flight.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from compare.core.protocols import Role
from compare.core.secrets import redact_json, scrub
from compare.core.types import Example, Prediction
from compare.store import views
from compare.store.migrations import MIGRATIONS
from compare.store.rows import PredictionKey, RowMeta, example_from_row, gold_columns, now, prediction_row

__all__ = ["PredictionKey", "RowMeta", "Store", "StoreBusyError", "git_sha", "prediction_row"]

_ROWS_PER_INSERT = 256  # bounds one statement's parameter list for big example sets


def _redacted(record: Mapping[str, Any]) -> str:
    """A run's spec or server record as stored: header values as their sources, secret flags'
    values and remembered secrets out (compare/core/secrets.py), whoever built the record."""
    return json.dumps(redact_json(json.loads(json.dumps(record, default=str)))[0])


class StoreBusyError(RuntimeError):
    """Another process holds the database file; DuckDB allows one writer process."""


CHECKOUT = Path(__file__).resolve().parents[2]  # where ragvslc's own code lives


def git_sha(cwd: Path | None = None) -> str | None:
    """ragvslc's own commit, so a result can be traced to the code that produced it: read from
    the folder this code lives in (never the user's current directory, which is their project),
    and only when that folder is itself the top of a git checkout (an installed copy inside a
    user's repository has no commit of its own: None)."""
    root = cwd or CHECKOUT
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True, text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    lines = out.stdout.split()
    if len(lines) != 2 or Path(lines[0]).resolve() != root.resolve():
        return None
    return lines[1]


class Store:
    """One DuckDB file, migrated on open."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.session: int | None = None  # set by start_run: the session rows are written in
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise FileNotFoundError(f"no database at {self.path}")
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreBusyError(
                    f"database {self.path} is in use by another process; "
                    "wait for it to finish or use another --db"
                ) from exc
            raise
        if not read_only:
            self._migrate()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        """Apply, by name, every migration this file has not recorded (see migrations.py).

        A fresh file gets the schema's statements only: its data migrations (rewrites of rows an
        older version stored) have no rows to rewrite, and the fix-ups for files from before
        migrations had names have nothing to fix, so neither runs nor is read on that path."""
        fresh = not views.has_table(self.con, "schema_migrations")
        if fresh:
            self.con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                             "applied_at TIMESTAMP, name VARCHAR)")
            done: set[str] = set()
        else:
            done = self._recorded_migrations()
        applied_at = now()  # one time for the migrations this open applies
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            if fresh and callable(sql):  # a data migration: nothing stored yet to rewrite
                self._record_migration(applied_at, name)
                continue
            with self.transaction():
                if callable(sql):
                    sql(self.con)
                else:
                    self.con.execute(sql)
                self._record_migration(applied_at, name)

    def _recorded_migrations(self) -> set[str]:
        """The names this file has applied; a file from before names (it recorded only a count:
        version n was the n-th migration) gains them here."""
        if "name" not in views._columns(self.con, "schema_migrations"):
            self.con.execute("ALTER TABLE schema_migrations ADD COLUMN name VARCHAR")
        for version, (name, _) in enumerate(MIGRATIONS, start=1):
            self.con.execute("UPDATE schema_migrations SET name = ? WHERE version = ? AND name IS NULL",
                             [name, version])
        return {str(r[0]) for r in self.con.execute("SELECT name FROM schema_migrations").fetchall()}

    def _record_migration(self, applied_at: object, name: str) -> None:
        self.con.execute("INSERT INTO schema_migrations (version, applied_at, name) "
                         "SELECT coalesce(max(version), 0) + 1, ?, ? FROM schema_migrations",
                         [applied_at, name])

    def migrations(self) -> list[str]:
        """The names of the migrations this file has applied, in order."""
        rows = self.con.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
        return [str(r[0]) for r in rows]

    def schema_version(self) -> int:
        row = self.con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # runs -------------------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        *,
        corpus: str,
        model: str,
        base_url: str | None,
        concurrency: int,
        spec: Mapping[str, Any],
        corpus_params: Mapping[str, Any],
        server: Mapping[str, Any],
    ) -> bool:
        """Create the run, or mark an existing one as resumed. Returns True when resuming.

        Either way a session is appended to run_sessions (runs.server keeps the latest, for
        readers of older files); rows written from now on name it (`predictions.session`)."""
        exists = self.con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone()
        self._session(run_id, server, corpus_params)
        if exists:
            self.con.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, server = ? WHERE run_id = ?",
                [_redacted(server), run_id],
            )
            return True
        self.insert("runs", [{
            "run_id": run_id, "created_at": now(), "status": "running", "corpus": corpus,
            "model": model, "base_url": base_url, "concurrency": concurrency, "git_sha": git_sha(),
            "spec": _redacted(spec), "corpus_params": json.dumps(corpus_params, default=str),
            "server": _redacted(server),
        }])
        return False

    def _session(self, run_id: str, server: Mapping[str, Any], corpus_params: Mapping[str, Any]) -> None:
        row = self.con.execute("SELECT coalesce(max(session), -1) + 1 FROM run_sessions WHERE run_id = ?",
                               [run_id]).fetchone()
        self.session = int(row[0]) if row else 0
        self.insert("run_sessions", [{
            "run_id": run_id, "session": self.session, "started_at": now(), "git_sha": git_sha(),
            "server": _redacted(server),
            "corpus_params": json.dumps(corpus_params, default=str),
        }])

    def sessions(self, run_id: str) -> list[dict[str, Any]]:
        """The run's configuration history, oldest first."""
        cur = self.con.execute("SELECT session, started_at, git_sha, server, corpus_params FROM run_sessions "
                               "WHERE run_id = ? ORDER BY session", [run_id])
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def finish_run(self, run_id: str, status: str) -> None:
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, now(), run_id]
        )

    def runs(self) -> list[dict[str, Any]]:
        cur = self.con.execute(
            """
            SELECT r.run_id, r.created_at, r.status, r.corpus, r.model,
                   count(p.example_id) AS predictions,
                   count(p.error) AS errors
            FROM runs r LEFT JOIN predictions p USING (run_id)
            GROUP BY ALL ORDER BY r.created_at
            """
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def insert(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, verb: str = "INSERT", conflict: str = ""
    ) -> None:
        """Rows as {column: value}, inserted by column name (a migration that adds a column can
        never shift another's value), many per statement: DuckDB's executemany prepares and runs
        one statement per row (~2.4 ms each, 17 ms for a row's seven scores), a multi-row VALUES
        list runs once."""
        if not rows:
            return
        cols = list(rows[0])
        names = ", ".join(cols)
        marks = "(" + ", ".join("?" * len(cols)) + ")"
        for i in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[i : i + _ROWS_PER_INSERT]
            self.con.execute(  # a secret read this process (a key, a header) is never written
                f"{verb} INTO {table} ({names}) VALUES {', '.join([marks] * len(chunk))} {conflict}",
                [scrub(v) if isinstance(v, str) else v for row in chunk for v in (row[c] for c in cols)],
            )

    def examples(self, run_id: str) -> dict[str, Example]:
        """A run's questions as stored, by id."""
        rows = self.con.execute("SELECT example_id, doc_ids, question, answers, evidence, tags FROM examples "
                                "WHERE run_id = ?", [run_id]).fetchall()
        return {r[0]: example_from_row(*r) for r in rows}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One all-or-nothing write: a failure inside rolls everything in it back."""
        self.con.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # examples ---------------------------------------------------------------------------
    def add_examples(
        self, run_id: str, examples: Sequence[Example], doc_tokens: Mapping[str, int] | None = None
    ) -> None:
        """Record the questions a run asks (once; a resumed run keeps the first copy, and gains
        the primary metric if it was stored before examples had one)."""
        rows = [
            {
                "run_id": run_id, "example_id": ex.id, "doc_ids": json.dumps(list(ex.doc_ids)),
                "question": ex.question, **gold_columns(ex),
                "doc_tokens": sum(doc_tokens[d] for d in ex.doc_ids) if doc_tokens else None,
            }
            for ex in examples
        ]
        self.insert("examples", rows, conflict="ON CONFLICT DO UPDATE SET primary_metric = "
                         "coalesce(examples.primary_metric, excluded.primary_metric)")

    def refresh_examples(self, run_id: str, examples: Sequence[Example], note: Mapping[str, Any]) -> None:
        """Replace the gold side (answers, evidence, tags, headline metric) of examples whose
        question is unchanged, and move the run's content hash to the corpus it now matches,
        noting the change in `corpus_params.refreshed` (a resume then accepts that corpus)."""
        with self.transaction():
            for ex in examples:
                gold = gold_columns(ex)
                sets = ", ".join(f"{c} = ?" for c in gold)
                self.con.execute(f"UPDATE examples SET {sets} WHERE run_id = ? AND example_id = ?",
                                 [*gold.values(), run_id, ex.id])
            row = self.con.execute("SELECT corpus_params FROM runs WHERE run_id = ?", [run_id]).fetchone()
            params = json.loads(row[0] or "{}") if row else {}
            params["content_sha256"] = note["to_sha256"]
            params["refreshed"] = [*params.get("refreshed", []), dict(note)]
            self.con.execute("UPDATE runs SET corpus_params = ? WHERE run_id = ?",
                             [json.dumps(params, default=str), run_id])

    # predictions ------------------------------------------------------------------------
    def prediction_keys(self, run_id: str, *, errors: bool | None = None) -> set[PredictionKey]:
        """Keys already stored; errors=False only successes, True only failures."""
        cond = "" if errors is None else (" AND error IS NOT NULL" if errors else " AND error IS NULL")
        rows = self.con.execute(
            f"SELECT example_id, pipeline, params_hash FROM predictions WHERE run_id = ?{cond}",
            [run_id],
        ).fetchall()
        return {(r[0], r[1], r[2]) for r in rows}

    def add_prediction(
        self,
        run_id: str,
        example_id: str,
        pipeline: str,
        params_hash: str,
        params: Mapping[str, Any],
        pred: Prediction,
        *,
        seq: int,
        resumed: bool,
        started_at: datetime,
        scores: Mapping[str, float | None],
        attempts: int = 1,
        replica: str | None = None,
        role: Role | None = None,
        label: str | None = None,
    ) -> None:
        """Write a prediction and its scores in one transaction (replacing a failed attempt).
        `role` is the pipeline's declared role (the runner always gives it; rows without one are
        read with the legacy mapping of compare/store/views.py), `label` its own short name."""
        meta = RowMeta(run_id, params, role, seq, resumed, started_at, attempts, replica, self.session,
                       label)
        row = prediction_row((example_id, pipeline, params_hash), pred, meta)
        where = "run_id = ? AND example_id = ? AND pipeline = ? AND params_hash = ?"
        ids = [run_id, example_id, pipeline, params_hash]
        with self.transaction():
            self.con.execute(f"DELETE FROM scores WHERE {where}", ids)
            self.con.execute(f"DELETE FROM predictions WHERE {where}", ids)
            self.insert("predictions", [row])
            self._write_scores(ids, scores)

    def _write_scores(self, key: list[str], scores: Mapping[str, float | None]) -> None:
        run_id, example_id, pipeline, params_hash = key
        self.insert("scores", [
            {"run_id": run_id, "example_id": example_id, "pipeline": pipeline, "params_hash": params_hash,
             "metric": name, "value": value}
            for name, value in scores.items()
        ], verb="INSERT OR REPLACE")

    def replace_scores(
        self, key: Sequence[str], scores: Mapping[str, float | None], only: Sequence[str]
    ) -> None:
        """Rescoring from stored predictions (no model call) replaces the named metrics' rows."""
        with self.transaction():
            marks = ", ".join("?" * len(only))
            self.con.execute(
                "DELETE FROM scores WHERE run_id = ? AND example_id = ? AND pipeline = ? "
                f"AND params_hash = ? AND metric IN ({marks})",
                [*key, *only],
            )
            self._write_scores(list(key), scores)

    def next_seq(self, run_id: str) -> int:
        row = self.con.execute(
            "SELECT coalesce(max(seq), -1) + 1 FROM predictions WHERE run_id = ?", [run_id]
        ).fetchone()
        return int(row[0]) if row else 0

    # server and index stats -------------------------------------------------------------
    def add_server_stats(self, run_id: str, stats: Mapping[str, float]) -> None:
        """Store /metrics deltas of one session of a run (a resumed run adds a session)."""
        row = self.con.execute(
            "SELECT coalesce(max(session), -1) + 1 FROM server_stats WHERE run_id = ?", [run_id]
        ).fetchone()
        session = int(row[0]) if row else 0
        if self.session is not None:  # the same number as run_sessions, when the run started here
            session = max(session, self.session)
        self.insert("server_stats", [{"run_id": run_id, "session": session, "name": k, "value": float(v)}
                                     for k, v in stats.items()])

    def record_command(self, command: str, run_ids: Sequence[str]) -> None:
        """What the last `run` / `demo` produced (replacing the one before), for `report`'s default."""
        with self.transaction():
            self.con.execute("DELETE FROM last_command")
            self.insert("last_command", [
                {"command": command, "run_id": r, "position": i, "recorded_at": now()}
                for i, r in enumerate(dict.fromkeys(run_ids))
            ])

    def add_price_sheet(self, run_id: str, name: str, sheet_json: str) -> None:
        """Keep the exact prices a run was costed with, so the numbers can be re-derived."""
        row = {"run_id": run_id, "name": name, "sheet": sheet_json, "used_at": now()}
        self.insert("price_sheets", [row], verb="INSERT OR REPLACE")

    def add_index_stats(
        self, run_id: str, pipeline: str, params_hash: str, stats: Mapping[str, Mapping[str, Any]]
    ) -> None:
        rows = [
            {"run_id": run_id, "pipeline": pipeline, "params_hash": params_hash, "doc_id": doc_id,
             "build_s": float(s["build_s"]), "n_chunks": int(s["n_chunks"]), "bytes": int(s["bytes"]),
             "cache_hit": bool(s["cache_hit"]),
             # what embedding took (NULL where the pipeline did not say, e.g. a llama-index build)
             "embed_tokens": None if s.get("embed_tokens") is None else int(s["embed_tokens"]),
             "embed_model": s.get("embed_model"),
             "embed_s": None if s.get("embed_s") is None else float(s["embed_s"])}
            for doc_id, s in stats.items()
        ]
        self.insert("index_stats", rows, verb="INSERT OR REPLACE")

"""Named migrations and inserts by column name (issue 16 item 5), and the views' role rule.

The "old" file is built the way the store built it before names: a schema_migrations table of
bare version numbers and the first nine migrations' SQL. Opening it must record the names,
add the role column, and leave the old rows readable with their roles.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from compare.core.types import Completion, Prediction
from compare.store import views
from compare.store.db import RowMeta, Store, prediction_row
from compare.store.migrations import MIGRATIONS

NOW = datetime(2026, 12, 1, 12, 0)


def _old_file(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    for version, (_, sql) in enumerate(MIGRATIONS[:9], start=1):
        assert isinstance(sql, str)  # the first nine are SQL
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [version, NOW])
    for pipeline, kind in (("lc", "long_context"), ("sr", "self_route"), ("r", "rag")):
        con.execute(
            "INSERT INTO predictions (run_id, example_id, pipeline, params_hash, params, answer, "
            "context_tokens, truncated_tokens, retrieval_ms, retrieved, seq, resumed, started_at, "
            "finished_at) VALUES ('run', 'e', ?, 'h', ?, 'x', 10, 0, 0, '[]', 0, false, ?, ?)",
            [pipeline, f'{{"kind": "{kind}"}}', NOW, NOW])
    con.close()


def test_an_old_file_gains_the_names_and_the_role_column(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    _old_file(db)
    with Store(db) as s:
        assert s.migrations() == [name for name, _ in MIGRATIONS]
        assert s.schema_version() == len(MIGRATIONS)
        views.install(s.con)
        got = s.con.execute("SELECT pipeline, role, kind FROM request_rows ORDER BY 1").fetchall()
        stored = s.con.execute("SELECT count(role) FROM predictions").fetchone()
    assert got == [("lc", "long_context", "long_context"), ("r", "retrieval", "rag"),
                   ("sr", "router", "self_route")]
    assert stored == (0,)  # old rows are not rewritten: the view reads their role
    with Store(db) as s:  # opening again applies nothing twice
        assert s.migrations() == [name for name, _ in MIGRATIONS]


def test_a_new_row_stores_its_declared_role_by_column_name(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    c = Completion("x", 12, 0, 1, 0.1, 0.2, ())
    with Store(db) as s:
        s.add_prediction("run", "e", "custom", "h", {"kind": "python"}, Prediction("x", c, 10),
                         seq=0, resumed=False, started_at=NOW, scores={}, role="retrieval")
        views.install(s.con)
        assert s.con.execute("SELECT role, kind FROM request_rows").fetchone() == ("retrieval", "python")
        columns = {r[0] for r in s.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'predictions'").fetchall()}
    row = prediction_row(("e", "p", "h"), Prediction("x", c, 10), RowMeta("run", {}, None, 0, False, NOW))
    assert set(row) == columns  # every column written by name, none left to its position


def test_warm_is_defined_once_for_sql_and_pandas(tmp_path: Path) -> None:
    db = tmp_path / "warm.duckdb"
    with Store(db) as s:
        for i, cached in enumerate((0, 89, 90, 100)):
            c = Completion("x", 100, cached, 1, 0.1, 0.2, ())
            s.add_prediction("run", f"e{i}", "lc", "h", {"kind": "long_context"}, Prediction("x", c, 100),
                             seq=i, resumed=False, started_at=NOW, scores={}, role="long_context")
        views.install(s.con)
        sql = [bool(r[0]) for r in s.con.execute("SELECT warm FROM request_rows ORDER BY seq").fetchall()]
    assert sql == [False, False, True, True] == [bool(views.is_warm(c, 100)) for c in (0, 89, 90, 100)]


OLD_SECRET = "sk-oldrun-literal-8d2f61c0"  # a header value an older ragvslc stored verbatim
OLD_FLAG = "vllm-flag-secret-51e7a9"


def _file_with_a_stored_secret(path: Path) -> None:
    """A results file as ragvslc wrote it before issue 32: every migration up to the redaction,
    a run whose spec holds a literal header value and whose server record a secret flag."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP, "
                "name VARCHAR)")
    for version, (name, sql) in enumerate(MIGRATIONS, start=1):
        if name == "runs_redacted":
            break
        con.execute(sql) if isinstance(sql, str) else sql(con)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, NOW, name])
    spec = {"server": {"headers": {"X-Org-Token": OLD_SECRET, "X-Team": "${TEAM}"},
                       "extra_args": ["--api-key", OLD_FLAG]}, "metrics": ["contains"]}
    server = {"args": ["--port", "8000", f"--api-key={OLD_FLAG}"], "vllm": "0.1 cpu"}
    con.execute("INSERT INTO runs (run_id, created_at, status, corpus, model, concurrency, spec, "
                "corpus_params, server) VALUES ('old', ?, 'done', 'c', 'm', 1, ?, '{}', ?)",
                [NOW, json.dumps(spec), json.dumps(server)])
    con.execute("INSERT INTO run_sessions VALUES ('old', 0, ?, NULL, ?, '{}')", [NOW, json.dumps(server)])
    con.close()


def test_an_old_run_s_stored_secrets_are_taken_out_and_the_report_says_so(tmp_path: Path) -> None:
    from compare.report.html import run_caveats
    from compare.run.rescore import rescore

    db = tmp_path / "old-secret.duckdb"
    _file_with_a_stored_secret(db)
    with Store(db) as s:  # opening it for writing (as `ragvslc score` does) applies the migration
        assert "redact_stored_secrets" in s.migrations()
        rescore(s, None, ["contains"])  # and score itself takes out what it finds: nothing is left
        cur = s.con.execute("SELECT * FROM runs")
        run = dict(zip([c[0] for c in cur.description], cur.fetchone() or (), strict=True))
        session = s.con.execute("SELECT server FROM run_sessions").fetchone()
    spec, server = json.loads(run["spec"]), json.loads(run["server"])
    assert spec["server"]["headers"] == {"X-Org-Token": "literal, redacted", "X-Team": "env:TEAM"}
    assert spec["server"]["extra_args"] == ["--api-key", "[redacted]"]
    assert server["args"][-1] == "--api-key=[redacted]" and session and OLD_FLAG not in session[0]
    notes = json.loads(run["redacted"])
    assert len(notes) == 1  # once: the rescore found nothing more
    assert notes[0]["fields"] == ["spec.server.headers.X-Org-Token", "spec.server.extra_args[1]",
                                  "server.args[2]", "run_sessions[0].server.args[2]"]
    said = " ".join(run_caveats(run))
    assert "Secrets taken out of this run's stored record (spec.server.headers.X-Org-Token" in said


def test_a_fresh_file_records_every_migration_and_runs_no_data_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file has no rows for a data migration to rewrite: it is recorded as applied without
    running (a rewrite that fails, or costs, is never paid on a fresh file), and the file still
    lists every migration by name, so a later version's open applies only what is new."""
    from compare.store import db as db_module

    def boom(con: object) -> None:
        raise AssertionError("a data migration ran on a fresh file")

    names = [name for name, _ in db_module.MIGRATIONS]
    monkeypatch.setattr(db_module, "MIGRATIONS", (*db_module.MIGRATIONS, ("data_rewrite_test", boom)))
    with Store(tmp_path / "fresh.duckdb") as store:
        assert store.migrations() == [*names, "data_rewrite_test"]
    # On a file that exists, a data migration it has not applied does run.
    monkeypatch.setattr(db_module, "MIGRATIONS", (*db_module.MIGRATIONS, ("data_rewrite_2", boom)))
    with pytest.raises(AssertionError, match="data migration ran"):
        Store(tmp_path / "fresh.duckdb")

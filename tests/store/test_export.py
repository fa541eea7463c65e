"""`ragvslc export`: every table to Parquet / CSV, read back by DuckDB with the same rows.

The source is the dashboard fixture in a real DuckDB file; its row counts follow from how it
is filled (tests/fixtures/dashboard.py): run-a asks 10 questions (2 documents x 5) of 4
pipelines, scored with 1 metric by long context and 2 by each RAG; run-b asks 2 questions of
long context, 1 metric; 3 RAG pipelines x 2 documents of index stats; no server stats.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
from typer.testing import CliRunner

from compare.store.export import export_tables
from main import app
from tests.fixtures.dashboard import LC_LABEL, RAG_LABELS, fill
from tests.fixtures.store import store_fixtures

runner = CliRunner()
BY_HAND = {"runs": 2, "examples": 12, "predictions": 40 + 2, "scores": 10 + 3 * 10 * 2 + 2,
           "index_stats": 6, "server_stats": 0}


db, _ = store_fixtures(fill, "export")  # the read-only `con` is not used here


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1").fetchall()]


def test_parquet_export_reads_back_with_the_same_rows_and_values(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "it's here"  # a quote in the path: COPY takes it as a SQL literal
    res = runner.invoke(app, ["export", "--db", str(db), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    listed = {t["table"]: t for t in json.loads(res.stdout)["tables"]}
    with duckdb.connect(str(db), read_only=True) as con:
        tables = _tables(con)
        assert set(listed) == {*tables, "requests"} and set(BY_HAND) <= set(tables)
        for table in tables:
            path = out / f"{table}.parquet"
            assert listed[table]["path"] == str(path)
            n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            back = con.execute(  # type: ignore[index]
                "SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()[0]
            assert back == n == listed[table]["rows"] == BY_HAND.get(table, n), table
            cols = [c[0] for c in con.execute(f"DESCRIBE {table}").fetchall()]
            described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
            back_cols = [c[0] for c in described]
            assert back_cols == cols, table
        # Same values, not only as many: nothing differs in either direction.
        for table in ("predictions", "scores", "runs"):
            for a, b in ((f"{table}", "read_parquet($p)"), ("read_parquet($p)", f"{table}")):
                diff = con.execute(
                    f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})",
                    {"p": str(out / f"{table}.parquet")},
                ).fetchone()[0]  # type: ignore[index]
                assert diff == 0, table
        ttft = con.execute("SELECT sum(ttft_ms) FROM predictions").fetchone()[0]  # type: ignore[index]
        back_ttft = con.execute("SELECT sum(ttft_ms) FROM read_parquet(?)",
                                [str(out / "predictions.parquet")]).fetchone()[0]  # type: ignore[index]
        assert back_ttft == ttft


def test_csv_export_reads_back_with_the_same_rows(db: Path, tmp_path: Path) -> None:
    done = export_tables(db, tmp_path / "csv", "csv")
    with duckdb.connect(str(db), read_only=True) as con:
        for e in done:
            n = con.execute(f"SELECT count(*) FROM {e.table}").fetchone()[0]  # type: ignore[index]
            back = con.execute(  # type: ignore[index]
                "SELECT count(*) FROM read_csv(?, header = true)", [str(e.path)]).fetchone()[0]
            assert e.path.suffix == ".csv" and back == n == e.rows, e.table
        # JSON columns (here the run spec) survive as JSON text, quotes and commas included.
        spec = con.execute("SELECT spec FROM read_csv(?, header = true) WHERE run_id = 'run-a'",
                           [str(tmp_path / "csv" / "runs.csv")]).fetchone()[0]  # type: ignore[index]
        assert json.loads(spec)["metrics"] == ["contains"]


def test_export_refuses_bad_input_with_exit_2(db: Path, tmp_path: Path) -> None:
    bad = runner.invoke(app, ["export", "--db", str(db), "--out", str(tmp_path / "x"), "--format", "xml"])
    assert bad.exit_code == 2 and "parquet" in bad.output and not (tmp_path / "x").exists()
    none = tmp_path / "none.duckdb"
    missing = runner.invoke(app, ["export", "--db", str(none), "--out", str(tmp_path / "y")])
    assert missing.exit_code == 2 and "no database" in missing.output


def test_export_carries_labels_dollars_zoned_times_and_a_data_dictionary(db: Path, tmp_path: Path) -> None:
    """Issue 29 item 12: `requests` has each row's pipeline label and its $ in both views, every
    stored time is marked UTC, and data_dictionary.csv says each column's unit and meaning."""
    out = tmp_path / "out"
    res = runner.invoke(app, ["export", "--db", str(db), "--out", str(out)])
    assert res.exit_code == 0, res.output
    req = pd.read_parquet(out / "requests.parquet")
    assert len(req) == BY_HAND["predictions"]
    assert set(req["label"]) == {LC_LABEL, *RAG_LABELS.values()} and "run_name" in req.columns
    assert {"usd_api", "usd_self_hosted", "cached_tokens", "score_contains"} <= set(req.columns)
    assert str(req["started_at"].dt.tz) == "UTC"
    assert str(pd.read_parquet(out / "runs.parquet")["created_at"].dt.tz) == "UTC"
    words = pd.read_csv(out / "data_dictionary.csv").set_index("column")
    assert list(words.columns) == ["file", "unit", "meaning"]
    assert words.loc["usd_api", "unit"] == "USD" and words.loc["ttft_ms", "unit"] == "ms"
    assert {c for c in req.columns if not c.startswith("score_")} <= set(words.index)

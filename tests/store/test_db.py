"""The DuckDB store: migrations, resume keys, replacement of failed rows, a busy file."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from compare.core.types import Completion, Example, Prediction, Span
from compare.store.db import MIGRATIONS, Store, StoreBusyError

EX = Example("e1", ("d1",), "q?", ("42",), (Span("d1", 10, 20),), {"depth": 0.5})
OK = Prediction("42", Completion("42", 100, 64, 2, 0.5, 0.7, (0.2,)), 90, (Span("d1", 0, 30),))
BAD = Prediction("", None, 0, error="boom")


def _meta() -> dict[str, object]:
    return dict(corpus="c", model="m", base_url=None, concurrency=1, spec={"a": 1},
                corpus_params={}, server={})


def _add(store: Store, pred: Prediction, seq: int = 0) -> None:
    store.add_prediction("r", "e1", "p", "h", {"k": 1}, pred, seq=seq, resumed=False,
                         started_at=datetime(2026, 1, 1), scores={"contains": 1.0 if pred.ok else None})


def test_migrations_apply_once_and_reopen(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    with Store(db) as s:
        assert s.schema_version() == len(MIGRATIONS)
    with Store(db) as s:  # reopening must not re-run migrations
        assert s.schema_version() == len(MIGRATIONS)
        n = s.con.execute("SELECT count(*) FROM schema_migrations").fetchone()
        assert n == (len(MIGRATIONS),)


def test_prediction_roundtrip_and_resume_keys(tmp_path: Path) -> None:
    with Store(tmp_path / "x.duckdb") as s:
        assert s.start_run("r", **_meta()) is False  # type: ignore[arg-type]
        assert s.start_run("r", **_meta()) is True  # type: ignore[arg-type]
        s.add_examples("r", [EX], {"d1": 1234})
        s.add_examples("r", [EX], {"d1": 1234})
        _add(s, BAD)
        assert s.prediction_keys("r") == {("e1", "p", "h")}
        assert s.prediction_keys("r", errors=False) == set()
        _add(s, OK, seq=1)  # a retry replaces the failed row, never duplicates it
        assert s.prediction_keys("r", errors=True) == set()
        row = s.con.execute(
            "SELECT count(*), any_value(ttft_ms), any_value(total_ms), any_value(itl_ms), "
            "any_value(cached_tokens) FROM predictions"
        ).fetchone()
        assert row is not None
        assert row[0] == 1 and row[1] == pytest.approx(500) and row[2] == pytest.approx(700)
        assert row[3] == pytest.approx([200.0]) and row[4] == 64
        assert s.con.execute("SELECT metric, value FROM scores").fetchall() == [("contains", 1.0)]
        assert s.con.execute("SELECT doc_tokens FROM examples").fetchall() == [(1234,)]
        s.add_server_stats("r", {"vllm:prompt_tokens": 10})
        s.add_server_stats("r", {"vllm:prompt_tokens": 5})
        assert s.con.execute("SELECT count(DISTINCT session) FROM server_stats").fetchone() == (2,)


def test_busy_database_fails_fast_with_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "busy.duckdb"
    Store(db).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb,sys,time; c=duckdb.connect({str(db)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusyError, match="in use"):
            Store(db)
    finally:
        holder.kill()
        holder.wait()
    with Store(db) as s:  # the file is intact once the other writer is gone
        assert s.schema_version() == len(MIGRATIONS)
    duckdb.connect(str(db)).close()


def test_row_writer_keeps_order_reports_after_storing_and_never_swallows_a_failure() -> None:
    import threading

    from compare.run.row_writer import RowWriter

    w = RowWriter()
    stored: list[int] = []
    seen: list[tuple[int, int]] = []  # (row, rows on disk when its callback ran)
    threads: set[int] = set()

    def write(i: int) -> None:
        threads.add(threading.get_ident())
        stored.append(i)

    for i in range(20):
        w.submit(lambda i=i: seen.append((i, w.written)), write, i)
    w.close()
    assert stored == list(range(20)) and seen == [(i, i + 1) for i in range(20)]
    assert len(threads) == 1 and threading.get_ident() not in threads  # one worker, not the loop

    w = RowWriter()

    def boom(i: int) -> None:
        if i == 3:
            raise OSError("disk full")
        stored.append(i)

    stored.clear()
    for i in range(6):
        try:
            w.submit(None, boom, i)
        except RuntimeError:  # a later submit may already see the failure
            break
    with pytest.raises(RuntimeError, match="disk full"):
        w.close()
    assert stored == [0, 1, 2]  # nothing after the failed row

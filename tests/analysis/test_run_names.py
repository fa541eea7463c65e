"""Runs are named by corpus and time, never by id, even when two start in the same second
(a CI run of the report's browser test created both its runs at 13:26:15 and printed their ids)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from compare.analysis.summary import run_names
from compare.store.db import Store


def test_two_runs_of_one_corpus_in_the_same_second_are_told_apart_without_ids(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with Store(db) as s:
        for run in ("run-zz", "run-aa", "run-mm"):
            s.start_run(run, corpus="needle", model="m", base_url=None, concurrency=1, spec={},
                        corpus_params={}, server={})
        same = datetime(2026, 12, 7, 13, 26, 15)
        s.con.execute("UPDATE runs SET created_at = ? WHERE run_id IN ('run-zz', 'run-aa')", [same])
        s.con.execute("UPDATE runs SET created_at = ? WHERE run_id = 'run-mm'", [datetime(2026, 12, 7, 14)])
    with duckdb.connect(str(db), read_only=True) as con:
        names = run_names(con, None)
    # Same second: ordered by (created_at, run_id), so run-aa is #1 and run-zz #2; run-mm is unique.
    assert names == {"run-aa": "needle, Dec 07 13:26:15 #1", "run-zz": "needle, Dec 07 13:26:15 #2",
                     "run-mm": "needle, Dec 07 14:00"}

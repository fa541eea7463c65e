"""Load runs told apart (issue 28): `runs` marks them, and the idle views that default to "every
run" (the report's latest run, per-pipeline summaries, samples, cost) leave their rows out.

One idle run and, after it, one load run of the same spec into one database, both against the
scripted vLLM-shaped server of tests/run/test_load.py (a fake below the client).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from compare import api
from compare.analysis import samples, summary
from compare.run.load import load, with_traffic
from compare.store import views
from tests.fixtures.sse_server import serve
from tests.run.test_load import Scripted, _spec


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    tmp = tmp_path_factory.mktemp("views")
    db = tmp / "v.duckdb"
    box = Scripted()
    with serve(box.handler()) as url:
        spec = _spec(tmp, url, {})
        idle = api.run(spec, db, base_url=url, say=lambda _: None).run_id
        traffic = with_traffic(spec, rates=[20.0], requests=4)
        loaded = load(traffic, db, say=lambda _: None, base_url=url).run_id
    return db, idle, loaded


def test_runs_marks_the_load_run(both: tuple[Path, str, str]) -> None:
    from main import app

    db, idle, loaded = both
    got = CliRunner().invoke(app, ["runs", "--db", str(db), "--json"])
    assert got.exit_code == 0, got.output
    by = {r["run_id"]: r for r in json.loads(got.stdout)["runs"]}
    assert by[idle]["load"] is None and by[loaded]["load"] == {"steps": 1, "done": 1}
    text = CliRunner().invoke(app, ["runs", "--db", str(db), "--wide"], env={"COLUMNS": "250"})
    lines = text.output.splitlines()
    assert "load: 1 steps" in next(ln for ln in lines if loaded in ln)
    assert "load:" not in next(ln for ln in lines if idle in ln)


def test_idle_views_leave_the_load_run_out_unless_named(both: tuple[Path, str, str]) -> None:
    db, idle, loaded = both
    with duckdb.connect(str(db), read_only=True) as con:
        views.install(con)
        assert summary.latest_run_id(con) == idle  # the load run is newer, but not an idle comparison
        assert {r["run_id"] for r in summary.pipeline_summary(con, None)} == {idle}
        assert set(samples.samples(con)["run_id"]) == {idle}
        assert set(samples.samples(con, [loaded])["run_id"]) == {loaded}  # named: its rows
        assert views.idle_runs(con) == [idle]


def test_a_load_run_s_report_says_its_requests_came_under_traffic(both: tuple[Path, str, str]) -> None:
    """Seen on a real sweep: the load run's report said "Concurrency 1" over rows sent at three rates."""
    from compare.report.html import run_caveats

    db, idle, loaded = both
    with duckdb.connect(str(db), read_only=True) as con:
        cur = con.execute("SELECT * FROM runs")
        names = [c[0] for c in cur.description]
        runs = {r["run_id"]: r for r in (dict(zip(names, row, strict=True)) for row in cur.fetchall())}
    said_load, said_idle = " ".join(run_caveats(runs[loaded])), " ".join(run_caveats(runs[idle]))
    assert "Load run: its requests were sent as open-loop traffic" in said_load
    assert "Concurrency 1: compare latency" not in said_load
    assert "Load run" not in said_idle and "Concurrency 1: compare latency" in said_idle

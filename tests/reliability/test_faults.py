"""Server faults through a misbehaving loopback proxy in front of the real vLLM server."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import duckdb
import pytest

from compare.run.execute import execute_async
from compare.run.runner import RunStopped
from compare.run.spec import validate_spec
from compare.store.db import Store
from tests.fixtures.book import book_corpus_dir
from tests.fixtures.proxy import FaultProxy

# FaultProxy kept: no real gateway can be told to stall forever or die mid-run
pytestmark = pytest.mark.slow


def _spec(**over: object) -> object:
    base: dict[str, object] = {
        "corpus": {"kind": "needle", "lengths": [200], "depths": [0.3, 0.7], "seed": 11},
        "pipelines": [{"kind": "long_context", "max_tokens": 8}],
        "timeout_s": 4.0,
        "retries": 1,
        "retry_backoff_s": 0.1,
    }
    base.update(over)
    return validate_spec(base)


def _rows(db: Path) -> list[tuple[object, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT example_id, error IS NULL, attempts, finished_at FROM predictions ORDER BY example_id"
        ).fetchall()


async def test_stall_then_retry_errors_redoes_only_failed_rows(server_url: str, tmp_path: Path) -> None:
    db = tmp_path / "stall.duckdb"
    port = urlparse(server_url).port or 80
    spec = _spec()
    with FaultProxy(port, mode="stall") as proxy:
        with Store(db) as store:
            res = await execute_async(spec, store, proxy.url, {"managed": False})  # type: ignore[arg-type]
        assert res.errors == 2 and res.done == 2  # the run went on past the first failure
        assert proxy.disturbed >= 4  # each request was tried twice (retries = 1)
        rows = _rows(db)
        assert [(r[1], r[2]) for r in rows] == [(False, 2), (False, 2)]
        with duckdb.connect(str(db), read_only=True) as con:
            err = con.execute("SELECT any_value(error) FROM predictions").fetchone()
        assert err is not None and "Timeout" in str(err[0])

        proxy.mode = "pass"
        with Store(db) as store:  # a plain rerun keeps the failed rows: nothing is redone
            again = await execute_async(spec, store, proxy.url, {"managed": False})  # type: ignore[arg-type]
        assert again.done == 0 and again.skipped == 2
        with Store(db) as store:
            fixed = await execute_async(  # type: ignore[arg-type]
                spec, store, proxy.url, {"managed": False}, retry_errors=True
            )
        assert fixed.done == 2 and fixed.errors == 0
    assert all(r[1] for r in _rows(db))
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM predictions").fetchone() == (2,)


async def test_cut_stream_is_an_error_row_and_stop_policy_stops(server_url: str, tmp_path: Path) -> None:
    db = tmp_path / "cut.duckdb"
    port = urlparse(server_url).port or 80
    with FaultProxy(port, mode="cut", cut_after=300) as proxy, Store(db) as store:
        with pytest.raises(RunStopped, match="on_error=stop"):
            await execute_async(
                _spec(on_error="stop", retries=0), store, proxy.url, {"managed": False},  # type: ignore[arg-type]
            )
        assert proxy.disturbed >= 1
        rows = store.con.execute("SELECT error FROM predictions").fetchall()
        status = store.con.execute("SELECT status FROM runs").fetchone()
    assert len(rows) == 1 and rows[0][0]  # stopped after the first failed row, which is stored
    assert status == ("stopped",)


async def test_dead_external_server_stops_the_run_as_server_down(tmp_path: Path) -> None:
    from compare.run.runner import ServerDown
    from compare.serving.server import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Store(tmp_path / "dead.duckdb") as store, pytest.raises(Exception) as info:
        await execute_async(_spec(retries=0), store, url, {"managed": False})  # type: ignore[arg-type]
    # Either the corpus build (tokenize) or the first request finds the server gone: clear error.
    assert isinstance(info.value, ServerDown) or "tokenize" in str(info.value)


def test_a_dead_replica_fails_over_to_the_others(server_url: str, tmp_path: Path) -> None:
    """Two replicas (the real server, and the same server behind a proxy that then dies): the
    dead replica's in-flight and remaining documents go to the live one; nothing is lost."""
    import json

    from compare.run.execute import execute

    spec = validate_spec({
        "corpus": {"kind": "jsonl", "path": str(book_corpus_dir(tmp_path))},
        "pipelines": [{"kind": "long_context", "max_tokens": 4}],
        "concurrency": 1, "retries": 0, "timeout_s": 30.0,
        "server": {"router": "client"},  # ragvslc's own affinity and failover (no router)
    })
    db = tmp_path / "failover.duckdb"
    said: list[str] = []
    with FaultProxy(int(urlparse(server_url).port or 0)) as proxy:

        def progress(_msg: str, done: int, _total: int) -> None:
            if done == 6:
                proxy.kill()

        res = execute(spec, db, say=said.append, base_url=[server_url, proxy.url], progress=progress)
        dead = proxy.url
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT resumed, replica, error FROM predictions").fetchall()
        server, status = con.execute("SELECT server, status FROM runs").fetchone() or ("{}", "")
    live = server_url.rstrip("/")
    assert len(rows) == 12 and all(err is None for _, _, err in rows) and status == "done"
    assert res.errors == 0
    before = [rep for resumed, rep, _ in rows if not resumed]
    after = [rep for resumed, rep, _ in rows if resumed]
    assert dead in before and live in before  # both replicas served until one died
    assert after and set(after) == {live}  # what was left (and what failed) went to the live one
    info = json.loads(server)
    assert info["failed_over"] == [dead] and info["base_url"] == [live]
    assert any("down" in s and dead in s for s in said)

"""A managed vLLM killed mid-run: failed rows are stored, the server restarts once, rows redone.

This starts its own managed server (not the session one), so it costs two start-ups (~3 min).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from compare.run.execute import execute
from compare.run.spec import validate_spec

pytestmark = pytest.mark.slow


def _vllm_children(ignore: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """vLLM servers started by this process, except `ignore` (the session's shared server)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.pid not in ignore and "vllm.entrypoints.openai.api_server" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


def test_managed_server_killed_mid_run_is_restarted_once(tmp_path: Path) -> None:
    spec = validate_spec({
        "corpus": {"kind": "needle", "lengths": [200, 300], "depths": [0.2, 0.5, 0.8], "seed": 5},
        "pipelines": [{"kind": "long_context", "max_tokens": 8}],
        "server": {"max_model_len": 2048, "kv_cache_gib": 1},
        "retries": 0,
    })
    db = tmp_path / "death.duckdb"
    lines: list[str] = []
    killed: list[int] = []
    session = frozenset(p.pid for p in _vllm_children())  # the fixture's server must live on

    def progress(label: str, done: int, total: int) -> None:
        lines.append(f"[{done}/{total}] {label}")
        if done == 2 and not killed:  # kill the server's whole process group mid-run
            for proc in _vllm_children(session):
                killed.append(proc.pid)
                threading.Thread(target=os.killpg, args=(os.getpgid(proc.pid), signal.SIGKILL)).start()

    t0 = time.monotonic()
    result = execute(spec, db, say=lines.append, progress=progress)
    assert killed, "the managed server was never found to kill"
    assert any("restarting 1 managed vLLM(s) once" in line for line in lines)
    assert result.errors == 0  # after the restart, the failed rows were redone
    with duckdb.connect(str(db), read_only=True) as con:
        n, ok = con.execute("SELECT count(*), count(*) FILTER (error IS NULL) FROM predictions").fetchone()
        server, status = con.execute("SELECT server, status FROM runs").fetchone()
    assert (n, ok) == (6, 6)
    assert json.loads(server)["restarts"] == 1 and status == "done"
    assert not _vllm_children(session)  # and the restarted server was stopped at the end
    print(f"server death test took {time.monotonic() - t0:.0f}s")

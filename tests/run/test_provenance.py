"""Provenance (issue 14 item 12): a resume appends its configuration to the run's history and
each row names the session that produced it; a corpus whose content changed under the same
run id is refused instead of mixing answers to different questions."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from compare.core.types import Corpus, Document, Example
from compare.run.execute import execute_async
from compare.run.spec import RunSpec, validate_spec
from compare.store.db import Store

pytestmark = pytest.mark.slow


def corpus_from_file(path: str) -> Corpus:
    """A plug-in corpus named by a path only: the file's words are not in the spec."""
    text = Path(path).read_text()
    return Corpus("from_file", {"d": Document("d", text)},
                  [Example("q0", ("d",), "What is the password?", (text.split()[-1],)),
                   Example("q1", ("d",), "Say the password again.", (text.split()[-1],))])


def _spec(path: Path, n: int) -> dict[str, object]:
    return {"corpus": {"kind": "python", "factory": "tests.run.test_provenance:corpus_from_file",
                       "options": {"path": str(path)}},
            "pipelines": [{"kind": "long_context", "max_tokens": 4}], "metrics": ["request_ok"],
            "retries": 0}


def _doc_and_spec(tmp_path: Path) -> tuple[Path, RunSpec]:
    src = tmp_path / "doc.txt"
    src.write_text("The gate opens for those who know the password tulip")
    return src, validate_spec(_spec(src, 2))


async def test_a_resume_appends_its_configuration_and_rows_name_it(server_url: str, tmp_path: Path) -> None:
    _, spec = _doc_and_spec(tmp_path)
    db = tmp_path / "p.duckdb"
    with Store(db) as store:
        first = await execute_async(spec, store, server_url, {"managed": False, "where": "first"})
        store.con.execute("DELETE FROM predictions WHERE example_id = 'q1'")  # as if interrupted
        second = await execute_async(spec, store, server_url, {"managed": False, "where": "second"})
        sessions = store.sessions(first.run_id)
    assert second.run_id == first.run_id and second.resumed and second.done == 1
    assert [json.loads(s["server"])["where"] for s in sessions] == ["first", "second"]
    assert all(json.loads(s["corpus_params"])["content_sha256"] for s in sessions)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = dict(con.execute("SELECT example_id, session FROM predictions").fetchall())
        latest = json.loads(con.execute("SELECT server FROM runs").fetchone()[0])
    assert rows == {"q0": 0, "q1": 1} and latest["where"] == "second"


async def test_a_changed_corpus_under_the_same_run_id_is_refused(server_url: str, tmp_path: Path) -> None:
    src, spec = _doc_and_spec(tmp_path)
    db = tmp_path / "c.duckdb"
    with Store(db) as store:
        await execute_async(spec, store, server_url, {"managed": False})
        src.write_text("The gate opens for those who know the password orchid")
        with pytest.raises(ValueError, match="corpus content changed since the run started"):
            await execute_async(spec, store, server_url, {"managed": False})
        assert store.con.execute("SELECT count(*) FROM predictions").fetchone() == (2,)  # nothing mixed

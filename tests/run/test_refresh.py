"""`ragvslc score` refreshes stale examples (issue 14 item 12): a gold answer corrected in the
corpus file after a run is scored against without asking the model again; a question whose
text changed is left as stored, named, because its reply answers another prompt."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from compare.core.metrics import normalize
from compare.run.execute import execute_async
from compare.run.spec import validate_spec
from compare.store.db import Store
from main import app

pytestmark = pytest.mark.slow

TEXT = "The lighthouse of Wendmere keeps a brass plate. The keeper's secret code is 7361."


def _write(folder: Path, gold: str, question: str = "What is the keeper's secret code?") -> None:
    folder.mkdir(exist_ok=True)
    (folder / "documents.jsonl").write_text(json.dumps({"id": "w", "text": TEXT}) + "\n")
    (folder / "questions.jsonl").write_text(
        json.dumps({"id": "q1", "doc_ids": ["w"], "question": question, "answers": [gold]}) + "\n"
        + json.dumps({"id": "q2", "doc_ids": ["w"], "question": "Where is the lighthouse?",
                      "answers": ["Wendmere"]}) + "\n")


def _run(folder: Path, db: Path, server_url: str) -> str:
    spec = validate_spec({"corpus": {"kind": "jsonl", "path": str(folder)},
                          "pipelines": [{"kind": "long_context", "max_tokens": 16}],
                          "metrics": ["contains", "headline"], "retries": 0})
    with Store(db) as store:
        return asyncio.run(execute_async(spec, store, server_url, {"managed": False})).run_id


def _score(db: Path) -> str:
    res = CliRunner().invoke(app, ["score", "--db", str(db)])
    assert res.exit_code == 0, res.output
    return res.output


def _state(db: Path, run_id: str) -> tuple[list[str], float, str, dict[str, object]]:
    with duckdb.connect(str(db), read_only=True) as con:
        [(answers, score, reply, params)] = con.execute(
            "SELECT e.answers, s.value, p.answer, r.corpus_params FROM examples e "
            "JOIN predictions p USING (run_id, example_id) JOIN runs r USING (run_id) "
            "JOIN scores s USING (run_id, example_id) "
            "WHERE run_id = ? AND example_id = 'q1' AND s.metric = 'contains'", [run_id]).fetchall()
    return json.loads(answers), score, reply, json.loads(params)


def test_score_takes_a_corrected_gold_answer_and_leaves_a_changed_question(
    server_url: str, tmp_path: Path
) -> None:
    folder, db = tmp_path / "corpus", tmp_path / "r.duckdb"
    _write(folder, gold="7316")  # a typo in the gold answer: the document says 7361
    run_id = _run(folder, db, server_url)
    answers, _, reply, before = _state(db, run_id)
    assert answers == ["7316"]
    assert "up to date" in _score(db)

    _write(folder, gold="7361")  # the typo fixed; question and document as they were
    said = _score(db)
    answers, score, reply, after = _state(db, run_id)
    assert "refreshed 1 example(s): q1" in said
    assert answers == ["7361"]
    assert score == (1.0 if "7361" in normalize(reply) else 0.0)  # scored against the fixed answer
    assert after["content_sha256"] != before["content_sha256"]
    assert after["refreshed"][0]["from_sha256"] == before["content_sha256"]  # type: ignore[index]

    _write(folder, gold="7361", question="What number is on the brass plate?")  # another prompt
    said = _score(db)
    assert "not refreshed" in said and "q1" in said
    assert _state(db, run_id)[0] == ["7361"]  # left as stored


def test_a_needle_run_rebuilds_to_its_recorded_hash_from_local_token_counts(
    server_url: str, tmp_path: Path
) -> None:
    """The rebuild counts with the model's tokenizer files, not the server: a generated corpus
    must come out as the run built it (else every needle run would read as stale), and the
    stored examples must hash as they were asked (the test refresh relies on)."""
    from compare.core.types import Corpus
    from compare.run.refresh import _build, refresh_examples

    db = tmp_path / "n.duckdb"
    spec = validate_spec({"corpus": {"kind": "needle", "lengths": [300, 600], "depths": [0.5], "seed": 5},
                          "pipelines": [{"kind": "long_context", "max_tokens": 4}],
                          "metrics": ["request_ok"], "retries": 0})
    with Store(db) as store:
        run_id = asyncio.run(execute_async(spec, store, server_url, {"managed": False})).run_id
        [found] = refresh_examples(store, [run_id])
        stored = store.examples(run_id)
        [(params,)] = store.con.execute("SELECT corpus_params FROM runs").fetchall()
    recorded = json.loads(params)
    assert found.reason is None and found.refreshed == [], found.line()
    rebuilt = asyncio.run(_build(spec, None))
    as_asked = Corpus(rebuilt.name, rebuilt.documents, [stored[e.id] for e in rebuilt.examples])
    assert len(stored) == 2 and as_asked.content_sha256() == recorded["content_sha256"]

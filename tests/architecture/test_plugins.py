"""A pipeline and a corpus that live outside the engine, run through the Python API (issue 16).

`echo_plugin.py` is the one file the new pipeline (and corpus) took; the spec names it with
`kind = "python"`. Everything else is real: the shared vLLM server, DuckDB, the analysis views.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from compare import api
from compare.analysis.summary import pipeline_summary
from compare.run.spec import SpecError, validate_spec

SPEC = {
    "corpus": {"kind": "python", "factory": "tests.architecture.echo_plugin:make_corpus",
               "options": {"colour": "teal"}},
    "pipelines": [{"kind": "python", "factory": "tests.architecture.echo_plugin:make_pipeline",
                   "options": {"max_tokens": 8}},
                  {"kind": "long_context", "max_tokens": 8}],
    "metrics": ["headline", "contains", "evidence_recall", "request_ok"],
}


def _rows(db: Path) -> list[tuple[object, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT pipeline, role, count(*), count(error), "
            "json_extract_string(any_value(params), '$.factory') FROM predictions GROUP BY ALL ORDER BY 1"
        ).fetchall()


@pytest.mark.slow
def test_a_plugin_pipeline_and_corpus_run_end_to_end(server_url: str, tmp_path: Path) -> None:
    db = tmp_path / "plugin.duckdb"
    said: list[str] = []
    result = api.run(SPEC, db, base_url=server_url, say=said.append)
    assert result.done == 4 and result.errors == 0
    assert _rows(db) == [
        ("best_sentence", "retrieval", 2, 0, "tests.architecture.echo_plugin:make_pipeline"),
        ("long_context", "long_context", 2, 0, None),
    ]
    with duckdb.connect(str(db), read_only=True) as con:
        recall = con.execute("SELECT avg(value) FROM scores WHERE metric = 'evidence_recall' "
                             "AND pipeline = 'best_sentence'").fetchone()
        corpus = con.execute("SELECT json_extract_string(corpus_params, '$.factory') FROM runs").fetchone()
        summary = {r["pipeline"]: r for r in pipeline_summary(con, [result.run_id])}
    assert recall == (1.0,)  # the overlap selector finds each fact's sentence
    assert corpus == ("tests.architecture.echo_plugin:make_corpus",)
    assert set(summary) == {"best_sentence", "long_context"}
    rep = api.report(db, [result.run_id])  # the report reads the plug-in's rows like any others
    assert rep.run_ids == [result.run_id] and rep.charts


@pytest.mark.slow
async def test_the_api_runs_inside_a_running_event_loop(server_url: str, tmp_path: Path) -> None:
    """A notebook cell runs inside the kernel's loop: `run` must not call asyncio.run on it."""
    db = tmp_path / "loop.duckdb"
    spec = {**SPEC, "pipelines": [SPEC["pipelines"][0]]}
    sync = api.run(spec, db, base_url=server_url, say=lambda _: None)
    again = await api.run_async(spec, db, base_url=server_url, say=lambda _: None)
    assert sync.done == 2 and again.run_id == sync.run_id and again.done == 0  # resumed, nothing left


def test_a_plugin_factory_that_does_not_exist_is_a_spec_error() -> None:
    bad = {**SPEC, "pipelines": [{"kind": "python", "factory": "tests.architecture.echo_plugin:nope"}]}
    with pytest.raises(SpecError, match=r"pipelines\.0\.python\.factory.*has no 'nope'"):
        validate_spec(bad)
    with pytest.raises(SpecError, match=r"package\.module:function"):
        validate_spec({**SPEC, "corpus": {"kind": "python", "factory": "no_colon"}})


def test_a_plugin_changes_the_run_id_with_its_options() -> None:
    other = {**SPEC, "corpus": {**SPEC["corpus"], "options": {"colour": "red"}}}  # type: ignore[dict-item]
    assert validate_spec(SPEC).run_id() != validate_spec(other).run_id()

"""Run-spec validation (pure functions): strict keys, named errors, a stable run id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from compare.run.spec import RunSpec, SpecError, load_spec, validate_spec
from corpora.needle import NeedleCorpusSpec


def _needle(spec: RunSpec) -> NeedleCorpusSpec:
    """The spec's corpus as the needle spec it is (for mypy: the field's static type is the union)."""
    assert isinstance(spec.corpus, NeedleCorpusSpec)
    return spec.corpus


def test_spec_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"corpus\.needle\.lenghts: Extra inputs"):
        validate_spec({"corpus": {"kind": "needle", "lenghts": [100]}})
    with pytest.raises(SpecError, match="chunk_overlap"):
        validate_spec({"pipelines": [{"kind": "rag", "chunk_size": 50, "chunk_overlap": 60}]})
    with pytest.raises(SpecError, match="depths"):
        validate_spec({"corpus": {"depths": [1.5]}})
    bad = tmp_path / "bad.toml"
    bad.write_text("concurrency = [")
    with pytest.raises(SpecError, match=r"bad\.toml: not valid TOML"):
        load_spec(bad)


def test_run_id_is_stable_and_ignores_server_location(tmp_path: Path) -> None:
    a = RunSpec()
    b = validate_spec({"server": {"base_url": "http://127.0.0.1:9"}})
    c = validate_spec({"pipelines": [{"kind": "rag", "top_k": 8}]})
    assert a.run_id() == b.run_id() != c.run_id()
    f = tmp_path / "s.toml"
    f.write_text('concurrency = 2\n[corpus]\nkind = "needle"\nlengths = [500]\n'
                 '[[pipelines]]\nkind = "long_context"\ntruncation = "head"\n')
    spec = load_spec(f)
    assert spec.concurrency == 2 and _needle(spec).lengths == [500]
    assert spec.pipelines[0].model_dump()["kind"] == "long_context"


def test_command_line_values_go_into_the_file_before_one_validation(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('concurrency = 2\n[corpus]\nkind = "needle"\nlengths = [500]\ndepths = [0.5]\n'
                 '[server]\nheaders = { x-team = "a" }\n')
    spec = load_spec(f, {"corpus.lengths": [300, 600], "server.model": "m", "schedule": None})
    assert _needle(spec).lengths == [300, 600] and _needle(spec).depths == [0.5]  # the rest of the file kept
    assert spec.server.model == "m" and spec.concurrency == 2 and spec.schedule == "prefix"
    assert _needle(load_spec(None, {"corpus.lengths": [300]})).lengths == [300]  # no file: the defaults
    with pytest.raises(SpecError, match=r"s\.toml \+ options: invalid run spec.*concurrency"):
        load_spec(f, {"concurrency": 0})
    leval = tmp_path / "l.toml"
    leval.write_text('[corpus]\nkind = "leval"\nsubset = "tpo"\n')
    with pytest.raises(SpecError, match="lengths"):  # a needle option on another corpus: named
        load_spec(leval, {"corpus.lengths": [300]})


@pytest.fixture
def new_metric() -> Iterator[str]:
    """A metric registered after the built-ins (by a plug-in, or a notebook), removed afterwards."""
    from compare.core.registry import METRICS, register_metric

    name = "answer_is_short"
    register_metric(name)(lambda ex, pred: float(len(pred.answer) < 200) if pred.ok else None)
    try:
        yield name
    finally:
        METRICS._items.pop(name, None)


def test_metrics_default_to_every_registered_metric(new_metric: str) -> None:
    from compare.core.registry import METRICS

    spec = RunSpec()
    assert set(spec.metrics) == set(METRICS) and new_metric in spec.metrics
    assert validate_spec({"metrics": ["contains"]}).metrics == ["contains"]  # a list still chooses
    assert RunSpec().run_id() == validate_spec({"metrics": ["contains"]}).run_id()  # not in the id


@pytest.mark.slow
def test_run_computes_a_newly_registered_metric(new_metric: str, server_url: str, tmp_path: Path) -> None:
    import duckdb

    from compare import api

    spec = validate_spec({"corpus": {"kind": "needle", "lengths": [300], "depths": [0.5]},
                          "pipelines": [{"kind": "long_context", "max_tokens": 8}]})
    db = tmp_path / "m.duckdb"
    result = api.run(spec, db, base_url=server_url, say=lambda m: None)
    assert (result.done, result.errors) == (1, 0)
    with duckdb.connect(str(db), read_only=True) as con:
        got = con.execute("SELECT value FROM scores WHERE metric = ?", [new_metric]).fetchall()
    assert got == [(1.0,)]

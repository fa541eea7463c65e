"""Run-spec validation (pure functions): strict keys, named errors, a stable run id."""

from __future__ import annotations

from pathlib import Path

import pytest

from compare.run.spec import RunSpec, SpecError, load_spec, validate_spec


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
    assert spec.concurrency == 2 and spec.corpus.lengths == [500]
    assert spec.pipelines[0].kind == "long_context"

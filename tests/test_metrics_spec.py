"""Quality metrics and run-spec validation (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compare.metrics import METRICS, normalize, resolve, score
from compare.spec import RunSpec, SpecError, load_spec, validate_spec
from compare.types import Completion, Example, Prediction, Span

EX = Example("e", ("d",), "q", ("4827163",), (Span("d", 100, 150),))


def _pred(text: str, retrieved: tuple[Span, ...] = ()) -> Prediction:
    return Prediction(text, Completion(text, 1, 0, 1, 0.1, 0.1, ()), 10, retrieved)


def test_answer_metrics() -> None:
    m = resolve(["exact_match", "contains", "token_f1"])
    assert score(m, EX, _pred("4827163.")) == {"exact_match": 1.0, "contains": 1.0, "token_f1": 1.0}
    chatty = score(m, EX, _pred("The special magic number is 4827163."))
    assert chatty["exact_match"] == 0.0 and chatty["contains"] == 1.0
    assert 0.0 < (chatty["token_f1"] or 0) < 1.0
    assert score(m, EX, _pred("48271634"))["contains"] == 0.0  # no partial-number credit
    failed = Prediction("", None, 0, error="x")
    assert score(m, EX, failed) == {"exact_match": None, "contains": None, "token_f1": None}
    assert normalize("The  Answer, an apple!") == "answer apple"


def test_evidence_recall_by_span_overlap() -> None:
    f = METRICS["evidence_recall"]
    assert f(EX, _pred("x", (Span("d", 0, 120),))) == 1.0
    assert f(EX, _pred("x", (Span("d", 150, 300),))) == 0.0  # touching is not overlapping
    assert f(EX, _pred("x", (Span("other", 0, 500),))) == 0.0
    assert f(EX, _pred("x")) is None  # long context retrieves nothing: not applicable


def test_unknown_metric_named() -> None:
    with pytest.raises(ValueError, match="bogus"):
        resolve(["bogus"])


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

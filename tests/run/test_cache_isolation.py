"""Cold by construction (issue 14 item 11): with cache isolation each document's first request
finds nothing cached, even when a sibling document shares its whole haystack prefix; its later
questions are warm; without isolation the sibling's prefix warms it and the check flags it."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from compare import api
from compare.analysis.cache_checks import TEMPLATE_TOKENS, cold_leaks, leak_caveats
from compare.run.runner import salt_for

pytestmark = pytest.mark.slow

PREFIX = ("The archive of the northern abbey was kept in oak chests, and each chest held the "
          "letters of one decade, tied with linen and sealed with wax. ") * 12


def _corpus(tmp: Path) -> Path:
    d = tmp / "twins"
    d.mkdir()
    docs = [{"id": "a", "text": PREFIX + "The abbot's seal was green."},
            {"id": "b", "text": PREFIX + "The abbot's seal was amber."}]
    (d / "documents.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    qs = [{"id": f"{doc}{i}", "doc_ids": [doc], "question": q, "answers": [a]}
          for doc, a in (("a", "green"), ("b", "amber"))
          for i, q in enumerate(["What colour was the abbot's seal?", "Which colour did the seal have?"])]
    (d / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    return d


def _first_and_later(db: Path) -> list[tuple[str, int, int]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT example_id, seq, coalesce(cached_tokens, 0) FROM predictions "
                           "ORDER BY seq").fetchall()


@pytest.mark.parametrize("isolation", ["document", "shared"])
def test_isolation_keeps_first_requests_cold(server_url: str, tmp_path: Path, isolation: str) -> None:
    spec = {"corpus": {"kind": "jsonl", "path": str(_corpus(tmp_path))},
            "pipelines": [{"kind": "long_context", "max_tokens": 4}], "cache_isolation": isolation,
            "schedule": "given", "metrics": ["request_ok"]}
    db = tmp_path / f"{isolation}.duckdb"
    api.run(spec, db, base_url=server_url, say=lambda _: None)
    rows = {ex: cached for ex, _, cached in _first_and_later(db)}
    with duckdb.connect(str(db), read_only=True) as con:
        [leak] = cold_leaks(con, [str(con.execute("SELECT run_id FROM runs").fetchone()[0])])
        caveats = leak_caveats(con, [leak["run_id"]])
    assert rows["a1"] > TEMPLATE_TOKENS and rows["b1"] > TEMPLATE_TOKENS  # later questions: warm
    if isolation == "document":
        # The salt is per document: b's first request cannot use a's identical prefix.
        assert rows["a0"] <= TEMPLATE_TOKENS and rows["b0"] <= TEMPLATE_TOKENS
        assert leak["leaked"] == 0 and caveats == []
    else:
        assert rows["b0"] > TEMPLATE_TOKENS  # warmed by its sibling: not a cold measurement
        assert leak["leaked"] >= 1 and "not cold measurements" in caveats[0]


def test_salts_differ_by_document_and_pipeline_only() -> None:
    assert salt_for("r", "h", ("a",)) == salt_for("r", "h", ("a",))
    assert len({salt_for("r", "h", ("a",)), salt_for("r", "h", ("b",)), salt_for("r", "h2", ("a",))}) == 3

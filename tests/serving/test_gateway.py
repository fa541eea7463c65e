"""A run through a real gateway (issue 27): LiteLLM's proxy in front of the session's vLLM, with
keys of its own, a model alias (`house-model`) and a path prefix (`/gateway/v1`). LiteLLM has
none of vLLM's extra routes and its /health reports its upstreams, so every count before a
request comes from the local tokenizer and every count after it from the usage LiteLLM passes
on. A wrong key stops the run in one line with nothing stored; LiteLLM's own per-key rate limiter
answers 429 with Retry-After, which the runner waits out and records as a second attempt.

LiteLLM lives in its own venv (tests/fixtures/gateway.py); without it these tests skip, saying so.
One LiteLLM serves the session (`gateway`, tests/serving/conftest.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest

from compare import api
from compare.serving import weights as models
from compare.serving.endpoint import AuthError
from tests.fixtures.gateway import ALIAS, KEY, LIMITED_KEY, LiteLLMGateway, gateway_bin

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(gateway_bin() is None, reason="no LiteLLM gateway venv: .venv-gateway is made by "
                       "scripts/setup.sh (or set RAGVSLC_GATEWAY_VENV)"),
]
KEY_ENV = "GW_TEST_KEY"
TEXT = ("The lighthouse at Carrow Point was painted red and white. Its keeper, Tomas Vell, kept "
        "a logbook of every ship. The lamp was lit at dusk with paraffin. The keeper's dog was "
        "called Biscuit. ") * 2


def _spec(tmp: Path, base_url: str, questions: int = 2) -> dict[str, object]:
    corpus = tmp / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "documents.jsonl").write_text(json.dumps({"id": "carrow", "text": TEXT}) + "\n")
    qs = [("q1", "What was the keeper's name?", "Tomas Vell"), ("q2", "What was the dog called?", "Biscuit"),
          ("q3", "What colours was the lighthouse?", "red and white")][:questions]
    (corpus / "questions.jsonl").write_text("".join(
        json.dumps({"id": i, "doc_ids": ["carrow"], "question": q, "answers": [a]}) + "\n" for i, q, a in qs))
    return {
        "corpus": {"kind": "jsonl", "path": str(corpus)},
        "pipelines": [{"kind": "long_context", "max_tokens": 8},
                      {"kind": "rag", "chunk_size": 40, "chunk_overlap": 0, "top_k": 2, "max_tokens": 8}],
        # The alias is nobody's tokenizer: the spec names the served model's (what a user does).
        "server": {"base_url": base_url, "model": ALIAS, "api_key_env": KEY_ENV, "max_model_len": 4096,
                   "tokenizer": f"hf:{models.DEFAULT_MODEL}"},
        "metrics": ["contains", "request_ok"],
    }


def _stored(db: Path) -> tuple[dict[str, object], list[tuple[object, ...]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        run = con.execute("SELECT server FROM runs").fetchone()
        rows = con.execute("SELECT pipeline, example_id, prompt_tokens, error, attempts FROM predictions "
                           "ORDER BY pipeline, example_id").fetchall()
    assert run is not None
    return json.loads(run[0]), rows


def test_long_context_and_rag_run_through_litellm(
    gateway: LiteLLMGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    said: list[str] = []
    db = tmp_path / "gw.duckdb"
    result = api.run(_spec(tmp_path, gateway.base_url), db, say=said.append)
    assert result.done == 4 and result.errors == 0
    server, rows = _stored(db)
    caps = server["capabilities"]
    assert isinstance(caps, dict)
    assert not any(caps[r] for r in ("tokenize", "metrics", "health", "version")) and caps["vllm"] is False
    # LiteLLM's /health checks its upstreams (a 200 listing them, or slow): not vLLM's liveness.
    assert len(caps["not_found"]["health"]) == 2 and caps["sources"]["liveness"] == "/models answering"
    assert caps["stream_usage"] is True  # usage streamed back through LiteLLM
    assert caps["tokenizer"] == f"hf:{models.DEFAULT_MODEL}" and caps["tokenizer_approximate"] is True
    assert any(s.startswith(f"endpoint {gateway.base_url}: no vLLM extras") for s in said), said
    assert [r[:2] for r in rows] == [("long_context", "q1"), ("long_context", "q2"),
                                     ("rag", "q1"), ("rag", "q2")]
    assert all(isinstance(r[2], int) and r[2] > 20 and r[3] is None for r in rows), rows  # usage read through
    assert KEY not in json.dumps(server)


def test_a_wrong_key_stops_the_run_in_one_line_and_stores_nothing(
    gateway: LiteLLMGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-not-a-gateway-key")
    db = tmp_path / "wrong.duckdb"
    with pytest.raises(AuthError) as got:
        api.run(_spec(tmp_path, gateway.base_url), db, say=lambda _: None)
    msg = str(got.value)
    assert "\n" not in msg and f"${KEY_ENV}" in msg and "sk-not-a-gateway-key" not in msg
    if db.exists():
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM predictions WHERE error IS NULL").fetchone() == (0,)


def test_a_429_from_the_gateway_is_waited_out_and_recorded(
    gateway: LiteLLMGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiteLLM's limiter allows this key one request per window (gateway.window_s); two questions
    sent at once (concurrency 2, no prefix gating, no probe chat: `[server] probe_chat = false`)
    so one is refused with 429 and Retry-After: the window, however slow the shared server is.
    The runner waits that out and the row records two attempts and no error. (The old version
    waited 60 s and relied on the second request arriving within a minute of the first.)"""
    monkeypatch.setenv(KEY_ENV, LIMITED_KEY)
    spec = _spec(tmp_path, gateway.base_url, questions=2)
    spec |= {"pipelines": spec["pipelines"][:1], "concurrency": 2, "schedule": "given"}  # type: ignore[index]
    spec["server"]["probe_chat"] = False  # type: ignore[index]
    db = tmp_path / "limited.duckdb"
    t0 = time.monotonic()
    result = api.run(spec, db, say=lambda _: None)
    took = time.monotonic() - t0
    server, rows = _stored(db)
    assert result.errors == 0 and [r[3] for r in rows] == [None, None], rows
    assert sorted(int(str(r[4])) for r in rows) == [1, 2], rows  # one refused, waited out, answered
    assert took >= gateway.window_s, took  # at least the Retry-After (the runner's own backoff is 2 s)
    caps = server["capabilities"]
    assert isinstance(caps, dict) and caps["probe_chat"] is False and "probe_chat_usage" not in caps

"""Through LiteLLM's proxy, the rest of issue 27 item 2: Self-Route with both of its requests
through the gateway, `ragvslc judge` against the gateway with a key variable and a header read
from the environment, and a stream dropped mid-answer (an error row that counts), plus the probe
chat's cost recorded with the run (item 3). The session's one LiteLLM (tests/serving/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from compare import api
from compare.report.html import run_caveats
from compare.serving import weights as models
from main import app
from tests.fixtures.gateway import (
    ALIAS,
    CUT_ALIAS,
    HEADER_KEY,
    KEY,
    TEAM_HEADER,
    TEAM_VALUE,
    LiteLLMGateway,
    gateway_bin,
)
from tests.fixtures.proxy import FaultProxy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(gateway_bin() is None, reason="no LiteLLM gateway venv: .venv-gateway is made by "
                       "scripts/setup.sh (or set RAGVSLC_GATEWAY_VENV)"),
]
KEY_ENV = "GW_ROUTES_KEY"
# The retriever's favourite chunk holds every word of the question and no answer (as in
# tests/pipelines/test_routers.py): RAG's reply takes the exit, long context finds the needle.
DECOY = ("Everybody in Lisbon talked about the special magic number for Lisbon. "
         "What the special magic number for Lisbon is was the question of every evening. ")
FILLER = ("The lighthouse at Carrow Point was painted red and white. Its keeper kept a logbook of every "
          "ship that passed the point in the winter storms. ")
NEEDLE = "The special magic number for Lisbon is 4827163."


def _spec(tmp: Path, base_url: str, pipelines: list[dict[str, object]], model: str = ALIAS,
          **server: object) -> dict[str, object]:
    corpus = tmp / "corpus"
    corpus.mkdir(exist_ok=True)
    doc = {"id": "lisbon", "text": DECOY + FILLER + NEEDLE}
    (corpus / "documents.jsonl").write_text(json.dumps(doc) + "\n")
    (corpus / "questions.jsonl").write_text(json.dumps(
        {"id": "q1", "doc_ids": ["lisbon"], "question": "What is the special magic number for Lisbon?",
         "answers": ["4827163"]}) + "\n")
    return {
        "corpus": {"kind": "jsonl", "path": str(corpus)},
        "pipelines": pipelines,
        "server": {"base_url": base_url, "model": model, "api_key_env": KEY_ENV, "max_model_len": 4096,
                   "tokenizer": f"hf:{models.DEFAULT_MODEL}", **server},
        "metrics": ["contains", "request_ok"],
        "retries": 0,
    }


def test_self_route_asks_both_steps_through_the_gateway_and_the_probe_chat_is_charged_to_the_run(
    gateway: LiteLLMGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    db = tmp_path / "route.duckdb"
    one_chunk = {"chunk_size": 30, "chunk_overlap": 0, "top_k": 1, "max_tokens": 12}
    spec = _spec(tmp_path, gateway.base_url, [{"kind": "self_route", "rag": one_chunk,
                                               "long_context": {"max_tokens": 12}}])
    result = api.run(spec, db, say=lambda _: None)
    assert result.errors == 0
    with duckdb.connect(str(db), read_only=True) as con:
        route, prompt, out, steps = con.execute(
            "SELECT route, prompt_tokens, output_tokens, steps FROM predictions").fetchone() or ()
        stored = con.execute("SELECT server, concurrency, redacted FROM runs").fetchone() or ()
    run = dict(zip(("server", "concurrency", "redacted"), stored, strict=True))
    first, second = json.loads(str(steps))
    assert route == "long_context" and (first["route"], second["route"]) == ("rag", "long_context")
    # Both requests' usage came back through LiteLLM and the row is their sum.
    assert first["prompt_tokens"] > 20 and second["prompt_tokens"] > first["prompt_tokens"]
    assert first["prompt_tokens"] + second["prompt_tokens"] == prompt
    assert first["output_tokens"] + second["output_tokens"] == out
    # Item 3: the start-up probe chat is a billed request; it is recorded with the run, not hidden.
    caps = json.loads(str(run["server"]))["capabilities"]
    spent = caps["probe_chat_usage"]
    assert caps["probe_chat"] is True and spent["requests"] >= 1 and spent["prompt_tokens"] > 0, spent
    assert spent["output_tokens"] >= 1
    said = [c for c in run_caveats(run) if c.startswith("Start-up probe chat")]
    assert len(said) == 1 and f"{spent['prompt_tokens']} prompt" in said[0], said


def test_the_judge_grades_through_the_gateway_with_a_key_variable_and_a_header(
    gateway: LiteLLMGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway accepts HEADER_KEY only with its team header: a verdict stored means both the
    key variable and the header reached it; neither value is stored or printed."""
    monkeypatch.setenv(KEY_ENV, KEY)
    db = tmp_path / "judged.duckdb"
    ran = api.run(_spec(tmp_path, gateway.base_url, [{"kind": "long_context", "max_tokens": 12}]), db,
                  say=lambda _: None)
    assert ran.done == 1 and ran.errors == 0
    monkeypatch.setenv("GW_JUDGE_KEY", HEADER_KEY)
    monkeypatch.setenv("GW_TEAM", TEAM_VALUE)
    base = ["judge", "--db", str(db), "--base-url", gateway.base_url, "--model", ALIAS, "--all",
            "--controls", "1", "--api-key-env", "GW_JUDGE_KEY"]
    # Without the header the gateway refuses the key: one line, exit 2, not N failed verdicts.
    refused = CliRunner().invoke(app, base)
    assert refused.exit_code == 2 and "refused the API key in $GW_JUDGE_KEY" in refused.output, refused.output
    assert len(refused.output.strip().splitlines()) == 1 and HEADER_KEY not in refused.output
    out = CliRunner().invoke(app, [*base, "--header", f"{TEAM_HEADER}=${{GW_TEAM}}", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["judge_model"] == ALIAS and got["asked"] == 1 and got["failed"] == 0, got
    assert got["controls"] >= 4, got  # the controls were asked through the gateway too
    assert TEAM_VALUE not in out.output and HEADER_KEY not in out.output
    blob = db.read_bytes()
    assert TEAM_VALUE.encode() not in blob and HEADER_KEY.encode() not in blob


def test_a_stream_the_gateway_drops_mid_answer_is_an_error_row_that_counts(
    gateway: LiteLLMGateway, cut_proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUT_ALIAS's upstream connection is cut a few chunks into every answer; LiteLLM passes the
    broken stream on. The row is an error (no usage to count), stored, scored as a failed request
    and counted as asked (summary: errors 1 of 1)."""
    monkeypatch.setenv(KEY_ENV, KEY)
    db = tmp_path / "cut.duckdb"
    spec = _spec(tmp_path, gateway.base_url, [{"kind": "long_context", "max_tokens": 48}], model=CUT_ALIAS,
                 probe_chat=False)
    before = cut_proxy.disturbed
    result = api.run(spec, db, say=lambda _: None)
    assert cut_proxy.disturbed > before  # the answer really was cut below the gateway
    assert result.done == 1 and result.errors == 1
    with duckdb.connect(str(db), read_only=True) as con:
        error, answer = con.execute("SELECT error, answer FROM predictions").fetchone() or (None, None)
        ok = con.execute("SELECT value FROM scores WHERE metric = 'request_ok'").fetchall()
    assert error and "429" not in error and "refused the API key" not in error, error
    assert ok == [(0.0,)]
    print(f"cut stream through LiteLLM -> row error: {error[:200]!r} (answer so far: {answer!r})")

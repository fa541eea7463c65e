"""No secret leaves the process (issue 32): keys and header values are sent, never stored,
printed, exported or logged.

Distinct markers are planted as the chat API key, three header values (`{ env = "VAR" }`,
`"${VAR}"` and a literal), the embeddings endpoint's key and its own header (`embed_headers`);
long context and RAG then run end to end through tests/fixtures/hosted_proxy.py (made to demand
the headers too) in front of the real vLLM, with RAG's embeddings from
tests/fixtures/embeddings_server.py (the real MiniLM, made to demand its header too).
Then the DuckDB file's bytes and every column of every table, the report folder, the export
folder, what the run said and the captured logs and output are searched: no marker anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from aiohttp import web

from compare import api
from compare.core.secrets import HeaderValue
from compare.report.assemble import write_report
from compare.run.runner import RunStopped
from compare.run.spec import load_spec, validate_spec
from compare.serving import weights as models
from compare.store.db import Store
from compare.store.export import export_tables
from pipelines.embed_endpoint import EmbedConfigError, EmbedEndpointError, EndpointEmbedder
from tests.fixtures.embeddings_server import MODEL as EMBED_MODEL
from tests.fixtures.embeddings_server import EmbeddingsServer
from tests.fixtures.hosted_proxy import HostedProxy

# HostedProxy kept: a gateway that echoes header values in a 500, on purpose
ROOT = Path(__file__).resolve().parents[2]

# Every marker is distinct, so a hit names the path that leaked.
MARK = {
    "RAGVSLC_T32_KEY": "sk-mark32-chatkey-4c1e9f3a",
    "RAGVSLC_T32_HDR": "mark32-envheader-5b2d8e41",
    "RAGVSLC_T32_TEAM": "mark32-dollarheader-77ac03",
    "RAGVSLC_T32_EMBED": "sk-mark32-embedkey-3e8b1d65",
    "RAGVSLC_T32_EMBED_HDR": "mark32-embedheader-c0f4a952",
}
LITERAL = "mark32-literalheader-9a4c6f27"
MARKERS = (*MARK.values(), LITERAL)
LITERAL_NOTE = "literal, redacted"  # what the store keeps of a literal value
HEADERS = {"api-key": MARK["RAGVSLC_T32_HDR"], "X-Team": MARK["RAGVSLC_T32_TEAM"], "X-Org-Token": LITERAL}
FAIL_WORD = "Quillmere"  # a question naming it makes the gateway fail, echoing what it was sent

TEXT = (
    "The harbour town of Wendmere kept its records in a stone tower by the quay. The keeper of "
    "the tower, a patient woman named Ilse Marrow, wrote down each boat that came home. The "
    "secret code of the tower is 7361. The tower's lamp burned whale oil until the council bought "
    "a paraffin lamp from a trader in the south."
)


class GatewayProxy(HostedProxy):
    """A hosted API that also demands the spec's headers (a request without them is refused as
    a wrong key would be); on a question naming FAIL_WORD it fails the way a careless gateway
    does: a 500 whose message echoes every request header it got, values included."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        for name, want in HEADERS.items():
            if request.headers.get(name) != want:
                return web.json_response({"error": {"message": f"header {name} missing or wrong"}},
                                         status=403)
        if request.path.endswith("/chat/completions") and FAIL_WORD.encode() in await request.read():
            echoed = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
            message = f"upstream failed for request with headers {echoed}"
            return web.json_response({"error": {"message": message}}, status=500)
        return await super()._handle(request)


class EmbedGateway(EmbeddingsServer):
    """The embeddings endpoint, demanding its own header too; refusing, it echoes what it got."""

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Embed-Token") != MARK["RAGVSLC_T32_EMBED_HDR"]:
            echoed = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
            refused = {"message": f"refused request with headers {echoed}"}
            return web.json_response({"error": refused}, status=403)
        return await super()._handle(request)


def _corpus(tmp: Path, questions: list[tuple[str, str, str]]) -> Path:
    d = tmp / "corpus"
    d.mkdir(exist_ok=True)
    (d / "documents.jsonl").write_text(json.dumps({"id": "wendmere", "text": TEXT}) + "\n")
    (d / "questions.jsonl").write_text("".join(
        json.dumps({"id": i, "doc_ids": ["wendmere"], "question": q, "answers": [a]}) + "\n"
        for i, q, a in questions))
    return d


QUESTIONS = [("q1", "What is the secret code of the tower?", "7361"),
             ("q2", "Who was the keeper of the tower?", "Ilse Marrow")]


def _spec(
    corpus: Path, base_url: str, pipelines: list[dict[str, object]], **top: object,
) -> dict[str, object]:
    return {
        "corpus": {"kind": "jsonl", "path": str(corpus)},
        "pipelines": pipelines,
        "server": {"base_url": base_url, "model": models.DEFAULT_MODEL, "api_key_env": "RAGVSLC_T32_KEY",
                   "max_model_len": 4096,
                   "headers": {"api-key": {"env": "RAGVSLC_T32_HDR"}, "X-Team": "${RAGVSLC_T32_TEAM}",
                               "X-Org-Token": LITERAL}},
        "metrics": ["headline", "contains", "request_ok"], "retries": 0, **top,
    }


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in MARK.items():
        monkeypatch.setenv(name, value)
    yield


def _leaks(text: str) -> list[str]:
    return [m for m in MARKERS if m in text]


def _db_leaks(db: Path) -> dict[str, list[str]]:
    """Markers in the file's bytes, and in every column of every table read as text."""
    found: dict[str, list[str]] = {}
    for f in db.parent.glob(db.name + "*"):  # the file and any write-ahead log beside it
        raw = f.read_bytes()
        if hits := [m for m in MARKERS if m.encode() in raw]:
            found[f.name] = hits
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        for table in tables:
            cols = [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]
            for col in cols:
                for m in MARKERS:
                    n = con.execute(
                        f'SELECT count(*) FROM "{table}" WHERE contains(CAST("{col}" AS VARCHAR), ?)', [m],
                    ).fetchone()
                    if n and n[0]:
                        found.setdefault(f"{table}.{col}", []).append(m)
    return found


def _stored_spec(db: Path) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        return str(con.execute("SELECT spec FROM runs").fetchone()[0])  # type: ignore[index]


def _folder_leaks(folder: Path) -> dict[str, list[str]]:
    found = {}
    for f in folder.rglob("*"):
        if not f.is_file():
            continue
        text = f.read_bytes().decode("utf-8", "replace")
        if f.suffix == ".parquet":  # compressed pages: read the rows back instead
            with duckdb.connect() as con:
                text += str(con.execute("SELECT * FROM read_parquet(?)", [str(f)]).fetchall())
        if hits := _leaks(text):
            found[str(f.relative_to(folder))] = hits
    return found


@pytest.mark.slow
def test_no_key_or_header_value_reaches_the_store_the_report_the_export_or_the_logs(
    server_url: str, tmp_path: Path, secrets_env: None, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # every library's debug lines too (openai, httpx)
    db = tmp_path / "secrets.duckdb"
    said: list[str] = []
    with (EmbedGateway(MARK["RAGVSLC_T32_EMBED"]) as emb,
          GatewayProxy(server_url, MARK["RAGVSLC_T32_KEY"]) as proxy):
        spec = _spec(_corpus(tmp_path, QUESTIONS), proxy.base_url, [
            {"kind": "long_context", "max_tokens": 8},
            {"kind": "rag", "chunk_size": 40, "chunk_overlap": 0, "top_k": 2, "max_tokens": 8,
             "embed_base_url": emb.root, "embedder": EMBED_MODEL, "embed_api_key_env": "RAGVSLC_T32_EMBED",
             "embed_headers": {"X-Embed-Token": {"env": "RAGVSLC_T32_EMBED_HDR"}}}])
        result = api.run(spec, db, say=said.append)
        embedded = emb.tokens
    assert result.done == 4 and result.errors == 0  # the headers and both keys were sent and accepted
    assert embedded > 0  # RAG's vectors came from the endpoint that demands the embeddings key
    report = write_report(db, tmp_path / "report", [result.run_id], images=False)
    export_tables(db, tmp_path / "export-parquet", "parquet")
    export_tables(db, tmp_path / "export-csv", "csv")
    out, err = capfd.readouterr()

    assert _db_leaks(db) == {}
    assert _folder_leaks(tmp_path / "report") == {}
    assert _folder_leaks(tmp_path / "export-parquet") == {} and _folder_leaks(tmp_path / "export-csv") == {}
    assert _leaks("\n".join(said)) == [] and _leaks(caplog.text) == [] and _leaks(out + err) == []
    # What is kept instead: each header's name and where its value came from.
    with duckdb.connect(str(db), read_only=True) as con:
        stored = json.loads(con.execute("SELECT spec FROM runs").fetchone()[0])["server"]  # type: ignore[index]
    assert stored["headers"] == {"api-key": "env:RAGVSLC_T32_HDR", "X-Team": "env:RAGVSLC_T32_TEAM",
                                 "X-Org-Token": "literal, redacted"}
    rag = json.loads(con_spec := _stored_spec(db))["pipelines"][1]
    assert rag["embed_headers"] == {"X-Embed-Token": "env:RAGVSLC_T32_EMBED_HDR"}, con_spec
    assert "env:RAGVSLC_T32_HDR" in report.html.read_text()
    # The literal secret-looking value is said once, by name, at start.
    warned = [s for s in said if s.startswith("warning:") and "X-Org-Token" in s]
    assert len(warned) == 1 and "api-key" not in warned[0] and "X-Team" not in warned[0], said


@pytest.mark.slow
def test_a_failed_request_s_error_row_and_traceback_never_echo_its_headers(
    server_url: str, tmp_path: Path, secrets_env: None,
) -> None:
    questions = [("bad", f"What does {FAIL_WORD} keep in the tower?", "records")]
    db = tmp_path / "failed.duckdb"
    with GatewayProxy(server_url, MARK["RAGVSLC_T32_KEY"]) as proxy:
        spec = _spec(_corpus(tmp_path, questions), proxy.base_url,
                     [{"kind": "long_context", "max_tokens": 8}])
        result = api.run(spec, db, say=lambda _: None)
        with pytest.raises(RunStopped) as stopped:
            api.run({**spec, "on_error": "stop"}, tmp_path / "stop.duckdb", say=lambda _: None)
    assert result.errors == 1
    with duckdb.connect(str(db), read_only=True) as con:
        error = str(con.execute("SELECT error FROM predictions").fetchone()[0])  # type: ignore[index]
    assert "upstream failed for request with headers" in error  # the gateway's echo did arrive
    assert "x-team" in error.lower() and _leaks(error) == []  # names stay, values are gone
    shown = "".join(traceback.format_exception(stopped.value))  # the chain a caller would print
    assert "upstream failed" in shown and _leaks(shown) == []


def test_rotating_a_key_or_a_header_value_keeps_the_run_id(tmp_path: Path) -> None:
    """A secret's value never joins the run id (rotating a key must resume, not start over);
    where it comes from does not either."""
    corpus = _corpus(tmp_path, QUESTIONS)
    base = _spec(corpus, "http://127.0.0.1:9", [{"kind": "long_context"}])
    server: dict[str, object] = dict(base["server"])  # type: ignore[call-overload]
    ids = {validate_spec({**base, "server": {**server, "headers": h}}).run_id() for h in (
        {"api-key": "old-value-1234567890", "X-Org-Token": "a"},
        {"api-key": "new-value-0987654321", "X-Org-Token": "b"},
        {"api-key": {"env": "ROTATED"}, "X-Org-Token": "${ORG}"},
        {},
    )}
    ids.add(validate_spec({**base, "server": {**server, "api_key_env": "OTHER_KEY"}}).run_id())
    assert len(ids) == 1


def test_the_env_spelling_reads_from_toml_and_a_missing_variable_is_one_line(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, QUESTIONS)
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'[corpus]\nkind = "jsonl"\npath = "{corpus}"\n'
        '[server]\nbase_url = "http://127.0.0.1:9"\nmax_model_len = 4096\n'
        'headers = { "api-key" = { env = "RAGVSLC_T32_UNSET" }, "x-tenant" = "acme" }\n'
        '[[pipelines]]\nkind = "long_context"\n')
    loaded = load_spec(spec)
    assert loaded.model_dump(mode="json")["server"]["headers"] == {
        "api-key": "env:RAGVSLC_T32_UNSET", "x-tenant": "literal, redacted"}
    assert "acme" not in repr(loaded) and loaded.server.secret_warning() is None  # "acme" is no secret
    env = {k: v for k, v in os.environ.items() if k != "RAGVSLC_T32_UNSET"}
    got = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "--spec", str(spec), "--db",
                          str(tmp_path / "x.duckdb")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=env)
    assert got.returncode == 2, got.stderr
    assert "RAGVSLC_T32_UNSET" in got.stderr and "api-key" in got.stderr and "Traceback" not in got.stderr
    assert len([line for line in got.stderr.splitlines() if line.startswith("error:")]) == 1


def test_embed_headers_are_sent_checked_at_start_and_never_echoed(
    tmp_path: Path, secrets_env: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`embed_headers` reach the embeddings endpoint; an unset variable is a configuration error
    at build time (one line); a refusal that echoes the request's headers loses their values."""
    headers = {"X-Embed-Token": HeaderValue(env="RAGVSLC_T32_EMBED_HDR")}
    with EmbedGateway(MARK["RAGVSLC_T32_EMBED"]) as emb:
        good = EndpointEmbedder(emb.root, EMBED_MODEL, api_key_env="RAGVSLC_T32_EMBED", headers=headers)
        assert good.embed_query("the tower's code").shape[-1] > 0
        bad = EndpointEmbedder(emb.root, EMBED_MODEL, api_key_env="RAGVSLC_T32_EMBED", retries=0,
                               headers={"X-Embed-Token": "${RAGVSLC_T32_HDR}"})  # the wrong value
        with pytest.raises(EmbedEndpointError) as refused:
            bad.embed_query("the tower's code")
    shown = "".join(traceback.format_exception(refused.value))
    assert "refused request with headers" in shown and "x-embed-token" in shown.lower()
    assert _leaks(shown) == []
    monkeypatch.delenv("RAGVSLC_T32_EMBED_HDR")
    with pytest.raises(EmbedConfigError, match="RAGVSLC_T32_EMBED_HDR") as unset:
        EndpointEmbedder("http://127.0.0.1:9", EMBED_MODEL, api_key_env="RAGVSLC_T32_EMBED",
                         headers=headers)
    assert "\n" not in str(unset.value)


def test_embed_headers_keep_the_run_id_and_a_router_s_literal_never_reaches_the_store(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, QUESTIONS)
    rag: dict[str, object] = {"kind": "rag", "embed_base_url": "http://127.0.0.1:9", "embedder": EMBED_MODEL}

    def spec(headers: object) -> dict[str, object]:
        routed: dict[str, object] = {"kind": "self_route", "rag": {**rag, "embed_headers": headers}}
        return _spec(corpus, "http://127.0.0.1:9", [{**rag, "embed_headers": headers}, routed])

    ids = {validate_spec(spec(h)).run_id() for h in (
        {"X-Embed-Token": "old-embed-value-12345678"}, {"X-Embed-Token": "new-embed-value-87654321"},
        {"X-Embed-Token": {"env": "ROTATED"}}, {},
    )}
    assert len(ids) == 1
    loaded = validate_spec(spec({"X-Embed-Token": LITERAL}))
    warning = loaded.secret_warning() or ""
    assert "embed_headers.X-Embed-Token" in warning and LITERAL not in warning
    db = tmp_path / "router.duckdb"
    with Store(db) as store:
        store.start_run(loaded.run_id(), corpus="c", model="m", base_url="u", concurrency=1,
                        spec=loaded.model_dump(mode="json"), corpus_params={}, server={})
    assert _db_leaks(db) == {}
    stored = json.loads(_stored_spec(db))["pipelines"]
    assert stored[0]["embed_headers"] == stored[1]["rag"]["embed_headers"] == {"X-Embed-Token": LITERAL_NOTE}

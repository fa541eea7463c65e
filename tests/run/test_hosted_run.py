"""A run against a hosted-style endpoint (issue 15): prefix path, key in a variable, no vLLM
extras. Long context, RAG and Self-Route run to a report through the proxy in front of the real
vLLM; nothing calls /tokenize or /metrics; the key never lands in the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from compare import api
from compare.analysis.cost import cost_report
from compare.analysis.prices import DEFAULT_SHEET
from compare.report.assemble import write_report
from compare.serving import weights as models
from compare.serving.client import PROBE_MESSAGES
from tests.fixtures.hosted_proxy import HostedProxy

# HostedProxy kept (issue 27 names this stand-in): LiteLLM cannot refuse max_tokens, send Anthropic-style
# usage or pass vLLM's /models through verbatim
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "ACME_TEST_KEY"
KEY = "sk-test-4f1c9a"

TEXT = (
    "The harbour town of Wendmere kept its records in a stone tower by the quay. "
    "Every autumn the fishing fleet returned with the first storms, and the market filled with "
    "herring, salt and rope. The keeper of the tower, a patient woman named Ilse Marrow, wrote "
    "down each boat that came home. The tower's lamp burned whale oil until the year the "
    "council bought a paraffin lamp from a trader in the south. The secret code of the tower "
    "is 7361. Children were told never to climb the tower stairs after dark, because the "
    "steps were worn smooth and the rail was loose. In spring the boats left again, painted "
    "blue and white, and the town grew quiet. "
) * 3


def _corpus(tmp: Path) -> Path:
    d = tmp / "corpus"
    d.mkdir()
    (d / "documents.jsonl").write_text(json.dumps({"id": "wendmere", "text": TEXT}) + "\n")
    qs = [("q1", "What is the secret code of the tower?", "7361"),
          ("q2", "What was the name of the keeper of the tower?", "Ilse Marrow"),
          ("q3", "What did the tower's lamp burn before paraffin?", "whale oil")]
    (d / "questions.jsonl").write_text(
        "".join(json.dumps({"id": i, "doc_ids": ["wendmere"], "question": q, "answers": [a]}) + "\n"
                for i, q, a in qs))
    return d


def _spec(corpus: Path, base_url: str) -> dict[str, object]:
    return {
        "corpus": {"kind": "jsonl", "path": str(corpus)},
        "pipelines": [{"kind": "long_context", "max_tokens": 12},
                      {"kind": "rag", "chunk_size": 80, "chunk_overlap": 0, "top_k": 2, "max_tokens": 12},
                      {"kind": "self_route", "rag": {"chunk_size": 80, "chunk_overlap": 0, "top_k": 2,
                                                     "max_tokens": 12}, "long_context": {"max_tokens": 12}}],
        "server": {"base_url": base_url, "model": models.DEFAULT_MODEL, "api_key_env": KEY_ENV,
                   "max_model_len": 4096},
        "metrics": ["headline", "contains", "request_ok"],
    }


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(KEY_ENV, KEY)
    yield


def test_three_pipelines_run_through_a_hosted_style_endpoint(
    server_url: str, tmp_path: Path, key_env: None
) -> None:
    db = tmp_path / "hosted.duckdb"
    with HostedProxy(server_url, KEY) as proxy:
        said: list[str] = []
        result = api.run(_spec(_corpus(tmp_path), proxy.base_url), db, say=said.append)
        hits = dict(proxy.hits)
    assert result.done == 9 and result.errors == 0
    served = ("/api/openai/models", "/api/openai/chat/completions")
    extras = {p: n for p, n in hits.items() if p not in served}
    assert extras and all(n == 1 for n in extras.values()), hits  # each vLLM extra asked for once, then never
    assert any("no vLLM extras" in s and "approximation" not in s for s in said), said
    with duckdb.connect(str(db), read_only=True) as con:
        server = json.loads(con.execute("SELECT server FROM runs").fetchone()[0])
        rows = con.execute(
            "SELECT pipeline, count(*), count(prompt_tokens), max(cached_tokens) FROM predictions "
            "GROUP BY 1 ORDER BY 1").fetchall()
        blob = " ".join(str(r) for r in con.execute("SELECT * FROM runs").fetchall())
    caps = server["capabilities"]
    assert caps["vllm"] is False and caps["api_url"] == proxy.base_url and caps["api_key_env"] == KEY_ENV
    assert caps["tokenizer"] == f"hf:{models.DEFAULT_MODEL}" and caps["tokenizer_approximate"] is False
    assert "probe" not in server  # two cold prompts are not spent on a billed endpoint
    assert KEY not in blob  # the key itself is never stored
    by = {r[0]: r for r in rows}
    assert all(r[1] == 3 and r[2] == 3 for r in rows)  # tokens from each response's usage
    assert by["long_context"][3] > 0  # the 2nd and 3rd question on the document hit the cache
    table = cost_report(db, [result.run_id], DEFAULT_SHEET, (1, 3, 10))
    assert {r["pipeline"] for r in table} == {"long_context", "rag", "self_route"}
    assert all(r["usd_per_query_q3"] > 0 for r in table if r["view"] == "api")
    files = write_report(db, tmp_path / "report", [result.run_id], images=False)
    page = files.html.read_text()
    assert "cost" in page.lower() and f"hf:{models.DEFAULT_MODEL}" in page  # the report says who counted


def test_an_endpoint_that_refuses_max_tokens_gets_max_completion_tokens(
    server_url: str, tmp_path: Path, key_env: None
) -> None:
    spec = _spec(_corpus(tmp_path), "")
    with HostedProxy(server_url, KEY, refuse_max_tokens=True, anthropic_usage=True) as proxy:
        spec["server"] = {**spec["server"], "base_url": proxy.base_url}  # type: ignore[dict-item]
        spec["pipelines"] = [{"kind": "long_context", "max_tokens": 12}]
        result = api.run(spec, tmp_path / "r.duckdb", say=lambda _: None)
        sent = [sorted(k for k in b if "max" in k) for b in proxy.bodies]
    assert result.errors == 0 and result.done == 3
    assert sent[0] == ["max_tokens"] and all(s == ["max_completion_tokens"] for s in sent[1:])
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        got = con.execute("SELECT cached_tokens, cache_write_tokens, prompt_tokens FROM predictions "
                          "ORDER BY seq").fetchall()
    assert all(w is not None and c is not None and c + w == p for c, w, p in got)  # Anthropic's shape read
    assert got[-1][0] > 0


def _toml(spec: dict[str, object]) -> str:
    """The spec as TOML (JSON strings and lists are valid TOML values)."""
    out = [f"metrics = {json.dumps(spec['metrics'])}"]
    for table in ("corpus", "server"):
        out.append(f"[{table}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in spec[table].items()]  # type: ignore[attr-defined]
    for p in spec["pipelines"]:  # type: ignore[attr-defined]
        out.append("[[pipelines]]")
        for k, v in p.items():
            out.append(f"{k} = {json.dumps(v)}" if not isinstance(v, dict) else
                       f"{k} = {{ {', '.join(f'{a} = {json.dumps(b)}' for a, b in v.items())} }}")
    return "\n".join(out) + "\n"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


def test_a_wrong_or_missing_key_is_one_clear_line(server_url: str, tmp_path: Path) -> None:
    with HostedProxy(server_url, KEY) as proxy:
        spec = tmp_path / "spec.toml"
        spec.write_text(_toml(_spec(_corpus(tmp_path), proxy.base_url)))
        env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
        missing = _cli(["run", "--spec", str(spec), "--db", str(tmp_path / "a.duckdb")], env)
        wrong = _cli(["run", "--spec", str(spec), "--db", str(tmp_path / "b.duckdb")],
                     {**env, KEY_ENV: "sk-wrong"})
        chats = proxy.hits["/api/openai/chat/completions"]
    for got, says in ((missing, f"{KEY_ENV} is not set"), (wrong, f"refused the API key in ${KEY_ENV}")):
        assert got.returncode == 2, got.stderr
        assert says in got.stderr and "Traceback" not in got.stderr
        assert "sk-wrong" not in got.stderr + got.stdout
    assert chats == 0  # the key is checked once, before any question is asked
    for name in ("a.duckdb", "b.duckdb"):
        if (tmp_path / name).exists():
            with duckdb.connect(str(tmp_path / name), read_only=True) as con:
                assert con.execute("SELECT count(*) FROM predictions WHERE error IS NULL").fetchone() == (0,)


def test_failover_health_reaches_a_hosted_endpoint_as_the_run_does(
    server_url: str, key_env: None
) -> None:
    """Failover asks each replica whether it still answers: a hosted endpoint (no /health, a key
    required) that is up must read as up, one that is gone as down (the check once used no key
    and vLLM's /health, so a hosted replica always read as down)."""
    import asyncio

    from compare.serving.pool import Access, health_of

    access = Access(api_key_env=KEY_ENV)
    with HostedProxy(server_url, KEY) as proxy:
        up = asyncio.run(health_of([proxy.base_url], access))
        gone = proxy.base_url
    assert up == [True]
    assert asyncio.run(health_of([gone], access)) == [False]
    assert asyncio.run(health_of([server_url], Access())) == [True]  # a plain vLLM as before


def test_a_cache_marker_rides_on_the_document_part_and_keeps_old_run_ids(
    server_url: str, tmp_path: Path, key_env: None
) -> None:
    """`cache_marker` (for providers that cache only marked prefixes): the user turn goes as two
    text parts, the breakpoint on the one that ends with the document; the text is the prompt
    as counted; unmarked specs dump (and so hash) as before the field."""
    from compare.run.spec import validate_spec
    from pipelines.long_context import LongContextSpec
    from pipelines.prompts import build_messages

    spec = _spec(_corpus(tmp_path), "")
    with HostedProxy(server_url, KEY) as proxy:
        spec["server"] = {**spec["server"], "base_url": proxy.base_url}  # type: ignore[dict-item]
        spec["pipelines"] = [{"kind": "long_context", "max_tokens": 12, "cache_marker": "ephemeral-1h"}]
        result = api.run(spec, tmp_path / "m.duckdb", say=lambda _: None)
        sent = [b["messages"][1]["content"] for b in proxy.bodies if b["messages"] != list(PROBE_MESSAGES)]
    assert result.errors == 0 and result.done == 3
    for parts in sent:
        head, tail = parts
        assert head["cache_control"] == {"type": "ephemeral", "ttl": "1h"} and "cache_control" not in tail
        assert head["text"].startswith("Context:\n") and TEXT.strip() in head["text"]
        assert tail["text"].startswith("Question: ")
        question = tail["text"].removeprefix("Question: ").removesuffix("\nAnswer:")
        assert head["text"] + tail["text"] == build_messages(TEXT, question)[1]["content"]
    with duckdb.connect(str(tmp_path / "m.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT params FROM predictions").fetchall()
    params = {json.loads(r[0])["cache_marker"] for r in rows}
    assert params == {"ephemeral-1h"}
    assert "cache_marker" not in LongContextSpec().model_dump(mode="json")
    plain = {**spec, "pipelines": [{"kind": "long_context", "max_tokens": 12}]}
    explicit = {**spec, "pipelines": [{"kind": "long_context", "max_tokens": 12, "cache_marker": "none"}]}
    assert validate_spec(plain).run_id() == validate_spec(explicit).run_id() != validate_spec(spec).run_id()


def test_a_gateway_passing_vllms_models_through_runs_long_context_and_rag(
    server_url: str, tmp_path: Path, key_env: None
) -> None:
    """Issue 27: a gateway (key, `/v1beta/openai` prefix, no /tokenize, /metrics, /health) that
    passes vLLM's own `/models` answer through (`owned_by: "vllm"`). The client once took that
    name for vLLM's extras at the server root and died on `/tokenize: HTTP 404` storing nothing;
    each capability is now asked for once (here, then at the root), and what was found and
    what each number falls back to is recorded with the run."""
    db = tmp_path / "gateway.duckdb"
    spec = _spec(_corpus(tmp_path), "")
    with HostedProxy(server_url, KEY, prefix="/v1beta/openai", verbatim_models=True) as proxy:
        spec["server"] = {**spec["server"], "base_url": proxy.base_url}  # type: ignore[dict-item]
        spec["pipelines"] = spec["pipelines"][:2]  # type: ignore[index]
        said: list[str] = []
        result = api.run(spec, db, say=said.append)
        hits = dict(proxy.hits)
    assert result.done == 6 and result.errors == 0
    for route in ("tokenize", "metrics", "health", "version"):  # asked here and at the root, once each
        assert hits.get(f"/v1beta/openai/{route}") == 1 and hits.get(f"/{route}") == 1, hits
    assert any("no vLLM extras" in s and "no server-side cache hit rate" in s for s in said), said
    with duckdb.connect(str(db), read_only=True) as con:
        server = json.loads(con.execute("SELECT server FROM runs").fetchone()[0])
        rows = con.execute("SELECT pipeline, count(prompt_tokens), count(error) FROM predictions "
                           "GROUP BY 1 ORDER BY 1").fetchall()
    caps = server["capabilities"]
    assert caps["owned_by"] == ["vllm"] and caps["vllm"] is False
    assert not any(caps[r] for r in ("tokenize", "metrics", "health", "version"))
    assert len(caps["not_found"]["tokenize"]) == 2  # the URL given, then the server root
    assert caps["cache_salt"] is True and caps["stream_usage"] is True  # the chat probe, through the gateway
    assert caps["tokenizer"] == f"hf:{models.DEFAULT_MODEL}" and caps["tokenizer_approximate"] is False
    assert caps["sources"]["server_hit_rate"].startswith("none")
    assert caps["sources"]["liveness"] == "/models answering"
    assert rows == [("long_context", 3, 0), ("rag", 3, 0)]


def test_a_hosted_model_without_a_tokenizer_says_the_options_and_approximate_runs_on(
    server_url: str, tmp_path: Path, key_env: None
) -> None:
    """A model whose tokenizer nobody has here: one line naming the options, nothing stored; with
    `tokenizer = "approximate"` the run goes on marked approximate, and the provider's own
    context-length refusal (the window declared too large) is an error row that says so."""
    corpus = _corpus(tmp_path)
    docs = corpus / "documents.jsonl"
    docs.write_text(docs.read_text() + json.dumps({"id": "long", "text": TEXT * 14}) + "\n")
    with (corpus / "questions.jsonl").open("a") as f:
        q9 = {"id": "q9", "doc_ids": ["long"], "question": "What is the code?", "answers": ["7361"]}
        f.write(json.dumps(q9) + "\n")
    spec = _spec(corpus, "")
    spec["pipelines"] = [{"kind": "long_context", "max_tokens": 8}]
    with HostedProxy(server_url, KEY, alias="acme-large") as proxy:
        server = {**spec["server"], "base_url": proxy.base_url, "model": "acme-large",  # type: ignore[dict-item]
                  "max_model_len": 32768}
        with pytest.raises(ValueError, match=r"no local tokenizer for .acme-large.*, or \"approximate\""):
            api.run({**spec, "server": server}, tmp_path / "none.duckdb", say=lambda _: None)
        chats_before = len(proxy.bodies)
        result = api.run({**spec, "server": {**server, "tokenizer": "approximate"}}, tmp_path / "a.duckdb",
                         say=lambda _: None)
    assert chats_before == 1  # the capability probe only: no question was asked without a counter
    with duckdb.connect(str(tmp_path / "none.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM predictions").fetchone() == (0,)
    with duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True) as con:
        caps = json.loads(con.execute("SELECT server FROM runs").fetchone()[0])["capabilities"]
        rows = dict(con.execute("SELECT example_id, error FROM predictions").fetchall())
        attempts = con.execute("SELECT attempts FROM predictions WHERE example_id = 'q9'").fetchone()
    assert caps["tokenizer"].startswith("approximate:") and caps["tokenizer_approximate"] is True
    assert "(approximate)" in caps["sources"]["budgets_and_windows"]
    assert result.done == 4 and result.errors == 1 and rows["q1"] is None
    assert rows["q9"].startswith("context_overflow: the endpoint refused the prompt")
    assert "approximate" in rows["q9"]
    assert attempts == (1,)  # a prompt over the window is not retried

"""The prefill probe, the duration estimate and the heartbeat lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from compare.core.protocols import Plan, Role, plan_of
from compare.core.types import Example
from compare.run.heartbeat import InFlight, heartbeat
from compare.serving import weights as models
from compare.serving.client import HttpBackend
from compare.serving.probe import (
    ModelDims,
    ProbeResult,
    estimate_s,
    model_dims,
    planned_requests,
    probe,
    probe_prompt,
)
from pipelines.long_context import LongContextSpec
from pipelines.rag_spec import RagSpec


def test_model_dims_of_the_default_model_by_hand(model_path: Path) -> None:
    dims = model_dims(model_path)
    # Qwen2.5 0.5B: hidden 896, 14 heads of 64, 2 KV heads (128 wide), MLP 4864, 24 layers.
    # per layer: q 896*896 + k,v 2*896*128 + o 896*896 + MLP 3*896*4864 = 14,909,440
    assert dims == ModelDims(params=24 * 14_909_440, layers=24, attn_width=896)


def test_model_dims_unknown_without_a_config(tmp_path: Path) -> None:
    assert model_dims(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    assert model_dims(tmp_path) is None


def test_prefill_flops_count_attention_and_skip_cached_tokens() -> None:
    dims = ModelDims(params=1000, layers=2, attn_width=10)
    # 100 tokens cold: 2*1000*100 + 2*2*10*(100^2) = 200,000 + 400,000
    assert dims.prefill_flops(100) == 600_000
    # 100 tokens with 60 cached: 2*1000*40 + 2*2*10*(100^2 - 60^2) = 80,000 + 256,000
    assert dims.prefill_flops(100, cached=60) == 336_000


def _ex(i: int, doc: str, tokens: int) -> Example:
    return Example(id=f"q{i}", doc_ids=(doc,), question="?", answers=("a",),
                   tags={"doc_tokens": float(tokens)})


def test_planned_requests_pay_a_document_once_and_rag_its_chunks() -> None:
    # each pipeline declares its plan (compare.core.protocols.Plan); the estimate reads no knob names
    lc = LongContextSpec(max_tokens=32).plan()
    rag = RagSpec(top_k=4, chunk_size=200, max_tokens=16).plan()
    plug = Plan(300, 8)  # a plug-in retriever that declares its own plan
    route = Plan(200, 4, fallback=True)  # a router: its retrieval step plus the fallback
    items: list[tuple[Example, Plan, Role]] = [
             (_ex(0, "d1", 1000), lc, "long_context"), (_ex(1, "d1", 1000), lc, "long_context"),
             (_ex(0, "d1", 1000), rag, "retrieval"), (_ex(2, "d2", 500), lc, "long_context"),
             (_ex(3, "d3", 700), plug, "retrieval"), (_ex(4, "d3", 700), route, "router")]
    got = planned_requests(items, overhead_tokens=50)
    assert [(r.prompt_tokens, r.cached_tokens, r.max_tokens) for r in got] == [
        (1050, 0, 32), (1050, 1000, 32), (850, 0, 16), (550, 0, 32), (350, 0, 8), (250, 0, 4),
        (750, 0, 4),
    ]


def test_a_plug_in_without_a_plan_is_estimated_by_its_role() -> None:
    class Plugin:
        name, role = "mine", "retrieval"

    assert plan_of(Plugin()) == Plan(800, 32)  # type: ignore[arg-type]


def test_estimate_uses_flops_when_the_shape_is_known() -> None:
    dims = ModelDims(params=1000, layers=2, attn_width=10)
    probe_result = ProbeResult(prompt_tokens=100, cached_tokens=0, ttft_s=1.0, tpot_s=0.5,
                               tokens_per_s=100.0, flops_per_s=600_000.0)
    reqs = planned_requests([(_ex(0, "d", 200), Plan(None, 2), "long_context")],
                            overhead_tokens=0)
    # 200 tokens: 2*1000*200 + 2*2*10*200^2 = 2,000,000 FLOPs / 600,000 = 3.333 s, + 2 x 0.5 s decode
    assert estimate_s(reqs, probe_result, dims) == pytest.approx(2_000_000 / 600_000 + 1.0)
    # without the shape: linear in tokens at the probe's rate, 200 / 100 + 1.0
    assert estimate_s(reqs, probe_result, None) == pytest.approx(3.0)


def test_probe_prompts_never_share_a_prefix() -> None:
    a, b = probe_prompt(), probe_prompt()
    assert a[:40] != b[:40]
    assert probe_prompt("x") == probe_prompt("x")


@pytest.mark.slow
async def test_probe_measures_a_cold_prefill_on_the_real_server(
    backend: HttpBackend, model_path: Path
) -> None:
    got = await probe(backend, model_dims(model_path))
    assert got.prompt_tokens > 300 and got.cached_tokens == 0
    assert got.ttft_s > 0 and got.tokens_per_s > 0
    assert got.flops_per_s is not None and got.flops_per_s > 0
    assert got.tpot_s is not None and got.tpot_s > 0  # it counts: 8 output tokens
    assert models.DEFAULT_MODEL in backend.model


def test_heartbeat_lines_name_the_request_and_its_state() -> None:
    now = [0.0]
    flights = InFlight(total=18, clock=lambda: now[0])
    flights.start(0, "long_context needle-8000-050")
    flights.start(1, "rag needle-8000-050")
    now[0] = 12.0
    flights.first_token(1)
    now[0] = 60.0
    assert flights.lines(30.0) == [
        "[1/18] long_context needle-8000-050: 60 s, no first token yet",
        "[2/18] rag needle-8000-050: 60 s, first token after 12 s, decoding",
    ]
    flights.end(0)
    flights.start(2, "young")
    now[0] = 70.0
    assert [line.split(":")[0] for line in flights.lines(30.0)] == ["[2/18] rag needle-8000-050"]


async def test_heartbeat_says_lines_while_the_body_runs_and_stops_after() -> None:
    flights = InFlight(total=1)
    flights.start(0, "long_context d1")
    said: list[str] = []
    async with heartbeat(flights, said.append, interval_s=0.05):
        await asyncio.sleep(0.2)
    n = len(said)
    assert n >= 2 and all(s.startswith("[1/1] long_context d1: ") for s in said)
    await asyncio.sleep(0.1)
    assert len(said) == n  # cancelled with the body


@pytest.mark.slow
async def test_a_run_prints_its_estimate_first_and_heartbeats_in_logs(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compare.run import execute as app
    from compare.run.spec import validate_spec
    from compare.store.db import Store

    monkeypatch.setattr(app, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(app.sys.stderr, "isatty", lambda: False)  # as in a CI log
    spec = validate_spec({"corpus": {"kind": "needle", "lengths": [1500], "depths": [0.5], "seed": 5},
                          "pipelines": [{"kind": "long_context"}]})
    said: list[str] = []
    with Store(tmp_path / "r.duckdb") as store:
        res = await app.execute_async(spec, store, server_url, {"managed": False}, say=said.append)
        server = store.con.execute("SELECT server FROM runs WHERE run_id = ?", [res.run_id]).fetchone()
    assert res.done == 1 and res.errors == 0
    probe_at = next(i for i, s in enumerate(said) if s.startswith("prefill probe: "))
    estimate_at = next(i for i, s in enumerate(said) if s.startswith("estimate: 1 requests"))
    beats = [i for i, s in enumerate(said) if s.startswith("[1/1] long_context needle-")]
    assert probe_at < estimate_at < beats[0]  # the estimate comes before any wait
    recorded = json.loads(server[0])
    assert recorded["probe"]["prompt_tokens"] > 300
    assert {"ragvslc", "torch", "transformers", "sentence-transformers", "faiss-cpu",
            "llama-index-core"} <= recorded["packages"].keys()


@pytest.mark.parametrize("probe_chat, probes, warmed_by", [
    (True, 1, "the discovery chat"),  # the chat paid the fresh server's set-up: no warm-up probe
    (False, 2, "a warm-up probe"),  # no chat: a warm-up probe first, as before
])
async def test_the_discovery_chat_stands_in_for_the_warm_up_probe(
    tmp_path: Path, probe_chat: bool, probes: int, warmed_by: str
) -> None:
    from compare.run.execute import execute_async
    from compare.run.spec import validate_spec
    from compare.store.db import Store
    from tests.fixtures.sse_server import DONE, VllmRoutes, serve, sse_chunk, sse_usage

    seen: list[str] = []

    class Engine(VllmRoutes):
        model = "scripted"
        window = 32768

        def chat(self, body: dict[str, Any]) -> None:
            seen.append(str(body["messages"][0]["content"])[:6])
            usage = sse_usage(self.tokens(body), 0, 3)
            self.stream((sse_chunk("1, 2"), sse_chunk(", 3", "stop"), usage, DONE))

    doc = {"id": "d1", "text": "The capital is Paris."}
    (tmp_path / "documents.jsonl").write_text(json.dumps(doc) + "\n")
    (tmp_path / "questions.jsonl").write_text(json.dumps(
        {"id": "q1", "doc_ids": ["d1"], "question": "What is the capital?", "answers": ["Paris"]}) + "\n")
    spec = validate_spec({"corpus": {"kind": "jsonl", "path": str(tmp_path)}, "retries": 0,
                          "pipelines": [{"kind": "long_context"}],
                          "server": {"model": "scripted", "probe_chat": probe_chat}})
    with serve(Engine) as url, Store(tmp_path / "r.duckdb") as store:
        res = await execute_async(spec, store, f"{url}/v1", {"managed": False})
        server = store.con.execute("SELECT server FROM runs WHERE run_id = ?", [res.run_id]).fetchone()
    assert res.done == 1 and server is not None
    assert sum(s.startswith("Probe ") for s in seen) == probes
    assert json.loads(server[0])["probe"]["warmed_by"] == warmed_by

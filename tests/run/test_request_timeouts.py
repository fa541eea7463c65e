"""Each request's timeout from the prefill probe when the spec leaves timeout_s at its default
(issue 25: a cold 16k prefill on a loaded CPU outlasted the fixed 900 s and became a failed row).

A scripted slow server below the client (no real engine can be told to prefill at a fixed rate):
it counts a token per word and takes RATE tokens per second before its first byte, so the probe
measures RATE and a long prompt takes the time the estimate says. The default is lowered to 1 s
in these tests (the real 900 s would take a quarter of an hour to show)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from compare.core.types import Corpus, Document, Example
from compare.run.execute import execute_async
from compare.run.limits import TimeoutRule, bytes_per_token
from compare.run.spec import RunSpec, validate_spec
from compare.serving.probe import ProbeResult
from compare.store.db import Store
from tests.fixtures.sse_server import DONE, VllmRoutes, serve, sse_chunk, sse_usage

RATE = 2000.0  # prompt tokens per second of the scripted engine
DOC_WORDS = 5000  # 2.5 s of prefill: longer than the 1 s default, well inside 3x the estimate


def _words(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"]) + 5
    return len(str(body.get("prompt", "")).split())


class SlowEngine(VllmRoutes):
    """vLLM's routes as far as a run needs them; prefill at RATE tokens/s before the first byte."""

    model = "scripted"
    window = 32768

    def tokens(self, body: dict[str, Any]) -> int:
        return _words(body)

    def chat(self, body: dict[str, Any]) -> None:
        prompt = _words(body)
        time.sleep(prompt / RATE)  # the prefill: nothing is sent until it is done
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            self.stream((sse_chunk("Paris"), sse_chunk(" it is", "stop"), sse_usage(prompt, 0, 2), DONE))


def _corpus(tmp: Path) -> Path:
    words = " ".join(["lorem"] * (DOC_WORDS // 2) + ["The capital is Paris."] + ["ipsum"] * (DOC_WORDS // 2))
    (tmp / "documents.jsonl").write_text(json.dumps({"id": "d1", "text": words}) + "\n")
    (tmp / "questions.jsonl").write_text(json.dumps(
        {"id": "q1", "doc_ids": ["d1"], "question": "What is the capital?", "answers": ["Paris"]}) + "\n")
    return tmp


def _spec(corpus: Path, **over: object) -> RunSpec:
    return validate_spec({"corpus": {"kind": "jsonl", "path": str(corpus)},
                          "pipelines": [{"kind": "long_context"}], "server": {"model": "scripted"},
                          "retries": 0, **over})


def _as_default(spec: RunSpec, seconds: float) -> RunSpec:
    """The spec as if timeout_s's default were `seconds` (left unset, so the rule applies)."""
    lowered = spec.model_copy(update={"timeout_s": seconds})
    lowered.model_fields_set.discard("timeout_s")
    return lowered


async def _run(spec: RunSpec, db: Path, url: str) -> tuple[list[tuple[Any, ...]], dict[str, Any], list[str]]:
    said: list[str] = []
    with Store(db) as store:
        res = await execute_async(spec, store, url, {"managed": False}, say=said.append)
        rows = store.con.execute("SELECT error, answer FROM predictions WHERE run_id = ?",
                                 [res.run_id]).fetchall()
        server = store.con.execute("SELECT server FROM runs WHERE run_id = ?", [res.run_id]).fetchone()
    assert server is not None
    return rows, json.loads(server[0]), said


async def test_a_default_timeout_waits_for_a_slow_cold_prefill(tmp_path: Path) -> None:
    """Before: the 1 s default cut the 2.5 s prefill into a Timeout row. Now each request gets
    max(default, 3 x its estimated prefill + decode), recorded with the run and said once."""
    with serve(SlowEngine) as url:
        rows, server, said = await _run(_as_default(_spec(_corpus(tmp_path)), 1.0), tmp_path / "r.duckdb",
                                        f"{url}/v1")
    assert rows == [(None, "Paris it is")]
    rule = server["request_timeout"]
    assert rule["default_s"] == 1.0 and rule["factor"] == 3.0
    # ~5,000 tokens at the probe's ~2,000 tokens/s: 3 x ~2.5 s, whatever the machine adds
    assert 5.0 < rule["longest_document_timeout_s"] < 30.0
    assert sum(s.startswith("request timeout: the larger of 1 s and 3x") for s in said) == 1


async def test_an_explicit_timeout_is_obeyed_as_given(tmp_path: Path) -> None:
    with serve(SlowEngine) as url:
        rows, server, said = await _run(_spec(_corpus(tmp_path), timeout_s=1.0), tmp_path / "r.duckdb",
                                        f"{url}/v1")
    assert len(rows) == 1 and "Timeout" in str(rows[0][0])
    # The row says the limit it was held to (per request when the rule sets it): here the spec's.
    assert "within this request's timeout of 1.0 s (the run's fixed timeout_s)" in str(rows[0][0])
    assert server["request_timeout"] == {"rule": "fixed", "timeout_s": 1.0, "why": "set in the spec"}
    assert not any(s.startswith("request timeout") for s in said)


def test_the_rule_scales_with_the_prompt_and_never_goes_below_the_default() -> None:
    probe = ProbeResult(prompt_tokens=400, cached_tokens=0, ttft_s=0.4, tpot_s=0.01, tokens_per_s=1000.0,
                        flops_per_s=None)
    rule = TimeoutRule(floor_s=900.0, probe=probe, dims=None, bytes_per_token=4.0, in_flight=2)
    # 40,000 bytes / 4 = 10,000 tokens + 60 overhead: 10.06 s prefill + 128 x 0.01 decode, x 3 x 2
    assert rule.seconds(rule.prompt_tokens([{"role": "user", "content": "abcd" * 10_000}]), 128) == \
        pytest.approx(900.0)  # 68 s: the default still wins
    slow = TimeoutRule(floor_s=900.0, probe=ProbeResult(400, 0, 40.0, 0.01, 10.0, None), dims=None,
                       bytes_per_token=4.0)
    assert slow.seconds(16_000, 128) == pytest.approx(3 * (16_000 / 10.0 + 1.28))


def test_bytes_per_token_come_from_the_documents_own_counts() -> None:
    docs = {"a": Document("a", "x" * 400), "b": Document("b", "y" * 200)}
    exs = [Example(id="1", doc_ids=("a",), question="?", answers=("z",), tags={"doc_tokens": 100.0}),
           Example(id="2", doc_ids=("b",), question="?", answers=("z",), tags={"doc_tokens": 50.0})]
    assert bytes_per_token(Corpus("c", docs, exs)) == pytest.approx(4.0)
    assert bytes_per_token(Corpus("c", docs, [])) == 1.0  # unmeasured: one token per byte, the long side


def test_spec_default_is_still_900_s_and_unset() -> None:
    spec = validate_spec({})
    assert spec.timeout_s == 900.0 and "timeout_s" not in spec.model_fields_set


def test_the_free_text_benchmark_leaves_the_timeout_to_the_rule(tmp_path: Path) -> None:
    """benchmarks/free_text.py: no --timeout-s means the spec leaves timeout_s unset (the rule
    applies); a given one is written and obeyed."""
    import tomllib

    from benchmarks.free_text import spec_toml

    auto = validate_spec(tomllib.loads(spec_toml(tmp_path, ("long_context",), cache_isolation="shared")))
    assert "timeout_s" not in auto.model_fields_set and auto.cache_isolation == "shared"
    fixed = validate_spec(tomllib.loads(spec_toml(tmp_path, ("long_context",), timeout_s=3600.0)))
    assert fixed.timeout_s == 3600.0 and "timeout_s" in fixed.model_fields_set
